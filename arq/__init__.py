"""arq: Attentive Reasoning Queries.

A reasoning process is a Pydantic model whose fields, in order, are the steps a language
model must think through. arq renders it into a prompt, parses the model's JSON as it
streams and checks every step as soon as it is complete.

This module exports what ordinary code writes; everything else (run events, trace records,
parser events, prompt messages and sections) is importable from its own module:
`arq.events`, `arq.trace`, `arq.parsing`, `arq.prompt`, `arq.jsonschema`.
"""

from arq.checks import check, covers, date_in, one_of, verbatim_in
from arq.errors import (
    ArqError,
    BackendError,
    ContextError,
    ConvergenceError,
    DeadlineExceededError,
    OutputError,
    OutputParseError,
    RefusalError,
    SchemaError,
    StepError,
    TemplateError,
    TruncatedOutputError,
)
from arq.executor import Executor
from arq.jsonschema import json_schema, lint
from arq.outcome import Unconverged
from arq.parsing import StepParser
from arq.prompt import PromptBuilder
from arq.retry import RetryPolicy
from arq.schema import Reasoning, answer, checklist, cot, direct, query, steps
from arq.trace import Result
from arq.validation import StepChecker, validate_output

__version__ = "0.1.0"

__all__ = [
    "ArqError",
    "BackendError",
    "ContextError",
    "ConvergenceError",
    "DeadlineExceededError",
    "Executor",
    "OutputError",
    "OutputParseError",
    "PromptBuilder",
    "Reasoning",
    "RefusalError",
    "Result",
    "RetryPolicy",
    "SchemaError",
    "StepChecker",
    "StepError",
    "StepParser",
    "TemplateError",
    "TruncatedOutputError",
    "Unconverged",
    "answer",
    "check",
    "checklist",
    "cot",
    "covers",
    "date_in",
    "direct",
    "json_schema",
    "lint",
    "one_of",
    "query",
    "steps",
    "validate_output",
    "verbatim_in",
]
