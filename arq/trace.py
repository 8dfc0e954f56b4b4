"""What a run leaves behind: the validated output, every model call, and the tokens spent.

A `Trace` records each call to the model as an `Attempt` (its request, the raw text
received, the steps checked with their timings, the error that ended it) so a run can be
explained afterwards and written to JSONL. Secrets never reach a trace: `redact` masks API
keys and Authorization values in every text that is written out; `redact_headers` applies
the same rule to HTTP headers, masking credential headers whole.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from arq.files import write_file
from arq.prompt import Request
from arq.schema import Reasoning

__all__ = [
    "Attempt",
    "AttemptKind",
    "Result",
    "StepRecord",
    "Trace",
    "Usage",
    "estimate_tokens",
    "redact",
    "redact_all",
    "redact_headers",
]

SchemaT = TypeVar("SchemaT", bound=Reasoning)

AttemptKind = Literal["first", "repair", "retry"]
"""Why a call was made: the first call, a repair after an output error, or a retry after a
transport error (which resumes after the steps already accepted)."""

_SECRETS = re.compile(
    r"(?i)(?P<key>sk-[A-Za-z0-9_\-]{6,})"  # OpenAI-style keys
    r"|(?P<lead>bearer\s+|api[_-]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-.=:+/]{6,}"
)


# Headers whose whole value is a credential, whatever it looks like: these names, and any
# name ending in one of the suffixes (x-goog-api-key, anthropic-api-key, x-auth-token, ...).
_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "set-cookie",
        "ocp-apim-subscription-key",
    }
)
_CREDENTIAL_SUFFIXES = ("api-key", "apikey", "-token", "-secret")


def redact(text: str) -> str:
    """`text` with API keys and bearer tokens replaced by `***`."""
    return _SECRETS.sub(lambda m: (m.group("lead") or "") + "***", text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` with a credential header's value replaced by `[REDACTED]` (an Authorization
    scheme kept: "Bearer [REDACTED]") and every other value passed through `redact`."""
    clean = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _CREDENTIAL_HEADERS or lower.endswith(_CREDENTIAL_SUFFIXES):
            scheme, space, _ = value.partition(" ")
            keep = space and lower.endswith("authorization")
            clean[name] = f"{scheme} [REDACTED]" if keep else "[REDACTED]"
        else:
            clean[name] = redact(value)
    return clean


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent: what a backend reports on a `Chunk`, what the fake server is told to
    report, and what a call and a run add up to.

    `estimated` is true when some count was not reported by the service: a stream that
    arq closed early reports no usage, so its output tokens are the content chunks
    received (servers send about one token per chunk) and its prompt tokens are
    `estimate_tokens` of the prompt's characters.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
        )


def estimate_tokens(text_or_chars: str | int, *, round_up: bool = False) -> int:
    """About one token per four characters of a text (or of a count of characters),
    rounded down, or up with `round_up`, for counts no tokenizer has made."""
    chars = text_or_chars if isinstance(text_or_chars, int) else len(text_or_chars)
    return -(-chars // 4) if round_up else chars // 4


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step as the stream delivered it.

    Attributes:
        name: The step.
        value: Its raw JSON value.
        elapsed: Seconds from the start of the call until the step was complete.
        error: Why it was rejected, or None when it was accepted.
    """

    name: str
    value: Any
    elapsed: float
    error: str | None = None


@dataclass(slots=True)
class Attempt:
    """One call to the model.

    Attributes:
        number: 1 for the first call, then 2, 3, ...
        kind: Why the call was made.
        request: What was sent.
        text: The raw text received (all of it, up to where reading stopped).
        steps: The steps checked during this call, in order.
        finish_reason: The service's finish reason, if the stream got that far.
        usage: Tokens of this call.
        error: The failure that ended the call, as "ErrorType: message", if any.
        stopped_early: arq closed the stream before its end: a step failed, or text came
            after the complete object before the finish reason.
        elapsed: Seconds the call took.
    """

    number: int
    kind: AttemptKind
    request: Request
    text: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    stopped_early: bool = False
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record, secrets redacted."""
        record = {
            "number": self.number,
            "kind": self.kind,
            "request": self.request.to_dict(),
            "text": self.text,
            "steps": [
                {"name": s.name, "value": s.value, "elapsed": round(s.elapsed, 6), "error": s.error}
                for s in self.steps
            ],
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "estimated": self.usage.estimated,
            },
            "error": self.error,
            "stopped_early": self.stopped_early,
            "elapsed": round(self.elapsed, 6),
        }
        redacted: dict[str, Any] = redact_all(record)
        return redacted


@dataclass(slots=True)
class Trace:
    """Every call of one run, in order."""

    schema: str
    model: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        """Tokens summed over every call."""
        total = Usage()
        for attempt in self.attempts:
            total = total + attempt.usage
        return total

    @property
    def repairs(self) -> int:
        """Calls made to repair an output error."""
        return sum(1 for a in self.attempts if a.kind == "repair")

    def to_jsonl(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        """Write one JSON line per call (with the schema and model names), secrets redacted.

        The file is written whole or not at all (`arq.files.write_file`). Every line is
        JSON: a number that is not finite (a rejected `1e999`) is written as the string
        "Infinity", "-Infinity" or "NaN", and a lone surrogate as its `\\uXXXX` escape.
        """
        lines = []
        for attempt in self.attempts:
            line = {"schema": self.schema, "model": self.model, **attempt.to_dict()}
            lines.append(json.dumps(_finite(line), ensure_ascii=False, allow_nan=False) + "\n")
        write_file(path, "".join(lines), append=append)


@dataclass(frozen=True, slots=True)
class Result(Generic[SchemaT]):
    """A validated output and how it was reached.

    Attributes:
        output: The validated schema instance; a run never returns an invalid one.
        trace: Every call made.
    """

    output: SchemaT
    trace: Trace

    @property
    def usage(self) -> Usage:
        """Tokens summed over every call, repairs and retries included."""
        return self.trace.usage


def _finite(value: Any) -> Any:
    """JSON-like data with each float that is not finite as a string, as Pydantic writes
    them with `ser_json_inf_nan="strings"`."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def redact_all(value: Any) -> Any:
    """JSON-like data with `redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v) for v in value]
    return value
