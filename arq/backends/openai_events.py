"""Chat Completions stream events as `Chunk`s: SSE events decoded, every field checked.

`StreamEvents` turns the bytes of a streamed response into chunks: SSE framing
(`arq.backends.sse`), `[DONE]`, error events, then each event's JSON (UTF-8, read with
jiter, and with `json` where jiter refuses it), of which `chunk_of` reads only the fields
arq uses, checking each one's type. An event that is not JSON, or has the wrong shape
(`"content": 123`, `choices` as an object), is a retryable `BackendError`, as a stream
that broke off would be; so is an error event (``event: error``, or an ``"error"`` member
in the data), as the SDK raises it.

Usage is the exception: counts that are not non-negative integers are taken as no usage
reported (the run then estimates its tokens), since the answer itself is intact and a
retry would spend a whole call to get the same counts again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jiter

from arq.backends.base import Chunk
from arq.backends.sse import ServerEvent, SSEDecoder
from arq.errors import BackendError
from arq.trace import Usage, redact

__all__ = ["StreamEvents", "chunk_of"]

_STREAM_ERROR = "An error occurred during streaming"  # the SDK's text for an error without one


class StreamEvents:
    """Reads one streamed Chat Completions response, fed its bytes as they arrive."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.done = False
        """`[DONE]` arrived: nothing after it is read."""

    def feed(self, piece: bytes) -> Iterator[Chunk]:
        """The chunks the events completed by `piece` carry, in order.

        Raises:
            BackendError: An event is malformed or reports an error (retryable).
        """
        if self.done:
            return
        for event in self._sse.feed(piece):
            chunk = self._chunk(event)
            if chunk is not None:
                yield chunk
            if self.done:
                return

    def finish(self) -> Iterator[Chunk]:
        """The body ended: the chunk of an event it cut off, if that event is whole."""
        if not self.done:
            for event in self._sse.finish():
                chunk = self._chunk(event)
                if chunk is not None:
                    yield chunk

    def _chunk(self, event: ServerEvent) -> Chunk | None:
        if event.data.startswith(b"[DONE]"):
            self.done = True
            return None
        try:
            payload = _json(event.data)
        except UnicodeDecodeError as exc:
            failure = (
                "the model service sent a malformed event: its bytes are not UTF-8"
                f" ({exc.reason} at byte {exc.start})"
            )
        except ValueError as exc:
            failure = f"the model service sent a malformed event: {exc}"
        else:
            if event.name == "error" or (type(payload) is dict and payload.get("error")):
                raise _service_error(payload)
            return chunk_of(payload)
        raise BackendError(failure, retryable=True)


def _json(data: bytes) -> Any:
    """The JSON value of UTF-8 `data`, as `json.loads` reads it.

    jiter reads it faster (`bench/event_decoding.py`); what jiter refuses goes to `json`,
    which decides (it takes an escaped lone surrogate, which the step checks then reject)
    and words the error.
    """
    try:
        return jiter.from_json(data, cache_mode="keys")
    except ValueError:
        return json.loads(data.decode())


def _service_error(payload: object) -> BackendError:
    """An error the service reported inside the stream, with its message."""
    message: object = None
    if type(payload) is dict:
        error = payload.get("error", payload)
        message = error.get("message") if type(error) is dict else error
    if not message or not isinstance(message, str):
        message = _STREAM_ERROR
    return BackendError(redact(f"the model service sent an error: {message}"), retryable=True)


def chunk_of(event: object) -> Chunk | None:
    """The chunk a decoded stream event (`chat.completion.chunk`) carries, or None when
    it carries nothing.

    Raises:
        BackendError: The event does not have the shape of a `chat.completion.chunk`
            (retryable).
    """
    # Most events carry a piece of content and nothing else: read those at once.
    if type(event) is dict and event.get("usage") is None:
        choices = event.get("choices")
        if type(choices) is list and choices and type(choice := choices[0]) is dict:
            delta = choice.get("delta")
            if (
                type(delta) is dict
                and choice.get("finish_reason") is None
                and type(content := delta.get("content")) is str
                and delta.get("tool_calls") is None
                and delta.get("refusal") is None
            ):
                return Chunk(content) if content else None
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
    """`holder[name]`, None when absent; `holder` (found at `where`) must be an object."""
    if type(holder) is not dict:
        raise _malformed(where, holder, "an object")
    return holder.get(name)


def _string(holder: object, where: str, name: str) -> str | None:
    """`holder.name`, which must be a string or absent."""
    value = _field(holder, where, name)
    if value is None or isinstance(value, str):
        return value
    path = name if where == "the event" else f"{where}.{name}"
    raise _malformed(path, value, "a string")


def _usage(value: object) -> Usage | None:
    """Reported usage, or None when there is none or its counts are not integers >= 0."""
    if type(value) is not dict:
        return None
    prompt = _count(value.get("prompt_tokens"))
    completion = _count(value.get("completion_tokens"))
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
