"""One exception tree, split by who is at fault.

```
ArqError
├── SchemaError            the reasoning schema is defined wrongly (developer)
├── TemplateError          a prompt template is wrong or misses a variable (developer)
└── OutputError            the model's output cannot be accepted
    ├── OutputParseError   not JSON, or keys in the wrong order, duplicated or unknown
    ├── TruncatedOutputError   the output ended before the object was complete
    └── StepError          a step's value failed its checks
```

Every message says what went wrong and what to do next. Exceptions carry structured
attributes so callers never parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "ArqError",
    "OutputError",
    "OutputParseError",
    "ParseProblem",
    "SchemaError",
    "StepError",
    "TemplateError",
    "TruncatedOutputError",
]


class ArqError(Exception):
    """Base class of every error arq raises."""


class SchemaError(ArqError):
    """A reasoning schema is defined wrongly; `field` names the offending field, if any."""

    def __init__(self, message: str, *, schema: str | None = None, field: str | None = None):
        super().__init__(message)
        self.schema = schema
        self.field = field


class TemplateError(ArqError):
    """A prompt template failed to load or render (syntax error, missing variable)."""

    def __init__(self, message: str, *, template: str | None = None):
        super().__init__(message)
        self.template = template


class OutputError(ArqError):
    """The model's output cannot be accepted."""


ParseProblem = Literal[
    "invalid_json",
    "out_of_order",
    "duplicate_key",
    "unknown_key",
    "too_deep",
    "not_an_object",
]


class OutputParseError(OutputError):
    """The output is not a JSON object with the schema's steps in order.

    `problem` says which rule broke, `position` is the character offset in the whole
    output where it was detected, and `step` names the key involved, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        problem: ParseProblem,
        position: int,
        step: str | None = None,
    ):
        super().__init__(message)
        self.problem: ParseProblem = problem
        self.position = position
        self.step = step


class TruncatedOutputError(OutputError):
    """The output ended before the JSON object was complete.

    Usually the token limit was reached: raise `max_tokens`, or bound long steps with
    `max_length` / a per-step `max_tokens`. `partial` holds the text received.
    """

    def __init__(self, message: str, *, partial: str = "", position: int = 0):
        super().__init__(message)
        self.partial = partial
        self.position = position


class StepError(OutputError):
    """A step's value failed validation.

    `step` is the step to repair, `errors` are Pydantic-style error dicts (`type`, `loc`,
    `msg`), `feedback` is a short text written for the model, naming the step's question
    and instruction, and `check` names the cross-step check that failed, if one did.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        errors: Sequence[dict[str, Any]],
        feedback: str,
        check: str | None = None,
    ):
        super().__init__(message)
        self.step = step
        self.errors = list(errors)
        self.feedback = feedback
        self.check = check

    def signature(self) -> tuple[str, tuple[tuple[str, tuple[str | int, ...]], ...]]:
        """Identity of the failure, whatever the wording: step, error types and locations."""
        return self.step, tuple(
            (str(e.get("type", "")), tuple(e.get("loc", ()))) for e in self.errors
        )
