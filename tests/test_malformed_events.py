"""Stream events that are valid JSON of the wrong shape, sent as raw SSE bytes by the test
server and read by the real SDK: each is a typed, retryable `BackendError`, and usage
counts that are not integers count as no usage reported."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Iterator

import pytest

import arq
from arq import Executor, RetryPolicy
from arq.backends import OpenAIBackend
from arq.backends.base import Chunk
from arq.errors import ArqError, BackendError
from arq.events import RetryScheduled
from arq.prompt import PromptBuilder
from arq.testing import FakeOpenAIServer, Malformed, ReceivedRequest, Reply, Scripted
from tests.test_openai_backend import collect as collect_stream


class Item(arq.Reasoning):
    a: str = arq.answer("A?")


TEXT = '{"a": "x"}'
_HEAD = '{"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'


def event(body: str) -> str:
    """A chunk event: the envelope's id, object, created and model, then `body`."""
    return _HEAD + body + "}"


def choice(delta: str, finish_reason: str = "null") -> str:
    return event(f'"choices":[{{"index":0,"delta":{delta},"finish_reason":{finish_reason}}}]')


MALFORMED: dict[str, str] = {
    "content is a number": choice('{"content":123}', '"stop"'),
    "choices is an object": event('"choices":{"index":0,"delta":{"content":"x"}}'),
    "tool-call arguments are a number": choice(
        '{"tool_calls":[{"index":0,"function":{"name":"f","arguments":5}}]}'
    ),
    "refusal is a number": choice('{"refusal":7}'),
    "a choice is a string": event('"choices":["x"]'),
    "delta is an array": choice("[]"),
    "finish_reason is a number": choice('{"content":"x"}', "1"),
    "tool_calls is an object": choice('{"tool_calls":{"index":0}}'),
    "a tool call's function is a string": choice('{"tool_calls":[{"index":0,"function":"f"}]}'),
    "the event is a number": "123",
    "the event is null": "null",
    "the event is an array": "[]",
    "the event is a string": '"chunk"',
}

BAD_USAGE: dict[str, str] = {
    "a count is text": '{"prompt_tokens":"ten","completion_tokens":3,"total_tokens":13}',
    "a count is a fraction": '{"prompt_tokens":2.5,"completion_tokens":3,"total_tokens":5.5}',
    "a count is negative": '{"prompt_tokens":-3,"completion_tokens":3,"total_tokens":0}',
    "a count is null": '{"prompt_tokens":null,"completion_tokens":3,"total_tokens":3}',
    "usage is a number": "5",
}


def usage_event(usage: str) -> str:
    return event(f'"choices":[],"usage":{usage}')


def bad_usage_reply(text: str, usage: str) -> Malformed:
    """`text` whose only usage report is `usage`, sent before its last character (so a
    reader that stops at the end of the object still reads it)."""
    return Malformed(Reply(text, usage=None), after_chars=len(text) - 1, data=usage_event(usage))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


async def instant(seconds: float) -> None:
    """No wait between retries."""


def executor(server: FakeOpenAIServer, attempts: int = 2) -> Executor:
    backend = OpenAIBackend("m", base_url=server.base_url)
    return Executor(backend, retry=RetryPolicy(attempts=attempts, sleep=instant, jitter=0))


async def collect(server: FakeOpenAIServer) -> tuple[list[Chunk], BaseException | None]:
    backend = OpenAIBackend("m", base_url=server.base_url)
    return await collect_stream(backend, PromptBuilder().build(Item, {}))


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_event_of_the_wrong_shape_is_a_retryable_backend_error(
    server: FakeOpenAIServer, data: str
) -> None:
    server.script(Malformed(Reply(TEXT, chunk_chars=3), after_chars=3, data=data))
    chunks, error = asyncio.run(collect(server))
    assert isinstance(error, BackendError), f"expected a BackendError, got {error!r}"
    assert error.retryable
    assert error.status is None
    assert "malformed event" in str(error)
    assert (error.__cause__, error.__context__) == (None, None)
    assert "".join(c.text for c in chunks) == TEXT[:3]  # what came before the event


def test_the_error_names_the_field_and_its_type(server: FakeOpenAIServer) -> None:
    server.script(Malformed(Reply(TEXT), data=MALFORMED["content is a number"]))
    _, error = asyncio.run(collect(server))
    assert str(error) == (
        "the model service sent a malformed event: "
        "choices[0].delta.content is a number, not a string"
    )


def test_a_run_retries_after_a_malformed_event(server: FakeOpenAIServer) -> None:
    server.script(Malformed(Reply(TEXT), after_chars=4, data=MALFORMED["choices is an object"]))
    server.script(Reply(TEXT))

    async def run() -> list[object]:
        ex = executor(server)
        try:
            return [e async for e in ex.stream(Item, {})]
        finally:
            await ex.aclose()

    events = asyncio.run(run())
    retries = [e for e in events if isinstance(e, RetryScheduled)]
    assert len(retries) == 1
    assert "choices is an object, not an array" in str(retries[0].error)
    assert len(server.requests) == 2


def test_map_gives_each_item_a_typed_error_for_a_malformed_event(
    server: FakeOpenAIServer,
) -> None:
    """The issue's reproduction: every reply holds `"content": 123`."""
    server.responder = lambda _: Malformed(Reply(""), data=MALFORMED["content is a number"])
    with executor(server) as ex:
        outcomes = ex.map(Item, [{}] * 3)
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, BackendError)
        assert outcome.retryable
    assert len(server.requests) == 6  # each item tried twice


@pytest.mark.parametrize("usage", BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_usage_that_is_not_integers_counts_as_none_reported(
    server: FakeOpenAIServer, usage: str
) -> None:
    server.script(bad_usage_reply(TEXT, usage))
    chunks, error = asyncio.run(collect(server))
    assert error is None
    assert "".join(c.text for c in chunks) == TEXT
    assert [c.usage for c in chunks if c.usage is not None] == []


@pytest.mark.parametrize("usage", BAD_USAGE.values(), ids=BAD_USAGE.keys())
def test_a_run_with_usage_that_is_not_integers_estimates_it(
    server: FakeOpenAIServer, usage: str
) -> None:
    server.script(bad_usage_reply(TEXT, usage))
    with executor(server) as ex:
        result = ex.run(Item, {})
    assert result.output.a == "x"
    assert result.usage.estimated
    assert isinstance(result.usage.prompt_tokens, int)
    assert isinstance(result.usage.completion_tokens, int)
    assert result.usage.total_tokens > 0


# --- many items, every malformed event --------------------------------------------------

ITEM = re.compile(r"## item\n(\d+)")


def plan(count: int, seed: int) -> list[str]:
    """What each item's replies hold: "good", a malformed event, or bad usage; every kind
    appears at least once, the rest chosen with `seed`."""
    kinds = ["good", *(f"event: {k}" for k in MALFORMED), *(f"usage: {k}" for k in BAD_USAGE)]
    rng = random.Random(seed)
    chosen = kinds + [rng.choice(["good", *kinds]) for _ in range(count - len(kinds))]
    rng.shuffle(chosen)
    return chosen


def test_two_hundred_items_with_every_malformed_event(server: FakeOpenAIServer) -> None:
    kinds = plan(200, seed=18)
    rng = random.Random(1818)
    offsets = [rng.randint(0, 12) for _ in kinds]

    def reply(request: ReceivedRequest) -> Scripted:
        found = ITEM.search(json.dumps(request.body["messages"]).replace("\\n", "\n"))
        assert found is not None
        number = int(found.group(1))
        text = json.dumps({"a": f"item {number}"})
        kind, _, name = kinds[number].partition(": ")
        if kind == "event":
            return Malformed(Reply(text), after_chars=offsets[number], data=MALFORMED[name])
        if kind == "usage":
            return bad_usage_reply(text, BAD_USAGE[name])
        return Reply(text)

    server.responder = reply
    with executor(server) as ex:
        outcomes = ex.map(Item, [{"item": n} for n in range(200)], concurrency=16)

    assert len(outcomes) == 200
    for number, (kind, outcome) in enumerate(zip(kinds, outcomes, strict=True)):
        assert isinstance(outcome, arq.Result | ArqError), (number, kind, outcome)
        if kind.startswith("event"):
            assert isinstance(outcome, BackendError), (number, kind, outcome)
            assert outcome.retryable
            continue
        assert isinstance(outcome, arq.Result), (number, kind, outcome)
        assert outcome.output.a == f"item {number}"
        assert outcome.usage.estimated is kind.startswith("usage")
