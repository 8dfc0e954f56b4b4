"""Chat Completions stream events as `Chunk`s, every field's type checked.

The SDK builds its event objects without validating them: a field of the wrong type
(`"content": 123`, `choices` as an object) reaches arq as the server sent it. `chunk_of`
reads only the fields arq uses and checks each one; an event of the wrong shape is a
retryable `BackendError`, as a stream that broke off would be.

Usage is the exception: counts that are not non-negative integers are taken as no usage
reported (the run then estimates its tokens), since the answer itself is intact and a
retry would spend a whole call to get the same counts again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from arq.backends.base import Chunk
from arq.errors import BackendError
from arq.trace import Usage

__all__ = ["chunk_of"]


def chunk_of(event: object) -> Chunk | None:
    """The chunk an SDK stream event carries, or None when it carries nothing.

    Raises:
        BackendError: The event does not have the shape of a `chat.completion.chunk`
            (retryable).
    """
    usage = _usage(_field(event, "the event", "usage"))
    choices = _field(event, "the event", "choices")
    if choices is None or choices == []:
        return Chunk(usage=usage) if usage is not None else None
    if not isinstance(choices, list):
        raise _malformed("choices", choices, "an array")
    finish_reason = _string(choices[0], "choices[0]", "finish_reason")
    delta = _field(choices[0], "choices[0]", "delta")
    text, refusal = ("", None) if delta is None else _delta(delta, "choices[0].delta")
    if not text and refusal is None and finish_reason is None and usage is None:
        return None
    return Chunk(text=text, finish_reason=finish_reason, usage=usage, refusal=refusal)


def _delta(delta: object, where: str) -> tuple[str, str | None]:
    """A delta's text (content, then tool-call arguments) and refusal."""
    text = _string(delta, where, "content") or ""
    calls = _field(delta, where, "tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _malformed(f"{where}.tool_calls", calls, "an array")
    for number, call in enumerate(calls or ()):
        function = _field(call, f"{where}.tool_calls[{number}]", "function")
        if function is not None:
            where_function = f"{where}.tool_calls[{number}].function"
            text += _string(function, where_function, "arguments") or ""
    return text, _string(delta, where, "refusal")


def _field(holder: object, where: str, name: str) -> Any:
    """`holder.name`, None when absent; `holder` (found at `where`) must be an object."""
    if not isinstance(holder, BaseModel):
        raise _malformed(where, holder, "an object")
    return getattr(holder, name, None)


def _string(holder: object, where: str, name: str) -> str | None:
    """`holder.name`, which must be a string or absent."""
    value = _field(holder, where, name)
    if value is None or isinstance(value, str):
        return value
    path = name if where == "the event" else f"{where}.{name}"
    raise _malformed(path, value, "a string")


def _usage(value: object) -> Usage | None:
    """Reported usage, or None when there is none or its counts are not integers >= 0."""
    if not isinstance(value, BaseModel):
        return None
    prompt = _count(getattr(value, "prompt_tokens", None))
    completion = _count(getattr(value, "completion_tokens", None))
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion)


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _malformed(where: str, value: object, wanted: str) -> BackendError:
    return BackendError(
        f"the model service sent a malformed event: {where} is {_kind(value)}, not {wanted}",
        retryable=True,
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
