"""`Executor`: run reasoning schemas against a backend, sync or async, one or many at once.

The executor is the only place that does I/O with a model. `arun` and `stream` run on the
caller's event loop; `run` and `map` run on a private event-loop thread the executor
keeps, so they also work where a loop is already running (a notebook) and keep their
connections open from one call to the next. Each run is an `arq.run.loop.RunLoop` built
from the executor's frozen `RunConfig`.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import CancelledError, Future
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pydantic import BaseModel

from arq.backends.base import Backend, Settings
from arq.errors import ArqError, InternalError, InvalidArgumentError, StateError
from arq.events import Event, OutputAccepted
from arq.prompt import PromptBuilder
from arq.retry import RetryPolicy
from arq.run.config import RunConfig
from arq.run.loop import RunLoop
from arq.schema import Reasoning
from arq.trace import Result, redact

__all__ = ["Executor"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)
T = TypeVar("T")
Context = Mapping[str, Any]
Examples = Sequence[BaseModel | Mapping[str, Any]]


class Executor:
    """Runs reasoning schemas on a backend until each output is valid.

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
            continuation_max_tokens=continuation_max_tokens,
        )
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self._thread = _LoopThread()
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

    async def arun(
        self,
        schema: type[SchemaT],
        context: Context | None = None,
        *,
        examples: Examples = (),
    ) -> Result[SchemaT]:
        """Run `schema` on `context` to a valid output. Cancelling it closes the stream."""
        self._check_open()
        events = RunLoop(self.config, schema, context, examples).events()
        try:
            async for event in events:
                if isinstance(event, OutputAccepted):
                    result: Result[SchemaT] = event.result
                    return result
        finally:
            await events.aclose()
        raise AssertionError("a run ended without a result or an error")  # pragma: no cover

    def run(
        self,
        schema: type[SchemaT],
        context: Context | None = None,
        *,
        examples: Examples = (),
    ) -> Result[SchemaT]:
        """`arun`, blocking; works with or without an event loop running in this thread.

        Raises `StateError` if the executor is closed, before or while the call runs.
        """
        return self._thread.call(self.arun(schema, context, examples=examples))

    async def amap(
        self,
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Result[SchemaT] | ArqError], None] | None = None,
    ) -> list[Result[SchemaT] | ArqError]:
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
        outcomes: list[Result[SchemaT] | ArqError | None] = [None] * len(items)

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

    def map(
        self,
        schema: type[SchemaT],
        contexts: Iterable[Context],
        *,
        concurrency: int | None = None,
        on_result: Callable[[int, Result[SchemaT] | ArqError], None] | None = None,
    ) -> list[Result[SchemaT] | ArqError]:
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
            raise StateError(_CLOSED)

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Executor:
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


async def _outcome(run: Awaitable[Result[SchemaT]]) -> Result[SchemaT] | ArqError:
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


class _LoopThread:
    """An event loop on a daemon thread, started on first use, for the blocking calls.

    `stop` ends it the way `asyncio.run` ends its loop, so nothing is left pending: the
    calls still running are cancelled (their callers get a `StateError`), then the
    asynchronous generators left open and the default executor are shut down. A stopped
    loop thread takes no more calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.closed = False

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise StateError(
                "Executor.run or map was called from inside a running executor task;"
                " use `await executor.arun(...)` / `amap(...)` there"
            )
        with self._lock:  # submitted under the lock, so `stop` finds it among the tasks
            if self.closed:
                coroutine.close()
                raise StateError(_CLOSED)
            future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._start())
        try:
            return future.result()
        except CancelledError:
            if self.closed:
                raise StateError("the executor was closed while this call was running") from None
            raise
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the run and closes its stream
            raise

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_serve, args=(loop,), name="arq-executor", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def stop(self, last: Callable[[], Awaitable[None]] | None = None) -> None:
        """End the calls still running, await `last()` on the loop, then stop the thread.

        Called from the loop's own thread (a finalizer run there), it does not wait.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            done = asyncio.run_coroutine_threadsafe(_shutdown(last), loop)
            done.add_done_callback(lambda _: loop.call_soon_threadsafe(loop.stop))
        if threading.current_thread() is thread:
            return
        try:
            done.result()
        finally:
            thread.join()


_CLOSED = "this Executor is closed; make a new one"
_SHUTDOWN_WAIT = 10.0  # seconds a cancelled task may take to end when the executor closes


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until `_shutdown` stops the loop, then close it."""
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _shutdown(last: Callable[[], Awaitable[None]] | None) -> None:
    """Cancel the loop's other tasks, await `last()`, and shut the loop down."""
    loop = asyncio.get_running_loop()
    try:
        await _end_tasks()
        if last is not None:
            await last()
    finally:
        await _end_tasks()  # among them, the closing of generators dropped while running
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()


async def _end_tasks() -> None:
    """Cancel every other task of this loop and wait for them to end."""
    for _ in range(3):  # a task that ends can start another (a generator's aclose)
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=_SHUTDOWN_WAIT)
