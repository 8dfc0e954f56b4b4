"""Closing the executor, its event loops, and batches that meet a bug: through the real openai
SDK over real HTTP, against the loopback test server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import arq
from arq import Executor
from arq.backends import OpenAIBackend
from arq.errors import ArqError, InternalError, StateError
from arq.prompt import Request
from arq.testing import FakeOpenAIServer, Reply, ScriptedBackend


class S(arq.Reasoning):
    """One step."""

    a: str = arq.answer("A?")


SLOW = Reply('{"a": "' + "word " * 40 + '"}', tokens_per_second=5)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def backend(server: FakeOpenAIServer) -> OpenAIBackend:
    return OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-0123456789")


def wait_for_requests(server: FakeOpenAIServer, count: int) -> None:
    """Wait until the server has received `count` requests (a generous bound on a hang)."""
    end = time.monotonic() + 10
    while len(server.requests) < count:
        assert time.monotonic() < end, f"{len(server.requests)} requests, not {count}"
        time.sleep(0.01)


def in_thread(call: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Start `call(*args)` in a thread; the list gets its result or its exception."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call(*args))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# --- close() ends the calls still running -------------------------------------------------


def test_close_ends_a_run_blocked_in_another_thread(server: FakeOpenAIServer) -> None:
    server.script(SLOW)
    ex = Executor(backend(server))
    thread, outcome = in_thread(ex.run, S, {})
    wait_for_requests(server, 1)
    ex.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], StateError)
    assert "closed" in str(outcome[0])
    assert server.requests[0].wait()
    assert server.requests[0].disconnected_early  # its stream was closed


def test_close_ends_a_map_blocked_in_another_thread(server: FakeOpenAIServer) -> None:
    server.script(SLOW, SLOW, SLOW)
    ex = Executor(backend(server))
    thread, outcome = in_thread(ex.map, S, [{}] * 3)
    wait_for_requests(server, 3)
    ex.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], StateError)
    assert all(request.wait() and request.disconnected_early for request in server.requests)


def test_every_call_after_close_raises_state_error(server: FakeOpenAIServer) -> None:
    server.script(Reply('{"a": "x"}'))
    ex = Executor(backend(server))
    assert ex.run(S, {}).output.a == "x"
    ex.close()
    ex.close()  # twice does nothing
    with pytest.raises(StateError, match="closed"):
        ex.run(S, {})
    with pytest.raises(StateError, match="closed"):
        ex.map(S, [{}])
    with pytest.raises(StateError, match="closed"):
        asyncio.run(ex.arun(S, {}))
    with pytest.raises(StateError, match="closed"):
        ex.stream(S, {})
    assert len(server.requests) == 1


# --- nothing on stderr ---------------------------------------------------------------------

PRELUDE = """
import asyncio, contextlib, gc, openai, arq
from arq.backends import OpenAIBackend
from arq.testing import FakeOpenAIServer, Reply, Status, Truncated

class S(arq.Reasoning):
    a: str = arq.answer("A?")

def closing_backend(server):
    # the server closes the connection after every answer, as some servers do
    client = openai.OpenAI(
        base_url=server.base_url, api_key="sk-test-0", default_headers={"Connection": "close"}
    )
    return OpenAIBackend("m", client=client)
"""


def stderr_of(script: str) -> str:
    """Run `PRELUDE` + `script` in a fresh interpreter with this checkout's arq; its stderr."""
    root = Path(arq.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = PRELUDE + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_runs_that_succeed_fail_or_are_cut_leave_stderr_clean() -> None:
    # an answer's SDK stream is closed by a task of its own once dropped; closing the
    # executor's loop before that task ran printed "Task was destroyed but it is pending!"
    err = stderr_of("""
        with FakeOpenAIServer() as server:
            ok, cut = Reply('{"a": "x"}'), Truncated('{"a": "x')
            replies = [ok, Status.rate_limited(retry_after=0), cut]
            for i in range(60):
                server.script(replies[i % 3])
                with arq.Executor(closing_backend(server), retry=arq.RetryPolicy(attempts=1)) as ex:
                    try:
                        ex.run(S, {})
                    except arq.ArqError:
                        pass
                gc.collect()
    """)
    assert err == ""


def test_an_abandoned_stream_leaves_stderr_clean() -> None:
    # an exception inside `async for` drops the run's nested generators unfinished; the
    # loop's shutdown closed them all at once, and they collided ("aclose(): asynchronous
    # generator is already running"), depending on the order it took them in
    err = stderr_of("""
        class T(arq.Reasoning):
            a: str = arq.query("A?")
            b: str = arq.answer("B?")

        slow = Reply('{"a": "x", "b": "' + "word " * 40 + '"}', tokens_per_second=20)
        with FakeOpenAIServer() as server:
            for i in range(8):
                server.script(slow)
                ex = arq.Executor(closing_backend(server))

                async def main(closing):
                    async with ex if closing else contextlib.nullcontext():
                        try:
                            async for event in ex.stream(T, {}):  # "a" accepted
                                raise KeyError("the caller's own bug")
                        except KeyError:
                            pass

                asyncio.run(main(closing=i % 2 == 0))
                ex.close()
            assert all(r.wait() and r.disconnected_early for r in server.requests)
    """)
    assert err == ""


def test_an_executor_never_closed_leaves_stderr_clean() -> None:
    # one dropped mid-script and one alive at exit: each stops its loop thread cleanly, and
    # the backend of the dropped one still works
    err = stderr_of("""
        server = FakeOpenAIServer().start()
        server.script(Reply('{"a": "x"}'), Reply('{"a": "y"}'), Reply('{"a": "z"}'))
        backend = OpenAIBackend("m", base_url=server.base_url)
        assert arq.Executor(backend).run(S, {}).output.a == "x"
        gc.collect()
        assert arq.Executor(backend).run(S, {}).output.a == "y"
        kept = arq.Executor(closing_backend(server))
        assert kept.run(S, {}).output.a == "z"
    """)
    assert err == ""


# --- a user's AsyncOpenAI client and a second event loop ----------------------------------


def test_a_users_async_client_on_a_second_event_loop_raises_state_error(
    server: FakeOpenAIServer,
) -> None:
    server.script(Reply('{"a": "x"}'))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test-0123456789")
    ex = Executor(OpenAIBackend("fake-model", client=client))
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(ex.arun(S, {})).output.a == "x"
        with pytest.raises(StateError, match=r"event loop.*openai\.OpenAI"):
            asyncio.run(ex.arun(S, {}))
        outcomes = ex.map(S, [{}, {}])  # the executor's own loop is another one too
        assert [type(o) for o in outcomes] == [StateError, StateError]
        ex.close()
        first.run_until_complete(client.close())
    finally:
        first.close()
    assert len(server.requests) == 1  # nothing was sent from the other loops


def test_a_users_async_client_serves_every_call_on_its_loop(server: FakeOpenAIServer) -> None:
    server.script(Reply('{"a": "x"}'), Reply('{"a": "y"}'), Reply('{"a": "z"}'))

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test-0") as client:
            ex = Executor(OpenAIBackend("fake-model", client=client), concurrency=1)
            outcomes = await ex.amap(S, [{}, {}])
            last = await ex.arun(S, {})
        return [o.output.a for o in [*outcomes, last] if isinstance(o, arq.Result)]

    assert asyncio.run(main()) == ["x", "y", "z"]


# --- map: one item's bug is that item's error ---------------------------------------------


def test_a_bug_in_one_run_is_that_items_internal_error() -> None:
    def reply(request: Request) -> str:
        if "ticket 2" in str(request.messages):
            raise KeyError("choices sk-live-abcdef123456")
        return '{"a": "x"}'

    contexts = [{"ticket": f"ticket {i}"} for i in range(4)]
    with Executor(ScriptedBackend(*[reply] * 4), concurrency=1) as ex:
        outcomes = ex.map(S, contexts)
    assert [type(o).__name__ for o in outcomes] == ["Result", "Result", "InternalError", "Result"]
    error = outcomes[2]
    assert isinstance(error, InternalError)
    assert isinstance(error, ArqError)
    assert error.kind == "KeyError"
    assert str(error).startswith("KeyError at ")
    assert "choices" in str(error)
    assert "report" in str(error)
    assert "sk-live-abcdef123456" not in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None


def test_cancelling_amap_cancels_the_whole_batch(server: FakeOpenAIServer) -> None:
    server.script(SLOW, SLOW, SLOW)
    ex = Executor(backend(server))

    async def go() -> None:
        task = asyncio.ensure_future(ex.amap(S, [{}] * 3))
        while len(server.requests) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert all(request.wait() and request.disconnected_early for request in server.requests)
    ex.close()
