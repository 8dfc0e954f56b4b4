"""Reading one call's stream: parse, check each step as it ends, and watch the clock.

`read_call` reads a backend's chunks through a `StreamReader`, which parses the answer and
checks every step as soon as it completes (a failure stops reading at once), while a
`StreamWatchdog` cancels the read when the stream is silent too long or the run's
deadline passes. The call's `Attempt` record is filled in as the answer arrives.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator
from typing import Any

from arq.backends.base import Chunk
from arq.errors import (
    BackendError,
    DeadlineExceededError,
    OutputParseError,
    RefusalError,
    StepError,
    TruncatedOutputError,
)
from arq.events import Event, StepAccepted
from arq.parsing import ObjectCompleted, StepCompleted, StepParser
from arq.prompt import Request
from arq.schema import steps
from arq.trace import Attempt, StepRecord, Usage, estimate_tokens
from arq.validation import StepChecker, budget_error

__all__ = ["StreamReader", "StreamWatchdog", "read_call"]


async def read_call(
    chunks: AsyncGenerator[Chunk, None],
    reader: StreamReader,
    *,
    idle_timeout: float | None,
    deadline: float | None,
    deadline_at: float | None,
) -> AsyncGenerator[Event, None]:
    """The events of one call as its chunks arrive.

    However reading ends, the stream is closed and the reader's attempt gets the text
    received, the usage and the time taken (and the error, if reading failed).

    Args:
        chunks: The backend's stream.
        reader: Parses and checks the answer.
        idle_timeout: Seconds of silence allowed between two chunks.
        deadline: The run's deadline in seconds, for the error that names it.
        deadline_at: When the run's deadline passes, in event-loop time.
    """
    loop = asyncio.get_running_loop()
    attempt = reader.attempt
    watchdog = StreamWatchdog(loop, idle_timeout, deadline, deadline_at)
    started = loop.time()
    try:
        while True:
            watchdog.reading = True
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if watchdog.fired is None:
                    raise
                watchdog.uncancel()
                raise watchdog.error() from None
            finally:
                watchdog.reading = False
            now = watchdog.last = loop.time()  # one clock read per chunk
            for event in reader.take(chunk, now - started):
                yield event
            if reader.finished:
                break
        reader.finish()
    except BaseException as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        watchdog.cancel()
        await chunks.aclose()
        attempt.text = "".join(reader.parts)
        attempt.usage = reader.usage()
        attempt.elapsed = loop.time() - started


class StreamReader:
    """Reads one call's chunks: parses, checks each completed step, counts tokens.

    Args:
        request: The call's request; with a prefill, the answer continues the kept steps.
        attempt: The call's trace record, filled in as steps complete.
        checker: The run's step checker, holding the steps accepted so far.
        tolerant: The answer is unconstrained (`Capabilities.output == "prompt"`): prose
            around the object is skipped.
    """

    def __init__(
        self, request: Request, attempt: Attempt, checker: StepChecker[Any], *, tolerant: bool
    ) -> None:
        self.attempt = attempt
        self.checker = checker
        schema_steps = steps(request.schema)
        self.budgets = {s.name: (s, s.max_chunks) for s in schema_steps if s.max_chunks}
        kept = [s.name for s in schema_steps if s.name in checker.raw] if request.prefill else []
        self.parser = StepParser([*kept, *request.steps])
        if request.prefill:
            self.parser.feed(request.prefill)  # the kept steps: already accepted
        self.seen = set(kept)
        self.tolerant = tolerant
        self.started = not tolerant  # prose before the object is skipped when tolerant
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.chunks = 0
        self.step_chunks = 0
        self.step: str | None = None
        self.reported: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False  # the JSON object is complete
        self.finished = False  # nothing more worth reading: text after the object
        self.prompt_chars = request.prompt_chars()

    def take(self, chunk: Chunk, elapsed: float) -> list[Event]:
        """Read one chunk; the steps it completes, each accepted (or a `StepError`)."""
        if chunk.usage is not None:
            self.reported = chunk.usage
        if chunk.refusal:
            self.refusal.append(chunk.refusal)
        if chunk.finish_reason is not None:
            self.finish_reason = self.attempt.finish_reason = chunk.finish_reason
        text = chunk.text
        if not text:
            return []
        if self.done:
            # Text after the complete object, prose or whitespace (a server may send
            # whitespace without end), is not read: the stream is closed. Chunks without
            # text, such as the finish reason and the usage after the object, are read.
            self.finished = True
            return []
        self.chunks += 1
        self.parts.append(text)
        if not self.started:
            brace = text.find("{")
            if brace < 0:
                return []
            self.started, text = True, text[brace:]
        events = self._parse(text, elapsed)
        self._count_step_tokens()
        return events

    def _parse(self, text: str, elapsed: float) -> list[Event]:
        try:
            parsed = self.parser.feed(text)
        except OutputParseError:
            if not (self.tolerant and self.parser.done):
                raise
            parsed = [StepCompleted(n, v, "", 0, 0) for n, v in self.parser.completed.items()]
            parsed.append(ObjectCompleted(self.parser.position))
        events: list[Event] = []
        for item in parsed:
            if isinstance(item, ObjectCompleted):
                self.done = True
            elif isinstance(item, StepCompleted) and item.step not in self.seen:
                self.seen.add(item.step)
                events.append(self._check(item, elapsed))
        return events

    def _check(self, item: StepCompleted, elapsed: float) -> Event:
        name, value = item.step, item.value
        try:
            accepted = self.checker.accept(name, value, written=item.raw.strip() or None)
        except StepError as error:
            self.attempt.steps.append(StepRecord(name, value, elapsed, str(error)))
            self.attempt.stopped_early = not self.done
            raise
        advisory = tuple(a.message for a in self.checker.advisories if name in a.steps)
        self.attempt.steps.append(StepRecord(name, value, elapsed, advisory=advisory))
        return StepAccepted(name, accepted, self.attempt.number)

    def _count_step_tokens(self) -> None:
        """Chunks spent on the current step; past its `max_chunks`, it fails at once."""
        current = self.parser.current_step
        if current != self.step:
            self.step, self.step_chunks = current, 0
        if current is None:
            return
        self.step_chunks += 1
        budget = self.budgets.get(current)
        if budget is not None and self.step_chunks > budget[1]:
            self.attempt.stopped_early = True
            raise budget_error(*budget)

    def finish(self) -> None:
        """The stream ended: was the object complete, and if not, why not?"""
        if self.done:
            self.attempt.stopped_early = self.finish_reason is None
            return
        if self.refusal or self.finish_reason == "content_filter":
            refusal = "".join(self.refusal) or None
            reason = self.finish_reason or "refusal"
            raise RefusalError(
                f"the model refused ({reason}): {refusal or 'the provider filtered the content'};"
                " not retried: change the request or the context",
                refusal=refusal,
                finish_reason=reason,
            )
        if self.finish_reason is None:
            raise BackendError("the stream ended before the answer was complete", retryable=True)
        try:
            self.parser.close()
        except TruncatedOutputError as error:
            if self.finish_reason == "length":
                raise TruncatedOutputError(
                    f"{error} (finish_reason=length: the request's max_tokens was reached)",
                    partial=error.partial,
                    position=error.position,
                ) from None
            raise OutputParseError(
                f"the answer stopped before the JSON object was complete: {error}",
                problem="invalid_json",
                position=error.position,
                step=self.parser.current_step,
            ) from None

    def usage(self) -> Usage:
        """The call's usage as reported, or estimated when the stream reported none."""
        if self.reported is not None:
            return self.reported
        # no usage reported (a stream closed early reports none): estimate it
        return Usage(estimate_tokens(self.prompt_chars), self.chunks, estimated=True)


class StreamWatchdog:
    """Cancels the reading task when the stream is silent too long or the deadline passes.

    One timer per call, re-armed only when it fires: per chunk, reading costs a clock read.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        idle: float | None,
        deadline: float | None,
        deadline_at: float | None,
    ) -> None:
        self.loop = loop
        self.idle = idle
        self.deadline = deadline
        self.deadline_at = deadline_at
        self.task = asyncio.current_task()
        self.last = loop.time()
        self.reading = False
        self.fired: str | None = None
        self.handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        idle_due = None if self.idle is None else self.last + self.idle
        due = [t for t in (self.deadline_at, idle_due) if t is not None]
        if due and self.task is not None:
            self.handle = self.loop.call_at(min(due), self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if self.reading and self.task is not None:
            if self.deadline_at is not None and now >= self.deadline_at:
                self.fired = "deadline"
            elif self.idle is not None and now - self.last >= self.idle:
                self.fired = "idle"
            if self.fired is not None:
                self.task.cancel()
                return
        if not self.reading:
            self.last = now  # the caller is busy between two reads: that is not silence
        self._arm()

    def uncancel(self) -> None:
        """Take back the cancellation this watchdog asked for (Python 3.11+ counts them)."""
        if sys.version_info >= (3, 11) and self.task is not None:
            self.task.uncancel()

    def error(self) -> BackendError | DeadlineExceededError:
        """The error that replaces the cancellation: the deadline's, or a silent stream's."""
        if self.fired == "deadline":
            return DeadlineExceededError(
                f"the run's deadline of {self.deadline} s passed mid-stream"
            )
        return BackendError(
            f"the stream was silent for {self.idle} s (idle_timeout); the call is retried",
            retryable=True,
        )

    def cancel(self) -> None:
        """Stop the timer."""
        if self.handle is not None:
            self.handle.cancel()
