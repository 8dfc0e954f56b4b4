"""One exception tree, split by who is at fault.

```
ArqError
├── SchemaError            the reasoning schema is defined wrongly (developer)
├── TemplateError          a prompt template is wrong or misses a variable (developer)
├── ContextError           a check needs a context value the run was not given (developer)
├── InvalidArgumentError   a value arq cannot use: out of range, malformed, of the wrong type
│                          (developer; also a ValueError and a TypeError)
├── StateError             a call the object's state rules out: closed, not started (developer)
├── AssertionFailed        an arq.testing assertion failed (the test's expectation)
│   └── CassetteMismatch   a replayed run differs from its recording
├── UsageError             bad input to the `arq` command (user)
├── DatasetError           an evaluation dataset item is malformed (user; also a ValueError)
├── ModelNotFoundError     no GGUF model file for the local backend (also a FileNotFoundError)
├── BatchError             a batch folder or results file that does not fit the job (user)
├── BackendError           the model service failed (status, retryable, retry_after, ...)
├── DeadlineExceededError  the run's deadline passed (retries and repairs included)
├── InternalError          an unexpected exception in arq or a backend (a bug: please report)
└── OutputError            the model's output cannot be accepted
    ├── OutputParseError   not JSON, or keys in the wrong order, duplicated or unknown
    ├── TruncatedOutputError   the output ended before the object was complete
    ├── RefusalError       the model refused, or the provider filtered the content
    ├── StepError          a step's value failed its checks
    └── ConvergenceError   repairs did not converge; carries the trace and accepted steps
```

Every message says what went wrong and what to do next. Exceptions carry structured
attributes so callers never parse messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from arq.trace import Trace

__all__ = [
    "ArqError",
    "AssertionFailed",
    "BackendError",
    "BatchError",
    "CassetteMismatch",
    "ContextError",
    "ConvergenceError",
    "DatasetError",
    "DeadlineExceededError",
    "InternalError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "NO_VALUE",
    "RefusalError",
    "OutputError",
    "OutputParseError",
    "ParseProblem",
    "SchemaError",
    "StateError",
    "StepError",
    "TemplateError",
    "TruncatedOutputError",
    "UsageError",
    "value_key",
]


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final[Any] = _NoValue()
"""`StepError.value` when the failing step has no value (missing, or cut at its budget)."""


def value_key(value: Any) -> str | None:
    """A value as JSON (a scalar the way a model writes it); None for `NO_VALUE`."""
    if value is NO_VALUE:
        return None
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class ArqError(Exception):
    """Base class of every error arq raises."""


class SchemaError(ArqError):
    """A reasoning schema is defined wrongly; `field` names the offending field, if any."""

    def __init__(self, message: str, *, schema: str | None = None, field: str | None = None):
        super().__init__(message)
        self.schema = schema
        self.field = field


class ContextError(ArqError):
    """A check needs a context value that the run was not given; `missing` maps each key
    the context lacks to the steps whose checks read it (empty when a check found it
    missing while it ran)."""

    def __init__(self, message: str, *, missing: Mapping[str, Sequence[str]] | None = None):
        super().__init__(message)
        self.missing = {key: tuple(names) for key, names in (missing or {}).items()}


class UsageError(ArqError):
    """Bad input on the command line: the message says what is wrong and what to do."""


class DatasetError(ArqError, ValueError):
    """A dataset item is malformed; the message names the file and line, or the index."""


class ModelNotFoundError(ArqError, FileNotFoundError):
    """No GGUF model file: the path given (or in `ARQ_MODEL`) is missing, or none is set
    and the default model package is not installed."""


class BatchError(ArqError):
    """A batch folder or an engine's results file that does not fit the job: results of
    another round or another job (schema, settings), a folder prepared for something else,
    a step its manifest's state rules out. `path` names the file, when there is one."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class InvalidArgumentError(ArqError, ValueError, TypeError):
    """An arq function or class was given a value it cannot use: out of range, malformed, or
    of the wrong type. It is also a `ValueError` and a `TypeError`, as Python's own argument
    checks are, so code written against those keeps working."""


class StateError(ArqError, RuntimeError):
    """A call that the object's state rules out: a closed backend, a test server that is not
    running, a blocking run from inside the executor's own event loop."""


class AssertionFailed(ArqError, AssertionError):
    """An `arq.testing` assertion failed: the test's expectation does not hold. It is an
    `AssertionError`, so pytest reports it as a failed assertion."""


class CassetteMismatch(AssertionFailed):
    """The run does not match its recording: re-record it if the change is intended."""


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
"""The rule an `OutputParseError` reports as broken (its `problem`)."""


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

    Usually the token limit was reached before any step was accepted, or again inside a
    step already continued (an answer cut after accepted steps is continued from the cut
    step instead, on the repair budget). Raise `max_tokens`, or bound long steps with
    `max_length` / a per-step `max_chunks`. `partial` holds the text received.
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
    `value` is the rejected value of `step` as the model wrote it (`NO_VALUE` when there
    is none: the step is missing or was cut at its token budget, or a model-level
    validator, which reads the whole object, failed). `written` is that value's JSON text
    exactly as the model wrote it ("9.0e0" for 9.0), when `step` was refused as it
    completed in a stream; None otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str,
        errors: Sequence[dict[str, Any]],
        feedback: str,
        check: str | None = None,
        value: Any = NO_VALUE,
        written: str | None = None,
    ):
        super().__init__(message)
        self.step = step
        self.errors = list(errors)
        self.feedback = feedback
        self.check = check
        self.value = value
        self.written = written

    def signature(self) -> tuple[Any, ...]:
        """Identity of the failure, whatever the wording: step, error types and locations,
        and the rejected value (as canonical JSON; None when there is no value)."""
        kinds = tuple((str(e.get("type", "")), tuple(e.get("loc", ()))) for e in self.errors)
        return self.step, kinds, value_key(self.value)


class BackendError(ArqError):
    """The model service failed.

    `retryable` says whether the same request may succeed later (timeouts, dropped
    connections, 408/409/429/5xx); `status` is the HTTP status, if any; `retry_after` is
    the wait in seconds the service asked for, if it did; `request_id` is the service's
    id of the failed request (its `x-request-id` header), to quote to its support.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id


class DeadlineExceededError(ArqError):
    """The run's deadline passed before a valid result; raise `deadline` or simplify."""


class InternalError(ArqError):
    """An exception that is not an `ArqError` ended a run: a bug in arq or in a backend.

    `Executor.map` and `amap` report it as that item's outcome, so the other items keep
    their results. `kind` is the original exception's type name; the message holds it and
    its text, with secrets masked. Please report it with the message.
    """

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind


class RefusalError(OutputError):
    """The model refused to answer, or the provider filtered the content; not retried."""

    def __init__(self, message: str, *, refusal: str | None = None, finish_reason: str = ""):
        super().__init__(message)
        self.refusal = refusal
        self.finish_reason = finish_reason


class ConvergenceError(OutputError):
    """Repairs did not lead to a valid output.

    Raised when the model comes back to a failure it already had in the run (the same
    step, error types and value), or when the repair budget runs out. `last_error` is the
    final failure, `accepted` the steps that passed (never a whole object that failed), and
    `trace` every attempt.
    """

    def __init__(
        self,
        message: str,
        *,
        last_error: OutputError,
        accepted: dict[str, Any],
        trace: Trace,
    ):
        super().__init__(message)
        self.last_error = last_error
        self.accepted = accepted
        self.trace = trace
