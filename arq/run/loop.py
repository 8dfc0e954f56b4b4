"""The convergence loop of one run: stream, check each step as it ends, repair from the failure.

One `RunLoop` per run, built from the executor's frozen `RunConfig`. Each call streams the
model's answer through a `StreamReader` (`arq.run.stream`), which checks every step as
it completes; the first failure stops reading (the stream is closed, so no tokens are
paid for text that would be thrown away). What happens next is the repair policy's
(`arq.repair.Repairs`): which step to redo, whether the run is stuck or out of repairs,
and the plan of the next request, which the prompt builder renders. An answer cut at its
token limit after accepted steps is continued from the step it was cut in, on the repair
budget. Budgets never mix: `max_repairs` for output errors and continuations,
`advisory_repairs` for each advisory check, the `RetryPolicy` for transport errors. When
repairs do not converge, the run raises `ConvergenceError`, or with the "return" policy
ends with an `Unconverged`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from arq.errors import (
    BackendError,
    ConvergenceError,
    DeadlineExceededError,
    OutputError,
    OutputParseError,
    StepError,
    TruncatedOutputError,
)
from arq.events import (
    Event,
    OutputAccepted,
    OutputNotConverged,
    RepairStarted,
    RetryScheduled,
    StepFailed,
)
from arq.outcome import Unconverged, unconverged
from arq.prompt import Request
from arq.repair import Repairs
from arq.run.config import RunConfig
from arq.run.stream import StreamReader, read_call
from arq.schema import Reasoning
from arq.trace import Attempt, AttemptKind, Result, Trace
from arq.validation import StepChecker

if TYPE_CHECKING:
    from arq.telemetry.observer import RunObserver

__all__ = ["RunLoop"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)


class RunLoop(Generic[SchemaT]):
    """The state of one run: accepted steps, the trace, the budgets left.

    Args:
        config: What the run needs (backend, builder, budgets, settings).
        schema: The reasoning schema to fill.
        context: The run's context.
        examples: Example outputs shown in the prompt.
    """

    def __init__(
        self,
        config: RunConfig,
        schema: type[SchemaT],
        context: Mapping[str, Any] | None,
        examples: Sequence[BaseModel | Mapping[str, Any]],
    ) -> None:
        self.config = config
        self.schema = schema
        self.context = context
        self.examples = examples
        self.checker = StepChecker(schema, context=context)
        self.repairs = Repairs(
            schema,
            context,
            max_repairs=config.max_repairs,
            advisory_repairs=config.advisory_repairs,
        )
        if config.advisory_repairs == 0:
            self.checker.waive_advisory()
        self.trace = Trace(schema=schema.__name__, model=config.backend.name)
        self.deadline: float | None = None  # when the run's deadline passes, in loop time
        self.pending: list[Event] = []  # retries scheduled, yielded when the next call starts
        self.observer: RunObserver | None = None  # OpenTelemetry's view of the run, if on
        self.not_converged: BaseException | None = None  # why an Unconverged was returned

    async def events(self) -> AsyncGenerator[Event, None]:
        """Run to a valid output, yielding events as they happen."""
        observer = self.observer = self.config.telemetry.observe(self.schema, self.config.backend)
        if observer is not None:
            observer.attach()
        error: BaseException | None = None
        try:
            async with aclosing(self._events()) as events:
                async for event in events:
                    yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            if observer is not None:
                observer.finish(self.trace, self.checker.accepted, error or self.not_converged)

    async def _events(self) -> AsyncGenerator[Event, None]:
        if self.config.deadline is not None:
            self.deadline = asyncio.get_running_loop().time() + self.config.deadline
        base = self.config.builder.build(self.schema, self.context, examples=self.examples)
        request: Request = base
        kind: AttemptKind = "first"
        while True:
            try:
                async for event in self._call_with_retries(base, request, kind):
                    yield event
                output = self.checker.finish()  # model validators need the whole object
            except (StepError, OutputParseError) as error:
                step = self.repairs.step_to_redo(error, self.checker.accepted)
                yield StepFailed(step, error, len(self.trace.attempts))
                if isinstance(error, StepError) and self.checker.is_advisory(error.check):
                    if self.repairs.record_advisory(error, step):
                        self.checker.waived.add(error.check or "")
                    stop = None
                else:
                    stop = self.repairs.record(error, step)
                if stop is not None and self.config.unconverged == "return":
                    self.not_converged = self._not_converging(error, stop)
                    self.checker.rollback(step)
                    yield OutputNotConverged(self._unconverged(error, stop))
                    return
                if stop is not None:
                    raise self._not_converging(error, stop) from error
                self.checker.rollback(step)
                request, kind = self._next_request(base, error), "repair"
                yield RepairStarted(step, len(self.trace.attempts) + 1, str(error))
                continue
            except TruncatedOutputError as error:
                step = self._continuation_step(base, error)
                yield StepFailed(step, error, len(self.trace.attempts))
                request, kind = self._next_request(base, error), "continuation"
                number = len(self.trace.attempts) + 1
                yield RepairStarted(step, number, str(error), kind="continuation")
                continue
            advisories = tuple(self.checker.advisories)
            if self.observer is not None:
                self.observer.ok = True
            yield OutputAccepted(Result(output, self.trace, advisories=advisories))
            return

    def _continuation_step(self, base: Request, error: TruncatedOutputError) -> str:
        """The step to continue an answer cut at its token limit from (the first one not
        accepted); `error`, or one saying why, when it cannot be continued."""
        accepted = self.checker.accepted
        step = next((name for name in base.steps if name not in accepted), None)
        if step is None:
            raise error
        why = self.repairs.record_cut(step, accepted)
        if why is not None:
            if not accepted:
                raise error
            raise TruncatedOutputError(
                f"{error}; not continued: {why}", partial=error.partial, position=error.position
            ) from None
        self.checker.rollback(step)
        return step

    def _next_request(self, base: Request, failure: OutputError | None) -> Request:
        """The request that goes on from the accepted steps, after `failure` (None: after
        a stream that broke off)."""
        plan = self.repairs.plan(
            base.steps,
            base.allowed,
            accepted=self.checker.raw,
            failure=failure,
            prefill=self.config.backend.capabilities.prefill,
        )
        return self.config.builder.render_repair(base, plan)

    async def _call_with_retries(
        self, base: Request, request: Request, kind: AttemptKind
    ) -> AsyncGenerator[Event, None]:
        retrying = self.config.retry.retrying(deadline=self.deadline, before_sleep=self._retrying)
        limit = self.config.settings_for(kind, 1).max_tokens  # a retry keeps the call's limit
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
                observer = self.observer
                calls = (
                    self._call(request, kind, limit)
                    if observer is None
                    else self._observed(observer, request, kind, limit)
                )
                async with aclosing(calls):
                    async for event in calls:
                        yield event

    async def _observed(
        self,
        observer: RunObserver,
        request: Request,
        kind: AttemptKind,
        limit: int | None,
    ) -> AsyncGenerator[Event, None]:
        """`_call`, recorded by `observer` once the call has ended."""
        calls = len(self.trace.attempts)
        error: BaseException | None = None
        try:
            async with aclosing(self._call(request, kind, limit)) as events:
                async for event in events:
                    yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            if len(self.trace.attempts) > calls:  # the call started
                attempt = self.trace.attempts[-1]
                settings = replace(
                    self.config.settings_for(attempt.kind, attempt.number), max_tokens=limit
                )
                observer.call_ended(attempt, settings, error)

    def _retrying(self, error: BackendError, wait: float, number: int) -> None:
        self.pending.append(RetryScheduled(error, wait, len(self.trace.attempts)))

    def _call(
        self, request: Request, kind: AttemptKind, max_tokens: int | None
    ) -> AsyncGenerator[Event, None]:
        """Start one call: its attempt joins the trace, and its events are read as they come."""
        config = self.config
        loop = asyncio.get_running_loop()
        if self.deadline is not None and loop.time() >= self.deadline:
            raise DeadlineExceededError(f"the run's deadline of {config.deadline} s passed")
        attempt = Attempt(len(self.trace.attempts) + 1, kind, request)
        self.trace.attempts.append(attempt)
        tolerant = config.backend.capabilities.output == "prompt"
        reader = StreamReader(request, attempt, self.checker, tolerant=tolerant)
        settings = replace(config.settings_for(kind, attempt.number), max_tokens=max_tokens)
        chunks = config.backend.stream(request, settings)
        return read_call(
            chunks,
            reader,
            idle_timeout=config.idle_timeout,
            deadline=config.deadline,
            deadline_at=self.deadline,
        )

    def _unconverged(self, error: OutputError, message: str) -> Unconverged[SchemaT]:
        """What the run has, when its repairs did not converge (the "return" policy)."""
        checker = self.checker
        return unconverged(
            self.schema,
            dict(checker.accepted),
            self.trace,
            reason=message,
            last_error=error,
            advisories=checker.advisories,
        )

    def _not_converging(self, error: OutputError, message: str) -> ConvergenceError:
        return ConvergenceError(
            message, last_error=error, accepted=dict(self.checker.accepted), trace=self.trace
        )
