"""`ScriptedBackend`: a deterministic backend with no network, for unit tests of agents.

```python
backend = ScriptedBackend('{"answer": "wrong"}', '{"answer": "right"}')
result = arq.Executor(backend).run(Schema, context)
backend.requests[1].steps        # what the repair asked for
```

Each call streams the next scripted reply, cut into small chunks, and reports usage. A
reply may also be a callable that gets the `Request` and returns the text, an exception
to raise (a `BackendError` to test retries), or a `Reply` for its text and finish reason
(`Truncated(text)`: cut at the token limit).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from arq.backends.base import Capabilities, Chunk, Settings
from arq.errors import AssertionFailed
from arq.prompt import Request
from arq.testing.replies import Reply, split_pieces
from arq.trace import Usage, estimate_tokens

__all__ = ["ScriptedBackend", "ScriptedReply"]

ScriptedReply = str | Callable[[Request], str] | BaseException | Reply


@dataclass(frozen=True)
class _Call:
    request: Request
    settings: Settings


class ScriptedBackend:
    """Streams scripted replies, in order, one per call.

    Args:
        replies: The text of each call (the whole object, or its continuation after
            `request.prefill`), a callable making it from the request, an exception, or
            a `Reply` (its text and finish reason; its other options are not used).
        capabilities: What the backend claims to support (prefill, output mode).
        finish_reason: Sent with the last chunk of every reply.
        name: The model name traces show.
    """

    provider_name = "arq.scripted"
    """`gen_ai.provider.name` of its calls in OpenTelemetry spans."""
    in_process = True
    """No service is called: its call spans are INTERNAL, not CLIENT."""

    def __init__(
        self,
        *replies: ScriptedReply,
        capabilities: Capabilities | None = None,
        finish_reason: str = "stop",
        name: str = "scripted",
    ) -> None:
        self._replies = list(replies)
        self.capabilities = capabilities or Capabilities()
        self._finish_reason = finish_reason
        self.name = name
        self.calls: list[_Call] = []

    @property
    def requests(self) -> list[Request]:
        """The requests received, in order."""
        return [call.request for call in self.calls]

    def script(self, *replies: ScriptedReply) -> None:
        """Queue more replies."""
        self._replies.extend(replies)

    async def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Stream the next reply in token-like chunks; the last carries usage."""
        self.calls.append(_Call(request, settings))
        if not self._replies:
            raise AssertionFailed(
                f"ScriptedBackend got call {len(self.calls)} but no reply is left to send"
            )
        reply = self._replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        finish_reason = self._finish_reason
        if isinstance(reply, Reply):
            text, finish_reason = reply.text, reply.finish_reason
        else:
            text = reply(request) if callable(reply) else reply
        pieces = split_pieces(text)
        for piece in pieces:
            yield Chunk(text=piece)
        prompt = estimate_tokens(request.prompt_chars())
        usage = Usage(prompt_tokens=prompt, completion_tokens=len(pieces))
        yield Chunk(finish_reason=finish_reason, usage=usage)

    async def aclose(self) -> None:
        """Nothing to release."""
