"""What the spans say: the provider of a backend, and message content as the GenAI
conventions write it (JSON text of role and parts), secrets masked.

Pure functions of arq's own data (`Request`, `Attempt`); nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Literal

from arq.prompt import Request
from arq.trace import Attempt, redact

__all__ = [
    "CAPTURE_ENV",
    "MODES",
    "CaptureMode",
    "capture_mode",
    "SCHEMA_URL",
    "input_messages",
    "output_messages",
    "provider_of",
    "system_instructions",
]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""The version of the semantic conventions the spans and metrics follow."""

CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
"""Where message content goes: nowhere, span attributes, a span event, or both."""

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The environment variable that turns content capture on when `Telemetry` leaves it unset."""

MODES: tuple[CaptureMode, ...] = ("NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT")


def capture_mode(setting: bool | str | None) -> CaptureMode:
    """The capture mode a setting names: a boolean (true is `SPAN_ONLY`), one of the four
    mode names, or None for the environment variable `CAPTURE_ENV` in either form.

    A value the environment variable cannot mean (a typo) captures nothing.
    """
    if setting is None:
        setting = os.environ.get(CAPTURE_ENV, "")
    if isinstance(setting, bool):
        return "SPAN_ONLY" if setting else "NO_CONTENT"
    text = setting.strip().upper()
    if text in ("TRUE", "1"):
        return "SPAN_ONLY"
    for mode in MODES:
        if text == mode:
            return mode
    return "NO_CONTENT"


def provider_of(backend: object, named: str | None) -> tuple[str, bool]:
    """`gen_ai.provider.name` of a backend's calls, and whether the model runs in-process.

    The user's name wins; then the backend's own `provider_name` attribute (the embedded
    model's is `llama_cpp`); `OpenAIBackend` speaks the OpenAI API whatever its base URL,
    so its calls are `openai`; any other backend is named by its class.
    """
    in_process = bool(getattr(backend, "in_process", False))
    if named:
        return named, in_process
    own = getattr(backend, "provider_name", None)
    if isinstance(own, str) and own:
        return own, in_process
    openai_module = sys.modules.get("arq.backends.openai")
    if openai_module is not None and isinstance(backend, openai_module.OpenAIBackend):
        return "openai", in_process
    return type(backend).__name__.lower(), in_process


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": redact(text)}]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def system_instructions(request: Request) -> str | None:
    """`gen_ai.system_instructions`: the parts of the system messages, or None if none."""
    parts = [p for m in request.messages if m["role"] == "system" for p in _parts(m["content"])]
    return _json(parts) if parts else None


def input_messages(request: Request) -> str:
    """`gen_ai.input.messages`: the chat messages after the system ones, and the kept
    steps the answer continues (a prefill) as an assistant message."""
    messages = [
        {"role": m["role"], "parts": _parts(m["content"])}
        for m in request.messages
        if m["role"] != "system"
    ]
    if request.prefill:
        messages.append({"role": "assistant", "parts": _parts(request.prefill)})
    return _json(messages)


def output_messages(attempt: Attempt) -> str:
    """`gen_ai.output.messages`: the text received, up to where reading stopped."""
    reason = attempt.finish_reason or ("error" if attempt.error else "stop")
    message = {"role": "assistant", "parts": _parts(attempt.text), "finish_reason": reason}
    return _json([message])
