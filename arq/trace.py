"""What a run leaves behind: the validated output, every model call, and the tokens spent.

A `Trace` records each call to the model as an `Attempt` (its request, the raw text
received, the steps checked with their timings, the error that ended it) so a run can be
explained afterwards and written to JSONL. Secrets never reach a trace: `redact` masks API
keys and Authorization values in every text that is written out, and every exact secret
given to `register_secret` (a backend registers the key and credential headers it was
given, whatever their shape); `redact_headers` applies the same rule to HTTP headers,
masking credential headers whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from arq.checks.severity import AdvisoryFailure
from arq.prompt import Request
from arq.schema import Reasoning

__all__ = [
    "Attempt",
    "AttemptKind",
    "Result",
    "StepRecord",
    "Trace",
    "Usage",
    "credential_header",
    "estimate_tokens",
    "redact",
    "redact_all",
    "redact_headers",
    "register_secret",
    "replacing",
    "write_file",
]

SchemaT = TypeVar("SchemaT", bound=Reasoning)

AttemptKind = Literal["first", "repair", "continuation", "retry"]
"""Why a call was made: the first call, a repair after an output error, a continuation of
an answer cut at its token limit (from the step it was cut in), or a retry after a
transport error (which resumes after the steps already accepted)."""

_SECRETS = re.compile(
    r"(?i)(?P<key>sk-[A-Za-z0-9_\-]{6,})"  # OpenAI-style keys
    r"|(?P<lead>bearer\s+|api[_-]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-.=:+/]{6,}"
)


# Headers whose whole value is a credential, whatever it looks like: these names, and any
# whose last word is one of these words (x-goog-api-key, x-auth-token, ...).
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
_CREDENTIAL_WORD = re.compile(
    r"(?i)(?:^|[-_])(?:key|apikey|token|secret|password|passwd|credentials?|cookie|session)$"
)

_MIN_SECRET_CHARS = 8  # masking shorter strings everywhere would garble ordinary text

_registered: set[str] = set()
_registered_lock = threading.Lock()
_exact: re.Pattern[str] | None = None  # every registered secret, longest first


def register_secret(value: str) -> None:
    """Mask `value` wherever arq writes text from now on (errors, traces, cassettes, the
    test server's records), in addition to the patterns.

    Its JSON-escaped and `repr` forms are masked too. Secrets stay registered for the
    life of the process; one shorter than 8 characters is ignored.
    """
    global _exact
    if not isinstance(value, str) or len(value) < _MIN_SECRET_CHARS:
        return
    forms = {value, json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    with _registered_lock:
        if forms <= _registered:
            return
        _registered.update(forms)
        ordered = sorted(_registered, key=len, reverse=True)
        _exact = re.compile("|".join(re.escape(form) for form in ordered))


def credential_header(name: str) -> bool:
    """Whether an HTTP header's value is a credential (Authorization, api-key,
    x-goog-api-key, Cookie, ...), judged by its name."""
    lower = name.lower()
    return lower in _CREDENTIAL_HEADERS or _CREDENTIAL_WORD.search(lower) is not None


def redact(text: str) -> str:
    """`text` with registered secrets, API keys and bearer tokens replaced by `***`."""
    exact = _exact
    if exact is not None:
        text = exact.sub("***", text)
    return _SECRETS.sub(lambda m: (m.group("lead") or "") + "***", text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` with a credential header's value replaced by `[REDACTED]` (an Authorization
    scheme kept: "Bearer [REDACTED]") and every other value passed through `redact`."""
    clean = {}
    for name, value in headers.items():
        lower = name.lower()
        if credential_header(lower):
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
        advisory: The failures of advisory checks it was accepted with, once their
            repairs were spent (`arq.checks.severity`).
    """

    name: str
    value: Any
    elapsed: float
    error: str | None = None
    advisory: tuple[str, ...] = ()


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
            "steps": [_step_dict(s) for s in self.steps],
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
        """Calls that spent the repair budget: repairs of an output error and
        continuations of an answer cut at its token limit."""
        return sum(1 for a in self.attempts if a.kind in ("repair", "continuation"))

    def to_jsonl(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        """Write one JSON line per call (with the schema and model names), secrets redacted.

        The file is written whole or not at all (`write_file`). Every line is
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
        advisories: Advisory checks that still failed when their repairs were spent; the
            run went on with their steps (`arq.checks.severity`). Empty when none did.
    """

    output: SchemaT
    trace: Trace
    advisories: tuple[AdvisoryFailure, ...] = ()

    @property
    def usage(self) -> Usage:
        """Tokens summed over every call, repairs and retries included."""
        return self.trace.usage


def _step_dict(step: StepRecord) -> dict[str, Any]:
    """A step record as JSON-like data; `advisory` only when it has any."""
    record = {
        "name": step.name,
        "value": step.value,
        "elapsed": round(step.elapsed, 6),
        "error": step.error,
    }
    if step.advisory:
        record["advisory"] = list(step.advisory)
    return record


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


# --- files written whole or not at all -------------------------------------------------
# Every file arq writes (trace JSONL, reports, plots, snapshots) goes to a temporary file
# in the same folder, flushed to disk, then moved over the target with `os.replace`, which
# is atomic: a reader, or a run that fails halfway, never sees a truncated file.


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new, empty file beside `path`, to write in the block; it replaces `path` when the
    block ends, or is removed if the block raises.

    The new file gets the mode `path` had, or the usual mode of a new file (umask applied).
    A symbolic link is written through, as `open(path, "w")` would.
    """
    target = Path(os.path.realpath(path))
    # the suffix is kept, for writers that read the format from it (a plot's .png)
    temp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(os.stat(target).st_mode))
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_file(path: str | os.PathLike[str], data: str | bytes, *, append: bool = False) -> None:
    """Write `data` to `path` whole or not at all; with `append`, after what `path` holds.

    Text is written as UTF-8. A lone surrogate, which UTF-8 cannot encode, is written as
    its `\\uXXXX` escape: in JSON text, where such a character can only sit in a string,
    that is the escape JSON itself uses for it.
    """
    body = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    with replacing(path) as temp, open(temp, "wb") as out:
        if append:
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as before:
                while block := before.read(1 << 20):
                    out.write(block)
        out.write(body)
