"""What the fake server answers (replies and faults), what it records, and the payloads.

A scripted item is a `Reply` (a normal completion) or a `Status` (an HTTP error), and a
`Reply` can be wrapped in faults that strike at a character offset of its content:
`Stall` pauses, `Malformed` sends a raw data line (not JSON, or JSON of the wrong shape),
`DropAfter` hangs up.
Faults nest, innermost first: `DropAfter(Stall(Reply(text), 10, 0.5), 40)`.

Model mistakes need no special type: script the JSON a misbehaving model would write.
A `Reply` is the content; when the request forces a tool the same text goes out as the
tool call's arguments, so one script serves both structured-output styles.

```python
server.script(
    Reply('{"request": "refund", "order_id": "B-9"}'),     # a step that fails its check
    Reply('{"decision": "reply", "request": "refund"}'),    # steps out of order
    Truncated('{"request": "a ref'),                        # cut by max_tokens
)
```

`flatten`, `Render` and `as_scripted` are the server's helpers, kept here so the
wire payloads sit next to the types they render.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeAlias

from arq.errors import InvalidArgumentError
from arq.trace import Usage, estimate_tokens

__all__ = [
    "DropAfter",
    "Malformed",
    "ReceivedRequest",
    "Reply",
    "Responder",
    "Scripted",
    "Stall",
    "Status",
    "Truncated",
    "split_pieces",
]


@dataclass(frozen=True)
class Reply:
    """A completion: streamed as SSE when the request asks for `stream`, else one JSON body.

    Args:
        text: The content (or, when the request forces a tool, the tool call's arguments).
        chunk_chars: Fixed piece size; by default the text is cut into token-like pieces.
        tokens_per_second: Pace of the pieces, to act as a slow model; None is as fast as
            possible.
        finish_reason: Sent on the last chunk ("stop", "length", "content_filter", ...).
        usage: True estimates the counts, a `Usage` (`arq.trace.Usage`) gives them,
            None sends none. Streams carry usage only when the request sets
            `stream_options.include_usage`.
        refusal: A structured-outputs refusal, sent as `refusal` pieces with null content.
        tool_call: None calls a tool only when the request forces one (a named
            `tool_choice`, or "required"); "auto" also calls the first offered tool when
            the model may choose; any other string is the name of the function to call.
    """

    text: str = ""
    _: KW_ONLY
    chunk_chars: int | None = None
    tokens_per_second: float | None = None
    finish_reason: str = "stop"
    usage: bool | Usage | None = True
    refusal: str | None = None
    tool_call: str | None = None

    def __post_init__(self) -> None:
        if self.chunk_chars is not None and self.chunk_chars < 1:
            raise InvalidArgumentError(f"chunk_chars must be at least 1, not {self.chunk_chars}")
        if self.tokens_per_second is not None and self.tokens_per_second <= 0:
            raise InvalidArgumentError(
                f"tokens_per_second must be positive, not {self.tokens_per_second}"
            )
        if self.refusal is not None and self.text:
            raise InvalidArgumentError("a reply has either text or a refusal, not both")


@dataclass(frozen=True)
class Truncated(Reply):
    """A reply cut by the token limit: `finish_reason` is "length"."""

    _: KW_ONLY
    finish_reason: str = "length"


@dataclass(frozen=True, slots=True)
class Status:
    """An HTTP error answer, with OpenAI's `{"error": {...}}` body unless `body` is given.

    Args:
        code: The HTTP status (429, 500, 503, 400, 401, ...).
        body: A JSON-able body, or a string sent as text/plain (as a proxy would).
        message: The error message of the default body.
        retry_after: Seconds for the `Retry-After` header.
        retry_after_ms: Milliseconds for the `retry-after-ms` header.
    """

    code: int
    _: KW_ONLY
    body: Mapping[str, Any] | str | None = None
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> Status:
        """A 429 with a `Retry-After` header."""
        return cls(429, retry_after=retry_after)

    def headers(self) -> list[tuple[str, str]]:
        """The Retry-After headers to send."""
        headers = []
        if self.retry_after is not None:
            seconds = float(self.retry_after)
            headers.append(
                ("Retry-After", str(int(seconds)) if seconds.is_integer() else str(seconds))
            )
        if self.retry_after_ms is not None:
            headers.append(("retry-after-ms", str(self.retry_after_ms)))
        return headers

    def error_body(self) -> Mapping[str, Any] | str:
        """The body to send: `body`, or one in OpenAI's error shape."""
        if self.body is not None:
            return self.body
        kind, code, text = _ERRORS.get(self.code, ("server_error", None, "Fake error."))
        return {"error": {"message": self.message or text, "type": kind, "code": code}}


_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (fake)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (fake)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden (fake)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (fake)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (fake)."),
    500: ("server_error", None, "The server had an error processing your request (fake)."),
    503: ("server_error", None, "The engine is currently overloaded (fake)."),
}


@dataclass(frozen=True, slots=True)
class DropAfter:
    """Close the connection abruptly once `chars` content characters are sent: no [DONE].

    If the content is shorter, the drop comes after all of it, before the last chunk.
    A non-streamed request gets no answer at all.
    """

    reply: Reply | Fault
    chars: int

    def __post_init__(self) -> None:
        if self.chars < 0:
            raise InvalidArgumentError(f"chars must not be negative, not {self.chars}")


@dataclass(frozen=True, slots=True)
class Stall:
    """Pause `seconds` once `after_chars` content characters are sent (0: before any)."""

    reply: Reply | Fault
    after_chars: int
    seconds: float

    def __post_init__(self) -> None:
        if self.after_chars < 0 or self.seconds < 0:
            raise InvalidArgumentError("after_chars and seconds must not be negative")


@dataclass(frozen=True, slots=True)
class Malformed:
    """Send `data` as is, as an SSE data line, once `after_chars` characters are sent: by
    default a line that is not JSON; any text goes, such as a chunk of the wrong shape
    (`"content": 123`, `choices` as an object).

    `bytes` are sent exactly as given, as one HTTP chunk with no SSE framing added: the
    wire itself, such as comments, ``event:`` lines, CR line ends, half an event, or
    bytes that are not UTF-8. A non-streamed request gets `data` as its whole body.
    """

    reply: Reply | Fault = field(default_factory=Reply)
    after_chars: int = 0
    data: str | bytes = '{"id": "chatcmpl-broken", "choices": [{'


Fault: TypeAlias = DropAfter | Stall | Malformed
Scripted: TypeAlias = Reply | Status | Fault
"""What `FakeOpenAIServer.script` takes: a reply, an HTTP status or a fault."""


@dataclass(eq=False)
class ReceivedRequest:
    """A request the server received; the reply fields fill in while it is answered.

    Attributes:
        method: "POST", "GET", ...
        path: The path without the query string, e.g. "/v1/chat/completions".
        headers: Lower-cased names; credentials masked (see `arq.trace.redact_headers`).
        body: The parsed JSON body, or None.
        connection: Serial number of the TCP connection (keep-alive requests share it).
        reply: The scripted item served, once chosen.
        sent_chars: Content characters written and flushed before the reply ended or the
            client went away.
        completed: The whole reply was written.
        disconnected_early: The client went away before the reply was complete.
        query: The query string of the request's target, without the "?".
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    connection: int = 0
    reply: Scripted | None = None
    sent_chars: int = 0
    completed: bool = False
    disconnected_early: bool = False
    query: str = ""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed reply."""
        return isinstance(self.body, dict) and self.body.get("stream") is True

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until the server is done answering; False if `timeout` passed first."""
        return self._done.wait(timeout)


Responder: TypeAlias = Callable[[ReceivedRequest], Scripted]
"""Makes a reply from a request when `FakeOpenAIServer` has no scripted one left."""


def as_scripted(item: object, source: str) -> Scripted:
    """`item` as a scripted reply: a str becomes a `Reply`; anything else is a TypeError."""
    if isinstance(item, str):
        return Reply(item)
    if isinstance(item, Reply | Status | DropAfter | Stall | Malformed):
        return item
    raise InvalidArgumentError(f"{source} gave {item!r}, not a Reply, Status or fault")


# Token-like pieces of 1-8 characters: an optional leading space and a short word, one
# punctuation mark, or a whitespace run. The alternatives cover every character, so the
# pieces always join back to the text.
_PIECE = re.compile(r"\s?(?:\w{1,7}|[^\w\s])|\s{1,8}")


def split_pieces(text: str, chunk_chars: int | None = None) -> list[str]:
    """Cut `text` into the pieces a stream sends, one per chunk."""
    if chunk_chars is not None:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
    return _PIECE.findall(text)


def forced_tool(body: Any, choice: str | None) -> str | None:
    """The function a reply should call: the reply's `tool_call` against the request's tools."""
    body = body if isinstance(body, dict) else {}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    names = [(t.get("function") or {}).get("name") for t in tools]
    tool_choice = body.get("tool_choice")
    if choice not in (None, "auto"):
        return choice
    if isinstance(tool_choice, dict):
        return str((tool_choice.get("function") or {}).get("name"))
    if names and (tool_choice == "required" or (choice == "auto" and tool_choice != "none")):
        return str(names[0])
    return None


@dataclass(frozen=True)
class FaultEvent:
    """A fault striking once `at` content characters are sent."""

    at: int
    kind: str  # "stall", "malformed" or "drop"
    seconds: float = 0.0
    data: str | bytes = ""


def flatten(item: Reply | DropAfter | Stall | Malformed) -> tuple[Reply, list[FaultEvent]]:
    """Unwrap nested faults into the base reply and its events, by offset (drops last)."""
    events: list[FaultEvent] = []
    while not isinstance(item, Reply):
        if isinstance(item, DropAfter):
            events.append(FaultEvent(item.chars, "drop"))
        elif isinstance(item, Stall):
            events.append(FaultEvent(item.after_chars, "stall", seconds=item.seconds))
        else:
            events.append(FaultEvent(item.after_chars, "malformed", data=item.data))
        item = item.reply
    return item, sorted(events, key=lambda e: (e.at, e.kind == "drop"))


class Render:
    """The chat.completion and chat.completion.chunk payloads of one reply."""

    def __init__(self, reply: Reply, body: dict[str, Any], serial: int, model: str) -> None:
        self.reply, self.body = reply, body
        self.id, self.created = f"chatcmpl-fake{serial}", int(time.time())
        self.model = str(body.get("model") or model)
        self.tool = None if reply.refusal is not None else forced_tool(body, reply.tool_call)
        self.text = reply.refusal if reply.refusal is not None else reply.text
        self.pieces = split_pieces(self.text, reply.chunk_chars)
        self.delay = 1 / reply.tokens_per_second if reply.tokens_per_second else 0.0
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        cut_short = reply.finish_reason in ("length", "content_filter")
        self.finish_reason = "tool_calls" if self.tool and not cut_short else reply.finish_reason

    def envelope(self, choices: list[Any], usage: Any = None) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        chunk |= {"model": self.model, "choices": choices}
        if self.include_usage:  # as OpenAI does: null on every chunk but the last
            chunk["usage"] = usage
        return json.dumps(chunk)

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return self.envelope([choice])

    def first_delta(self) -> dict[str, Any]:
        if self.tool is not None:
            call = {"index": 0, "id": f"call_{self.id}", "type": "function"}
            call["function"] = {"name": self.tool, "arguments": ""}
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        if self.reply.refusal is not None:
            return {"role": "assistant", "content": None, "refusal": ""}
        return {"role": "assistant", "content": "", "refusal": None}

    def piece_delta(self, piece: str) -> dict[str, Any]:
        if self.tool is not None:
            return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        return {"refusal": piece} if self.reply.refusal is not None else {"content": piece}

    def usage(self) -> dict[str, int] | None:
        usage = self.reply.usage
        if usage is None or usage is False:
            return None
        if usage is True:
            prompt, completion = _prompt_tokens(self.body), len(self.pieces)
        else:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
        total = prompt + completion
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if self.tool is not None:
            function = {"name": self.tool, "arguments": self.text}
            message["tool_calls"] = [
                {"id": f"call_{self.id}", "type": "function", "function": function}
            ]
        elif self.reply.refusal is not None:
            message["refusal"] = self.text
        else:
            message["content"] = self.text
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        payload = {"id": self.id, "object": "chat.completion", "created": self.created}
        payload |= {"model": self.model, "choices": [choice | {"logprobs": None}]}
        if (usage := self.usage()) is not None:
            payload["usage"] = usage
        return payload


def _prompt_tokens(body: dict[str, Any]) -> int:
    """The estimated tokens of the messages' text, as a server would count them: a token
    begun is a token, and no prompt is free."""
    chars = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return max(1, estimate_tokens(chars, round_up=True))
