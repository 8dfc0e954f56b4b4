"""Keys of several shapes, given in each way the backend takes them, echoed by the server in
401, 429 and 503 bodies: no text arq writes or raises holds them."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import arq
from arq import Executor, RetryPolicy
from arq.backends import OpenAIBackend
from arq.errors import BackendError
from arq.events import Event, RetryScheduled
from arq.run.loop import RunLoop
from arq.testing import FakeOpenAIServer, RecordingBackend, Reply, Status

# Every key holds SECRET, so a test can look for any piece of it that got through.
KEYS: dict[str, str] = {
    "openai": "sk-proj-SECRET123abcdef",
    "groq": "gsk_SECRET123abcdefgh",
    "google": "AIzaSyD-SECRET123_abcdefghij",
    "azure": "SECRET0123456789abcdef01234567",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.SECRET123.c2lnbmF0dXJl",
    "punctuated": "SECRET/key+with=punct:1",
}
WAYS = ["api_key", "sync_client", "async_client", "x-goog-api-key", "api-key", "authorization"]


class Item(arq.Reasoning):
    a: str = arq.answer("A?")


OK = '{"a": "x"}'


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


async def instant(seconds: float) -> None:
    """No wait between retries."""


def client(server: FakeOpenAIServer, key: str, way: str) -> openai.OpenAI | openai.AsyncOpenAI:
    """A client given `key` the `way` named: as its key, or in a credential header."""
    url = server.base_url
    if way == "async_client":
        return openai.AsyncOpenAI(base_url=url, api_key=key)
    if way in ("api_key", "sync_client"):
        return openai.OpenAI(base_url=url, api_key=key)
    value = f"Bearer {key}" if way == "authorization" else key
    return openai.OpenAI(base_url=url, api_key="unused", default_headers={way: value})


def echoes(key: str) -> list[list[Status | Reply]]:
    """Three runs: a 401, a 429 then a good reply, two 503s; each error echoes `key`."""
    return [
        [Status(401, message=f"Invalid API key: {key}")],
        [Status(429, body={"error": {"message": f"Rate limit for {key}", "key": key}}), Reply(OK)],
        [Status(503, message=f"Overloaded ({key})"), Status(503, body=f"no upstream for {key}")],
    ]


async def one_run(executor: Executor, trace_path: Path) -> tuple[list[Event], list[Any]]:
    """The events of one run and what it leaves: its error and its trace (also as JSONL)."""
    loop = RunLoop(executor.config, Item, {}, ())
    events: list[Event] = []
    errors: list[BaseException] = []
    try:
        async for event in loop.events():
            events.append(event)
    except BackendError as error:
        errors.append(error)
    loop.trace.to_jsonl(trace_path, append=True)
    return events, [*errors, *(a.error for a in loop.trace.attempts)]


def exception_texts(error: BaseException) -> list[str]:
    """Everything an exception shows: its message, repr, formatted traceback, and those
    of every exception reachable through its cause and context."""
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(vars(current))]
        todo += [current.__cause__, current.__context__]
    return texts


@pytest.mark.parametrize(("shape", "way"), list(zip(KEYS, WAYS, strict=True)))
def test_a_key_echoed_by_the_server_appears_nowhere(
    server: FakeOpenAIServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    shape: str,
    way: str,
) -> None:
    key = KEYS[shape]
    cassette = tmp_path / "cassette.json"
    trace = tmp_path / "trace.jsonl"
    retry = RetryPolicy(attempts=2, sleep=instant, jitter=0)
    caplog.set_level(logging.DEBUG)

    async def runs() -> list[Any]:
        given = client(server, key, way)
        if way == "api_key":
            inner = OpenAIBackend("m", base_url=server.base_url, api_key=key)
        else:
            inner = OpenAIBackend("m", client=given)
        executor = Executor(RecordingBackend(inner, cassette), retry=retry)
        seen: list[Any] = []
        try:
            for script in echoes(key):
                server.script(*script)
                events, left = await one_run(executor, trace)
                seen += [*events, *left]
        finally:
            await executor.aclose()
            await given.close() if isinstance(given, openai.AsyncOpenAI) else given.close()
        return seen

    seen = asyncio.run(runs())
    errors = [s for s in seen if isinstance(s, BackendError)]
    retries = [s for s in seen if isinstance(s, RetryScheduled)]
    assert [e.status for e in errors] == [401, 503]  # the 429 was retried and succeeded
    assert [r.error.status for r in retries] == [429, 503]
    logging.getLogger("arq").exception("the run failed", exc_info=errors[0])  # as a user would

    texts = [repr(s) for s in seen]
    for error in [*errors, *(r.error for r in retries)]:
        texts += exception_texts(error)
    texts += [trace.read_text(encoding="utf-8"), cassette.read_text(encoding="utf-8")]
    formatter = logging.Formatter()
    texts += [formatter.format(r) for r in caplog.records if r.name.split(".")[0] == "arq"]
    texts += [repr(request.headers) for request in server.requests]
    leaks = [text for text in texts if "SECRET" in text]
    assert leaks == []
    assert "Invalid API key: ***" in str(errors[0])  # the message is kept, the key masked
    assert errors[0].request_id == "req_fake1"
