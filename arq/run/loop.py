"""The convergence loop of one run: stream, check each step as it ends, repair from the failure.

One `RunLoop` per run. Each call streams the model's answer into the step parser; every
step that completes is checked at once, and the first failure stops reading (the stream is
closed, so no tokens are paid for text that would be thrown away). The next call keeps the
accepted steps and redoes the failing step and those after it, with the error named. Two
budgets never mix: `max_repairs` for output errors, the `RetryPolicy` for transport errors.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from arq.backends.base import Chunk, Settings
from arq.errors import (
    NO_VALUE,
    BackendError,
    ConvergenceError,
    DeadlineExceededError,
    OutputError,
    OutputParseError,
    RefusalError,
    StepError,
    TruncatedOutputError,
    value_key,
)
from arq.events import (
    Event,
    OutputAccepted,
    RepairStarted,
    RetryScheduled,
    StepAccepted,
    StepFailed,
)
from arq.parsing import ObjectCompleted, StepCompleted, StepParser
from arq.prompt import PromptBuilder, Request
from arq.schema import Reasoning, cross_checks, steps
from arq.trace import Attempt, AttemptKind, Result, StepRecord, Trace, Usage, estimate_tokens
from arq.validation import StepChecker, budget_error

if TYPE_CHECKING:
    from arq.executor import Executor

__all__ = ["RunLoop"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)
Signature = tuple[Any, ...]


class RunLoop(Generic[SchemaT]):
    """The state of one run: accepted steps, the trace, the budgets left."""

    def __init__(
        self,
        executor: Executor,
        schema: type[SchemaT],
        context: Mapping[str, Any] | None,
        examples: Sequence[BaseModel | Mapping[str, Any]],
    ) -> None:
        self.executor = executor
        self.schema = schema
        self.context = context
        self.examples = examples
        self.checker = StepChecker(schema, context=context)
        self.trace = Trace(schema=schema.__name__, model=executor.backend.name)
        self.budgets = {s.name: s.max_chunks for s in steps(schema) if s.max_chunks}
        self.order = [s.name for s in steps(schema)]
        self.deadline: float | None = None
        self.pending: list[Event] = []
        self.rejected: dict[str, list[str]] = {}  # JSON of values each step had rejected
        self.failed_text: tuple[str, str] | None = None  # the failing step's text, as written
        self.seen: set[Signature] = set()  # failures so far: one coming back stops the run

    async def events(self) -> AsyncGenerator[Event, None]:
        """Run to a valid output, yielding events as they happen."""
        ex = self.executor
        loop = asyncio.get_running_loop()
        if ex.deadline is not None:
            self.deadline = loop.time() + ex.deadline
        base = ex.builder.build(self.schema, self.context, examples=self.examples)
        request: Request = base
        kind: AttemptKind = "first"
        repairs = 0
        while True:
            try:
                async for event in self._call_with_retries(base, request, kind):
                    yield event
                output = self.checker.finish()  # model validators need the whole object
            except (StepError, OutputParseError) as error:
                step = self._failing_step(error)
                yield StepFailed(step, error, len(self.trace.attempts))
                signature = _signature(error, step)
                if signature in self.seen:  # the model came back to a failure: it is stuck
                    raise self._not_converging(
                        error, f"step {step!r} failed twice the same way: {error}"
                    ) from error
                self._remember_rejected(error)
                if repairs >= ex.max_repairs:
                    raise self._not_converging(
                        error, f"{repairs} repairs did not lead to a valid output; last: {error}"
                    ) from error
                self.seen.add(signature)
                repairs += 1
                self._forget_after(step)
                self.checker.rollback(step)
                request = self._next_request(base, error)
                kind = "repair"
                yield RepairStarted(step, len(self.trace.attempts) + 1, str(error))
                continue
            yield OutputAccepted(Result(output, self.trace))
            return

    def _remember_rejected(self, error: StepError | OutputParseError) -> None:
        """Keep a value refused on its own account: by its step's checks, or by a cross-step
        check whose other steps come before it (they are kept, so it would fail again)."""
        text, self.failed_text = self.failed_text, None
        if not isinstance(error, StepError) or error.value is NO_VALUE:
            return
        if error.check is not None:
            check = next((c for c in cross_checks(self.schema) if c.name == error.check), None)
            if check is None or max(check.steps, key=self.order.index) != error.step:
                return  # later steps it reads are redone too: the value may pass then
        if text is None or text[0] != error.step:
            text = (error.step, value_key(error.value) or "")
        rejected = self.rejected.setdefault(error.step, [])
        if text[1] not in rejected:
            rejected.append(text[1])

    def _forget_after(self, step: str) -> None:
        """Steps after `step` are redone: their earlier failures may not recur, and what
        they had rejected may pass now (a check can read earlier steps)."""
        later = set(self.order[self.order.index(step) + 1 :])
        for name in later:
            self.rejected.pop(name, None)
        self.seen = {signature for signature in self.seen if signature[0] not in later}

    def _next_request(self, base: Request, failure: OutputError | None) -> Request:
        prefill = self.executor.backend.capabilities.prefill
        builder: PromptBuilder = self.executor.builder
        first = next((n for n in base.steps if n not in self.checker.raw), "")
        return builder.repair(
            base,
            accepted=self.checker.raw,
            failure=failure,
            prefill=prefill,
            rejected=self.rejected.get(first, ()),
            context=self.context,
        )

    async def _call_with_retries(
        self, base: Request, request: Request, kind: AttemptKind
    ) -> AsyncGenerator[Event, None]:
        retrying = self.executor.retry.retrying(deadline=self.deadline, before_sleep=self._retrying)
        first = True
        async for attempt in retrying:
            with attempt:
                for event in self.pending:
                    yield event
                self.pending.clear()
                if not first:
                    kind = "retry"
                    if all(name in self.checker.raw for name in base.steps):
                        return  # every step came before the drop: nothing left to ask for
                    if any(name in self.checker.raw for name in request.steps):
                        request = self._next_request(base, None)  # resume after kept steps
                first = False
                async for event in self._call(request, kind):
                    yield event

    def _retrying(self, error: BackendError, wait: float, number: int) -> None:
        self.pending.append(RetryScheduled(error, wait, len(self.trace.attempts)))

    async def _call(self, request: Request, kind: AttemptKind) -> AsyncGenerator[Event, None]:
        ex = self.executor
        loop = asyncio.get_running_loop()
        if self.deadline is not None and loop.time() >= self.deadline:
            raise DeadlineExceededError(f"the run's deadline of {ex.deadline} s passed")
        attempt = Attempt(len(self.trace.attempts) + 1, kind, request)
        self.trace.attempts.append(attempt)
        reader = _Reader(self, request, attempt)
        stream = ex.backend.stream(request, self._settings(kind, attempt.number))
        watchdog = _Watchdog(loop, ex.idle_timeout, self.deadline)
        started = loop.time()
        try:
            while True:
                watchdog.reading = True
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if watchdog.fired is None:
                        raise
                    watchdog.uncancel()
                    raise watchdog.error(ex.idle_timeout, ex.deadline) from None
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
            await stream.aclose()
            attempt.text = "".join(reader.parts)
            attempt.usage = reader.usage()
            attempt.elapsed = loop.time() - started

    def _settings(self, kind: AttemptKind, number: int) -> Settings:
        """The first call's settings; later calls with a new seed, and their first step
        (the one a repair redoes) at the repair temperature."""
        ex = self.executor
        settings = ex.settings
        if kind == "first":
            return settings
        seed = None if settings.seed is None else settings.seed + number - 1
        return replace(settings, first_step_temperature=ex.repair_temperature, seed=seed)

    def _failing_step(self, error: StepError | OutputParseError) -> str:
        if isinstance(error, StepError):
            return error.step
        return next(n for n in self.order if n not in self.checker.accepted)

    def _not_converging(self, error: OutputError, message: str) -> ConvergenceError:
        return ConvergenceError(
            message, last_error=error, accepted=dict(self.checker.accepted), trace=self.trace
        )


class _Reader:
    """Reads one call's chunks: parses, checks each completed step, counts tokens."""

    def __init__(self, run: RunLoop[Any], request: Request, attempt: Attempt) -> None:
        self.run = run
        self.attempt = attempt
        kept = [n for n in run.order if n in run.checker.raw] if request.prefill else []
        self.parser = StepParser([*kept, *request.steps])
        if request.prefill:
            self.parser.feed(request.prefill)  # the kept steps: already accepted
        self.seen = set(kept)
        self.tolerant = run.executor.backend.capabilities.output == "prompt"
        self.started = not self.tolerant  # prose before the object is skipped when tolerant
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.chunks = 0
        self.step_chunks = 0
        self.step: str | None = None
        self.reported: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False  # the JSON object is complete
        self.finished = False  # nothing more worth reading: prose after the object
        self.prompt_chars = sum(len(m["content"]) for m in request.messages) + len(request.prefill)

    def take(self, chunk: Chunk, elapsed: float) -> list[Event]:
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
            # the object is complete: read on only for the finish reason and usage
            self.finished = not text.isspace()
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
            accepted = self.run.checker.accept(name, value)
        except StepError as error:
            written = item.raw.strip()
            self.run.failed_text = (name, written) if written else None
            self.attempt.steps.append(StepRecord(name, value, elapsed, str(error)))
            self.attempt.stopped_early = not self.done
            raise
        self.attempt.steps.append(StepRecord(name, value, elapsed))
        return StepAccepted(name, accepted, self.attempt.number)

    def _count_step_tokens(self) -> None:
        """Chunks spent on the current step; past its `max_chunks`, it fails at once."""
        current = self.parser.current_step
        if current != self.step:
            self.step, self.step_chunks = current, 0
        if current is None:
            return
        self.step_chunks += 1
        limit = self.run.budgets.get(current)
        if limit is not None and self.step_chunks > limit:
            self.attempt.stopped_early = True
            info = next(s for s in steps(self.run.schema) if s.name == current)
            raise budget_error(info, limit)

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
        if self.reported is not None:
            return self.reported
        # no usage reported (a stream closed early reports none): estimate it
        return Usage(estimate_tokens(self.prompt_chars), self.chunks, estimated=True)


class _Watchdog:
    """Cancels the reading task when the stream is silent too long or the deadline passes.

    One timer per call, re-armed only when it fires: per chunk, reading costs a clock read.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, idle: float | None, deadline: float | None
    ) -> None:
        self.loop = loop
        self.idle = idle
        self.deadline = deadline
        self.task = asyncio.current_task()
        self.last = loop.time()
        self.reading = False
        self.fired: str | None = None
        self.handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        idle_due = None if self.idle is None else self.last + self.idle
        due = [t for t in (self.deadline, idle_due) if t is not None]
        if due and self.task is not None:
            self.handle = self.loop.call_at(min(due), self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if self.reading and self.task is not None:
            if self.deadline is not None and now >= self.deadline:
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
        if sys.version_info >= (3, 11) and self.task is not None:
            self.task.uncancel()

    def error(
        self, idle: float | None, deadline: float | None
    ) -> BackendError | DeadlineExceededError:
        if self.fired == "deadline":
            return DeadlineExceededError(f"the run's deadline of {deadline} s passed mid-stream")
        return BackendError(
            f"the stream was silent for {idle} s (idle_timeout); the call is retried",
            retryable=True,
        )

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


def _signature(error: StepError | OutputParseError, step: str) -> Signature:
    """Identity of a failure whatever its wording: step, error types and locations, and
    the rejected value (a new value failing the same check is progress, not a repeat)."""
    if isinstance(error, StepError):
        return error.signature()
    return (step, error.problem)
