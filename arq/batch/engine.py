"""Answering a request line with any `Backend`: the embedded model as a batch engine.

`OpenAIBackend` sends a line's body as it is (`OpenAIBackend.complete`). Any other backend
(the embedded `LlamaCppBackend`, a `ScriptedBackend` in tests) streams the `Request` the
line stands for: the body's messages and sampling settings, the steps the item's state
asks for (their JSON Schema as the prompt builder writes it), and what the state says the
request holds a steering backend to (allowed values, rejected values), so the embedded
model decodes as it does in `Executor.run`. The stream is read whole into the completion an
OpenAI-compatible server would have sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

from arq.backends.base import Backend, Settings
from arq.batch.items import ItemState, steered
from arq.jsonschema import json_schema
from arq.prompt import Message, Request
from arq.schema import Reasoning, steps
from arq.trace import Usage

__all__ = ["complete_with_stream", "request_of"]


def request_of(
    schema: type[Reasoning], body: Mapping[str, Any], state: ItemState | None = None
) -> tuple[Request, Settings]:
    """The request and settings a Chat Completions body stands for, with its item's
    `state` (without it, the steps its response format or forced tool asks for, every step
    if it names none, and no steering)."""
    if state is not None:
        asked = tuple(state.asked)
        rejected, allowed = steered(state.steer)
    else:
        asked = tuple(_asked_schema(body).get("properties") or ()) or tuple(
            s.name for s in steps(schema)
        )
        rejected, allowed = (), {}
    request = Request(
        messages=cast(list[Message], [dict(m) for m in body.get("messages") or []]),
        schema=schema,
        output_schema=json_schema(schema, "json-schema", steps=asked),
        steps=asked,
        rejected=rejected,
        allowed=allowed,
    )
    limit = body.get("max_tokens", body.get("max_completion_tokens"))
    settings = Settings(
        max_tokens=limit if isinstance(limit, int) else None,
        temperature=_number(body.get("temperature")),
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
    )
    return request, settings


async def complete_with_stream(
    backend: Backend,
    schema: type[Reasoning],
    body: Mapping[str, Any],
    state: ItemState | None = None,
) -> dict[str, Any]:
    """Stream the answer to `body` (of the item in `state`) from `backend`; the
    completion it makes."""
    request, settings = request_of(schema, body, state)
    parts: list[str] = []
    finish: str | None = None
    usage: Usage | None = None
    refusal: list[str] = []
    async for chunk in backend.stream(request, settings):
        parts.append(chunk.text)
        finish = chunk.finish_reason or finish
        usage = chunk.usage or usage
        if chunk.refusal:
            refusal.append(chunk.refusal)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(parts) if not refusal else None,
        "refusal": "".join(refusal) or None,
    }
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "model": backend.name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        completion["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    return completion


def _asked_schema(body: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema a body asks for: its response format's, or its forced tool's."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        inner = fmt.get("json_schema")
        found = inner.get("schema") if isinstance(inner, dict) else fmt.get("schema")
        if isinstance(found, dict):
            return found
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("parameters"), dict):
            parameters: dict[str, Any] = function["parameters"]
            return parameters
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
