"""`Executor`: run reasoning schemas against a backend, sync or async, one or many at once.

The executor is the only place that does I/O with a model. `arun` and `stream` run on the
caller's event loop; `run` and `map` run on a private event-loop thread the executor
keeps, so they also work where a loop is already running (a notebook) and keep their
connections open from one call to the next. Each run is an `arq.run.loop.RunLoop` built
from the executor's frozen `RunConfig`.
"""

from __future__ import annotations

import asyncio
import traceback
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, overload

from pydantic import BaseModel
from typing_extensions import TypeVar

from arq.backends.base import Backend, Settings
from arq.errors import ArqError, InternalError, InvalidArgumentError, StateError
from arq.events import Event, OutputAccepted, OutputNotConverged
from arq.outcome import Unconverged, UnconvergedPolicy
from arq.prompt import PromptBuilder
from arq.retry import RetryPolicy
from arq.run.config import RunConfig
from arq.run.loop import RunLoop
from arq.run.thread import CLOSED, LoopThread
from arq.schema import Reasoning
from arq.telemetry import Telemetry
from arq.trace import Result, redact

__all__ = ["Executor"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)
T = TypeVar("T")
PolicyT = TypeVar("PolicyT", bound=UnconvergedPolicy, default=Literal["raise"])
Context = Mapping[str, Any]
Examples = Sequence[BaseModel | Mapping[str, Any]]
Raises = Literal["raise"]
Outcome = Result[SchemaT] | Unconverged[SchemaT] | ArqError


class Executor(Generic[PolicyT]):
    """Runs reasoning schemas on a backend until each output is valid.

    The type parameter is the `unconverged` policy, so a type checker knows that only an
    `Executor(..., unconverged="return")` may return an `Unconverged`.

    The arguments are checked once and kept in `config`, a frozen
    `arq.run.config.RunConfig` that every run reads (and that the attributes of the same
    names read); `concurrency` is the executor's own.

    Args:
        backend: The model service (`arq.backends.OpenAIBackend`, `LlamaCppBackend`, ...).
        builder: Renders the prompts; the default `PromptBuilder()` if None.
        max_repairs: Repair calls allowed per run after output errors (a step failed its
            checks, or the JSON broke a rule). 0 never repairs.
        retry: Transport retries per call (timeouts, dropped streams, 408/409/429/5xx), a
            separate budget from repairs.
        temperature: Sampling temperature sent with each call (None: the server's).
        repair_temperature: Temperature of the step a repair redoes, if different. Greedy
            decoding tends to write the same wrong value again; some randomness gives a
            repair a chance. The steps after it are written at `temperature` where the
            backend can change it within an answer (the embedded model); a service that
            takes one temperature per answer samples the whole repair at this one.
        max_tokens: Output token limit of each call (None: the server's).
        continuation_max_tokens: Output token limit of a call that continues an answer
            cut at `max_tokens` after some steps were accepted (None: twice `max_tokens`).
        seed: Sampling seed, where the server honours one.
        deadline: Seconds a whole run may take, retries and repairs included.
        idle_timeout: Seconds of silence allowed between two chunks of a stream; a silent
            stream is closed and the call retried.
        concurrency: Runs at once in `map` / `amap` unless given there.
        telemetry: What the runs report to OpenTelemetry, when it is installed: spans of
            each run and model call, and metrics (`arq.telemetry.Telemetry`; None: the
            global providers, no message content). `Telemetry(enabled=False)` records
            nothing.
        advisory_repairs: Repairs allowed per advisory check (`arq.check(...,
            advisory=True)`), apart from `max_repairs`; after them its failures are
            recorded on the result (`Result.advisories`) and the run goes on.
        unconverged: When repairs do not converge: "raise" `ConvergenceError` (the
            default), or "return" an `arq.Unconverged` (accepted steps, the last value of
            each other step and the checks it failed), which is not a `Result`.

    Raises:
        InvalidArgumentError: `backend` does not implement `arq.backends.Backend`, or a
            count or a time is out of range.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        builder: PromptBuilder | None = None,
        max_repairs: int = 2,
        retry: RetryPolicy | None = None,
        temperature: float | None = None,
        repair_temperature: float | None = None,
        max_tokens: int | None = None,
        continuation_max_tokens: int | None = None,
        seed: int | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = 60.0,
        concurrency: int = 8,
        telemetry: Telemetry | None = None,
        advisory_repairs: int = 1,
        unconverged: PolicyT = "raise",  # type: ignore[assignment]  # the TypeVar's default
    ) -> None:
        self.config = RunConfig(
            backend,
            builder=builder or PromptBuilder(),
            max_repairs=max_repairs,
            retry=retry or RetryPolicy(),
            settings=Settings(max_tokens=max_tokens, temperature=temperature, seed=seed),
            repair_temperature=temperature if repair_temperature is None else repair_temperature,
            deadline=deadline,
            idle_timeout=idle_timeout,
            telemetry=Telemetry() if telemetry is None else telemetry,
            continuation_max_tokens=continuation_max_tokens,
            unconverged=unconverged,
            advisory_repairs=advisory_repairs,
        )
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self._thread = LoopThread()
        # an executor never closed still stops its loop thread cleanly, when it is
        # collected or at exit; it leaves the backend open (it may be shared)
        weakref.finalize(self, self._thread.stop)

    @property
    def backend(self) -> Backend:
        """The model service."""
        return self.config.backend

    @property
    def builder(self) -> PromptBuilder:
        """The prompt builder."""
        return self.config.builder

    @property
    def max_repairs(self) -> int:
        """Repair calls allowed per run."""
        return self.config.max_repairs

    @property
    def retry(self) -> RetryPolicy:
        """The transport retry policy."""
        return self.config.retry

    @property
    def settings(self) -> Settings:
        """The sampling settings of each run's first call."""
        return self.config.settings

    @property
    def repair_temperature(self) -> float | None:
        """The temperature of the step a repair redoes."""
        return self.config.repair_temperature

    @property
    def deadline(self) -> float | None:
        """Seconds a whole run may take."""
        return self.config.deadline

    @property
    def idle_timeout(self) -> float | None:
        """Seconds of silence allowed between two chunks of a stream."""
        return self.config.idle_timeout

    def stream(
        self,
        schema: type[SchemaT],
        context: Context | None = None,
        *,
        examples: Examples = (),
    ) -> AsyncIterator[Event]:
        """The events of one run as they happen; the last, `OutputAccepted`, holds the result.

        Raises (while iterating): `ConvergenceError`, `TruncatedOutputError`,
        `RefusalError`, `BackendError` (retries spent), `DeadlineExceededError`.
        `StateError` at once if the executor is closed.

        The run goes on in a task of its own and its events queue here; leaving the
        `async for` early (a `break`, an exception) cancels it and closes its stream.
        """
        self._check_open()
        return _in_task(RunLoop(self.config, schema, context, examples).events())

    @overload
    async def arun(
        self: Executor[Raises],
        schema: type[SchemaT],
        context: Context | None = None,
        *,
        examples: Examples = (),
    ) -> Result[SchemaT]: ...
    @overload
    async def arun(
        self, schema: type[SchemaT], context: Context | None = None, *, examples: Examples = ()
    ) -> Result[SchemaT] | Unconverged[SchemaT]: ...
    async def arun(
        self, schema: type[SchemaT], context: Context | None = None, *, examples: Examples = ()
    ) -> Result[SchemaT] | Unconverged[SchemaT]:
        """Run `schema` on `context` to a valid output (or, with `unconverged="return"`,
        to an `Unconverged` when repairs do not converge). Cancelling it closes the stream."""
        self._check_open()
        events = RunLoop(self.config, schema, context, examples).events()
        try:
            async for event in events:
                if isinstance(event, OutputAccepted):
                    result: Result[SchemaT] = event.result
                    return result
                if isinstance(event, OutputNotConverged):
                    unconverged: Unconverged[SchemaT] = event.unconverged
                    return unconverged
        finally:
            await events.aclose()
        raise AssertionError("a run ended without a result or an error")  # pragma: no cover

    @overload
    def run(
        self: Executor[Raises],
        schema: type[SchemaT],
        context: Context | None = None,
        *,
        examples: Examples = (),
    ) -> Result[SchemaT]: ...
    @overload
    def run(
        self, schema: type[SchemaT], context: Context | None = None, *, examples: Examples = ()
    ) -> Result[SchemaT] | Unconverged[SchemaT]: ...
    def run(
        self, schema: type[SchemaT], context: Context | None = None, *, examples: Examples = ()
    ) -> Result[SchemaT] | Unconverged[SchemaT]:
        """`arun`, blocking; works with or without an event loop running in this thread.

        Raises `StateError` if the executor is closed, before or while the call runs.
        """
        return self._thread.call(self.arun(schema, context, examples=examples))

    @overload
    async def amap(
        self: Executor[Raises],
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Result[SchemaT] | ArqError], None] | None = None,
    ) -> list[Result[SchemaT] | ArqError]: ...
    @overload
    async def amap(
        self,
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Outcome[SchemaT]], None] | None = None,
    ) -> list[Outcome[SchemaT]]: ...
    async def amap(
        self,
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """Run `schema` on every context, at most `concurrency` at once.

        Results come in input order; each item is its `Result` or the `ArqError` that
        ended its run, so one failure does not abort the batch: any other exception from
        a run is a bug in arq or the backend, and becomes that item's `InternalError`.
        `on_result(index, outcome)` is called as each run ends (for progress output).
        Cancelling `amap` (Ctrl-C in `map`) cancels every run of the batch.
        """
        self._check_open()
        items = list(contexts)
        limit = asyncio.Semaphore(concurrency or self.concurrency)
        outcomes: list[Outcome[SchemaT] | None] = [None] * len(items)

        async def one(index: int, context: Context) -> None:
            async with limit:
                outcome = await _outcome(self.arun(schema, context))
            outcomes[index] = outcome
            if on_result is not None:
                on_result(index, outcome)

        tasks = [asyncio.ensure_future(one(i, c)) for i, c in enumerate(items)]
        try:
            await asyncio.gather(*tasks)
        finally:
            # cancelled, or `on_result` raised: the other runs stop and close their streams
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        return [outcome for outcome in outcomes if outcome is not None]

    @overload
    def map(
        self: Executor[Raises],
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Result[SchemaT] | ArqError], None] | None = None,
    ) -> list[Result[SchemaT] | ArqError]: ...
    @overload
    def map(
        self,
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Outcome[SchemaT]], None] | None = None,
    ) -> list[Outcome[SchemaT]]: ...
    def map(
        self,
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """`amap`, blocking."""
        call = self.amap(schema, contexts, concurrency=concurrency, on_result=on_result)
        return self._thread.call(call)

    async def aclose(self) -> None:
        """Close the backend's connections on this loop."""
        await self.backend.aclose()

    def close(self) -> None:
        """Stop the executor's event-loop thread and close the backend there, if it started.

        A `run` or `map` still running in another thread ends with `StateError`; so does
        every later call. Closing twice does nothing.
        """
        self._thread.stop(self.backend.aclose)

    def _check_open(self) -> None:
        if self._thread.closed:
            raise StateError(CLOSED)

    def __enter__(self) -> Executor[PolicyT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Executor[PolicyT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _in_task(events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    """`events`, driven by a task of their own.

    A run's events come from generators nested in one another. Dropped unfinished, they
    would be closed by the loop's shutdown all at once and collide ("aclose():
    asynchronous generator is already running"); a task ending or cancelled closes them
    in order, and this generator, the only one left to the loop, holds none.
    """
    queue: asyncio.Queue[Event | None] = asyncio.Queue()

    async def drive() -> None:
        async with aclosing(events):
            async for event in events:
                queue.put_nowait(event)

    task = asyncio.ensure_future(drive())
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
        await task  # the run's error, if it failed
    finally:
        task.cancel()
        if not task.done():
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # raised above, or the caller left first: not an unread error


async def _outcome(run: Awaitable[T]) -> T | ArqError:
    """The result of `run`, or the error that ended it as an `ArqError`."""
    try:
        return await run
    except ArqError as error:
        return error
    except Exception as error:  # one item's bug must not end the batch
        unexpected = error
    # built outside the `except` block, so no chain leads to an exception that may hold a secret
    return _internal_error(unexpected)


def _internal_error(error: Exception) -> InternalError:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    kind = type(error).__name__
    return InternalError(
        redact(f"{kind}{where}: {error}; a bug in arq or the backend, please report it"),
        kind=kind,
    )
