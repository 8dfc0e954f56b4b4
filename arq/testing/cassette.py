"""Record a live backend's exchanges once, replay them offline in CI.

```python
live = OpenAIBackend("gpt-4.1-mini")                  # needs the network and a key
backend = RecordingBackend(live, "cassettes/reply.json")   # run once: records
backend = ReplayBackend("cassettes/reply.json")            # in CI: no network, no key
```

A cassette is a JSON file: the backend's name and capabilities, then one exchange per call
(the request as sent, the settings, the chunks received, or the error raised). Secrets are
redacted before anything is written. On replay, a request that no longer matches its
recording (the prompt, the schema or the settings changed) fails with a diff; so does a run
that makes more calls, or fewer, than were recorded.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import AsyncGenerator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from arq.backends.base import Backend, Capabilities, Chunk, Settings
from arq.errors import BackendError, CassetteMismatch
from arq.prompt import Request
from arq.trace import Usage, redact_all, write_file

__all__ = ["RecordingBackend", "ReplayBackend"]

VERSION = 1


def _request_record(request: Request, settings: Settings) -> dict[str, Any]:
    return {**request.to_dict(), "steps": list(request.steps), "settings": asdict(settings)}


def _chunk_record(chunk: Chunk) -> dict[str, Any]:
    record: dict[str, Any] = {"text": chunk.text}
    if chunk.finish_reason is not None:
        record["finish_reason"] = chunk.finish_reason
    if chunk.usage is not None:
        record["usage"] = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
    if chunk.refusal is not None:
        record["refusal"] = chunk.refusal
    return record


class RecordingBackend:
    """Passes every call to `inner` and writes what was sent and received to `path`."""

    def __init__(self, inner: Backend, path: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.path = Path(path)
        self.exchanges: list[dict[str, Any]] = []
        self._save()  # an empty recording replaces an old one at once

    @property
    def name(self) -> str:
        """The inner backend's name."""
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        """The inner backend's capabilities."""
        return self.inner.capabilities

    async def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Stream from the inner backend, recording each chunk as it passes."""
        exchange: dict[str, Any] = {"request": _request_record(request, settings), "chunks": []}
        self.exchanges.append(exchange)
        inner = self.inner.stream(request, settings)
        try:
            async for chunk in inner:
                exchange["chunks"].append(_chunk_record(chunk))
                yield chunk
        except BackendError as error:
            exchange["error"] = {
                "message": str(error),
                "retryable": error.retryable,
                "status": error.status,
                "retry_after": error.retry_after,
            }
            raise
        finally:
            await inner.aclose()
            self._save()

    async def aclose(self) -> None:
        """Save, then close the inner backend."""
        self._save()
        await self.inner.aclose()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cassette = {
            "version": VERSION,
            "backend": {"name": self.name, "capabilities": asdict(self.capabilities)},
            "exchanges": self.exchanges,
        }
        text = json.dumps(redact_all(cassette), indent=1, ensure_ascii=False)
        write_file(self.path, text + "\n")


class ReplayBackend:
    """Replays a cassette: each call must match the next recorded request.

    Raises `CassetteMismatch` (an `AssertionError`) with a diff when it does not, when more
    calls come than were recorded, and from `check_all_replayed` when fewer came. Its
    `name` and `capabilities` are those of the recorded backend.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            cassette = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CassetteMismatch(
                f"no cassette at {self.path}: record it once against the live backend"
            ) from None
        if not isinstance(cassette, dict) or cassette.get("version") != VERSION:
            raise CassetteMismatch(f"{self.path} is not a version-{VERSION} arq cassette")
        self.name = str(cassette["backend"]["name"])
        self.capabilities = Capabilities(**cassette["backend"]["capabilities"])
        self.exchanges: list[dict[str, Any]] = list(cassette["exchanges"])
        self.replayed = 0

    async def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Check the request against the next recording, then replay its chunks."""
        number = self.replayed + 1
        if self.replayed >= len(self.exchanges):
            raise CassetteMismatch(
                f"call {number} was not recorded in {self.path} ({len(self.exchanges)} were):"
                " re-record the cassette if the change is intended"
            )
        exchange = self.exchanges[self.replayed]
        self.replayed += 1
        sent = json.loads(json.dumps(redact_all(_request_record(request, settings))))
        if sent != exchange["request"]:
            raise CassetteMismatch(
                f"call {number} differs from its recording in {self.path}"
                " (re-record if the change is intended):\n" + _diff(exchange["request"], sent)
            )
        for record in exchange["chunks"]:
            usage = record.get("usage")
            yield Chunk(
                text=record.get("text", ""),
                finish_reason=record.get("finish_reason"),
                usage=Usage(*usage) if usage else None,
                refusal=record.get("refusal"),
            )
        error = exchange.get("error")
        if error is not None:
            raise BackendError(
                error["message"],
                retryable=error["retryable"],
                status=error["status"],
                retry_after=error["retry_after"],
            )

    def check_all_replayed(self) -> None:
        """Fail if the run made fewer calls than were recorded."""
        left = len(self.exchanges) - self.replayed
        if left:
            raise CassetteMismatch(
                f"{left} recorded call(s) in {self.path} were not made: the run changed;"
                " re-record the cassette if the change is intended"
            )

    async def aclose(self) -> None:
        """Nothing to release."""


def _diff(recorded: Any, sent: Any) -> str:
    old = json.dumps(recorded, indent=1, sort_keys=True, ensure_ascii=False).splitlines()
    new = json.dumps(sent, indent=1, sort_keys=True, ensure_ascii=False).splitlines()
    lines = difflib.unified_diff(old, new, "recorded", "sent now", lineterm="", n=2)
    return "\n".join(lines)
