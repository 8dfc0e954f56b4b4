"""What the executor needs from a model service: stream a request as text, say what it can do.

A backend turns a `Request` into its own wire form (a `response_format`, a forced tool, a
grammar) and yields `Chunk`s. It never retries and never validates: the executor owns
both. Failures of the service are raised as `BackendError` (with `retryable` set), a
refusal or a content filter as `RefusalError`; everything else is a finish reason.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from arq.prompt import Request
from arq.trace import Usage

__all__ = ["Backend", "Capabilities", "Chunk", "OutputMode", "Settings"]

OutputMode = Literal["json_schema", "json_object_schema", "json_object", "tool", "prompt"]
"""How the output is constrained.

- `json_schema`: OpenAI Structured Outputs (`response_format` of type `json_schema`, strict).
- `json_object_schema`: `{"type": "json_object", "schema": ...}`, the form llama.cpp's
  server and several others accept.
- `json_object`: JSON mode without a schema; the schema is only in the prompt.
- `tool`: a forced call of one function whose parameters are the schema.
- `prompt`: no constraint; the answer is parsed tolerantly (code fences, leading prose).
"""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model service supports.

    Attributes:
        output: How the output is constrained (see `OutputMode`).
        prefill: The service continues an assistant message that ends the prompt, so a
            repair can resume inside the accepted JSON instead of asking for a suffix.
        stream_usage: The service reports token usage at the end of a stream.
    """

    output: OutputMode = "json_schema"
    prefill: bool = False
    stream_usage: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    """Per-request sampling settings the executor passes down.

    Attributes:
        max_tokens: Output token limit (None: the backend's).
        temperature: Sampling temperature (None: the backend's).
        seed: Sampling seed, where the service honours one.
        first_step_temperature: The temperature of the answer's first step, if not
            `temperature`: a repair samples the step it redoes and writes the steps after
            it as a first call would. A backend that can change the temperature within an
            answer (`LlamaCppBackend`) switches when the second step's key opens; one that
            takes one temperature per answer (`OpenAIBackend`) uses this one throughout.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    first_step_temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer.

    Attributes:
        text: New output text (content, or a forced tool call's arguments).
        finish_reason: Set on the chunk that ends the answer ("stop", "length",
            "content_filter", "tool_calls", ...).
        usage: Tokens as the service reported them, on the chunk that carries them
            (usually the last).
        refusal: Refusal text the service sent instead of content.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    refusal: str | None = None


@runtime_checkable
class Backend(Protocol):
    """A model service the executor can stream from.

    `stream` is an async generator: the executor stops reading as soon as a step fails
    and closes it (`aclose()`), and the backend must then close its connection so the
    service stops generating.
    """

    @property
    def name(self) -> str:
        """The model, as traces show it."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What the service supports."""
        ...

    def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Stream the answer to `request` (continuing `request.prefill`, if set)."""
        ...

    async def aclose(self) -> None:
        """Release connections, models and threads."""
        ...
