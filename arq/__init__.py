"""arq: Attentive Reasoning Queries.

A reasoning process is a Pydantic model whose fields, in order, are the steps a language
model must think through. arq renders it into a prompt, parses the model's JSON as it
streams and checks every step as soon as it is complete.
"""

from arq.checks import (
    ContextError,
    CrossCheck,
    Grounding,
    check,
    covers,
    date_in,
    one_of,
    verbatim_in,
)
from arq.errors import (
    ArqError,
    BackendError,
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
from arq.events import Done, Event, RepairStarted, Retrying, StepAccepted, StepFailed
from arq.executor import Executor
from arq.jsonschema import Finding, json_schema, lint
from arq.parsing import ObjectCompleted, StepCompleted, StepParser, StepStarted, parse_tolerant
from arq.prompt import Message, PromptBuilder, Request, Section
from arq.retry import RetryPolicy
from arq.schema import (
    Reasoning,
    Step,
    answer,
    checklist,
    cot,
    cross_checks,
    direct,
    query,
    steps,
)
from arq.trace import Attempt, Result, StepRecord, Trace, Usage
from arq.validation import StepChecker, validate_output

__version__ = "0.1.0"

__all__ = [
    "ArqError",
    "Attempt",
    "BackendError",
    "ContextError",
    "ConvergenceError",
    "CrossCheck",
    "DeadlineExceededError",
    "Done",
    "Event",
    "Executor",
    "Finding",
    "Grounding",
    "Message",
    "ObjectCompleted",
    "OutputError",
    "OutputParseError",
    "PromptBuilder",
    "Reasoning",
    "RefusalError",
    "RepairStarted",
    "Request",
    "Result",
    "RetryPolicy",
    "Retrying",
    "SchemaError",
    "Section",
    "Step",
    "StepAccepted",
    "StepChecker",
    "StepCompleted",
    "StepError",
    "StepFailed",
    "StepParser",
    "StepRecord",
    "StepStarted",
    "TemplateError",
    "Trace",
    "TruncatedOutputError",
    "Usage",
    "answer",
    "check",
    "checklist",
    "cot",
    "covers",
    "cross_checks",
    "date_in",
    "direct",
    "json_schema",
    "lint",
    "one_of",
    "parse_tolerant",
    "query",
    "steps",
    "validate_output",
    "verbatim_in",
]
