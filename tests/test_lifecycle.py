"""Closing the executor, its event loops, and batches that meet a bug: through the real openai
SDK over real HTTP, against the loopback test server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import arq
from arq import Executor
from arq.backends import OpenAIBackend
from arq.errors import ArqError, InternalError
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
