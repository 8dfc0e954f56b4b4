"""Incremental JSON step parser: checks a model's JSON output step by step while it streams.

The output must be one JSON object whose keys are the declared steps, in declared order
(a step may be skipped). `StepParser` validates the syntax as chunks arrive, so a broken
output is rejected at the exact character that broke it, and reports each step as soon as
its value is complete. Work is linear in the output size whatever the chunk sizes: runs
(string bodies, digits, whitespace) are skipped with compiled regexes, and only the text of
the step being read is joined, once, when it ends.
"""

from arq.parsing.events import ObjectCompleted, ParseEvent, StepCompleted, StepStarted
from arq.parsing.parser import StepParser
from arq.parsing.tolerant import parse_tolerant

__all__ = [
    "ObjectCompleted",
    "ParseEvent",
    "StepCompleted",
    "StepParser",
    "StepStarted",
    "parse_tolerant",
]
