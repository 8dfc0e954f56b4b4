"""Measuring an evaluation as it runs: what each run cost, and a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, TextIO

from arq.backends.base import Backend, Capabilities, Chunk, Settings
from arq.prompt import Request

__all__ = ["MeteredBackend", "ProgressBar", "Tally"]


@dataclass
class Tally:
    """One run so far: when its first call started, its calls, output chunks and reported tokens."""

    started: float
    calls: int = 0
    chunks: int = 0
    reported: int = 0


class MeteredBackend:
    """The backend, measuring each run: when its first call started, and the output chunks
    of runs that end without a trace. Runs are told apart by their asyncio task."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend
        self.tallies: dict[asyncio.Task[Any] | None, Tally] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        task = asyncio.current_task()
        tally = self.tallies.setdefault(task, Tally(asyncio.get_running_loop().time()))
        tally.calls += 1
        return self._stream(self.inner.stream(request, settings), tally)

    async def _stream(
        self, inner: AsyncGenerator[Chunk, None], tally: Tally
    ) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in inner:
                tally.chunks += bool(chunk.text)
                if chunk.usage is not None:
                    tally.reported += chunk.usage.completion_tokens
                yield chunk
        finally:
            await inner.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def take(self) -> Tally | None:
        """The tally of the run in the current task, forgotten."""
        return self.tallies.pop(asyncio.current_task(), None)


class ProgressBar:
    """A text progress bar on a stream: redrawn in place on a terminal, else a line per 10%."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.stream = total, stream
        self.done = self.ok = 0
        self.start = time.monotonic()
        self.tty = bool(stream is not None and stream.isatty())
        self.shown = -1

    def tick(self, success: bool, label: str) -> None:
        self.done += 1
        self.ok += success
        if self.stream is None:
            return
        decile = self.done * 10 // max(self.total, 1)
        if not self.tty and decile == self.shown and self.done < self.total:
            return
        self.shown = decile
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        bar = "#" * (self.done * 24 // max(self.total, 1))
        line = (
            f"[{bar:<24}] {self.done}/{self.total} {label}  ok {self.ok}  "
            f"{_clock(elapsed)} elapsed, ~{_clock(left)} left"
        )
        self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        if self.tty and self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
