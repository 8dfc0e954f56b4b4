"""`LoopThread`: the event loop on a thread of its own that `Executor.run` and `map` use."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import CancelledError, Future
from typing import Any, TypeVar

from arq.errors import StateError

__all__ = ["CLOSED", "LoopThread"]

T = TypeVar("T")


class LoopThread:
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
                raise StateError(CLOSED)
            # the caller's context (its current span, ...) goes with the call to the loop
            within = _within(contextvars.copy_context(), coroutine)
            future: Future[T] = asyncio.run_coroutine_threadsafe(within, self._start())
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


CLOSED = "this Executor is closed; make a new one"
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


async def _within(context: contextvars.Context, coroutine: Coroutine[Any, Any, T]) -> T:
    """Await `coroutine` in a task that runs in a copy of `context`.

    A task copies the context current when it is created; `create_task(context=...)`
    needs Python 3.11, so the task is created inside `context.run`. Cancelling this
    coroutine's task cancels the inner one.
    """
    task: asyncio.Task[T] = context.run(asyncio.ensure_future, coroutine)
    return await task
