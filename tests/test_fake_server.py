"""The fake OpenAI server, exercised through the real openai SDK over loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from enum import Enum
from typing import Any, Literal

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from pydantic import BaseModel, Field

from arq.testing import (
    DropAfter,
    FakeOpenAIServer,
    Malformed,
    ReceivedRequest,
    Reply,
    SchemaResponder,
    Stall,
    Status,
    Truncated,
    Usage,
    schema_instance,
    split_pieces,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say something."}]
TEXT = '{"request": "a refund", "order_id": "A-1234", "decision": "reply"}'
TOOL: Any = {
    "type": "function",
    "function": {"name": "answer", "parameters": {"type": "object", "properties": {}}},
}
FORCE_TOOL: Any = {"type": "function", "function": {"name": "answer"}}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as made:
        yield made


def stream(client: openai.OpenAI, **options: Any) -> list[ChatCompletionChunk]:
    """All chunks of one streamed request."""
    options = {"model": "gpt-test", "messages": MESSAGES} | options
    with client.chat.completions.create(stream=True, **options) as chunks:
        return list(chunks)


def content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def read_into(client: openai.OpenAI, received: list[str]) -> None:
    """Stream one request, keeping each content piece as it arrives, until it ends or fails."""
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as chunks:
        received.extend(c.choices[0].delta.content or "" for c in chunks if c.choices)


def only_request(server: FakeOpenAIServer) -> ReceivedRequest:
    (request,) = server.requests
    assert request.wait(), "the server never finished answering"
    return request


# --- replies ------------------------------------------------------------------------------


def test_streamed_reply_reassembles_with_usage(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(TEXT))
    chunks = stream(client, stream_options={"include_usage": True})
    pieces = [c.choices[0].delta.content or "" for c in chunks[1:-2]]
    assert content(chunks) == TEXT
    assert len(pieces) > 10
    assert all(1 <= len(p) <= 8 for p in pieces)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"gpt-test"}
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.completion_tokens == len(pieces)
    assert usage.prompt_tokens == 4  # "Say something." is 14 characters
    request = only_request(server)
    assert request.body["model"] == "gpt-test"
    assert request.path == "/v1/chat/completions"
    assert (request.completed, request.disconnected_early, request.sent_chars) == (
        True,
        False,
        len(TEXT),
    )


@pytest.mark.parametrize(
    ("reply", "options"),
    [(Reply(TEXT), {}), (Reply(TEXT, usage=None), {"stream_options": {"include_usage": True}})],
)
def test_usage_chunk_only_when_asked_and_given(
    server: FakeOpenAIServer, client: openai.OpenAI, reply: Reply, options: dict[str, Any]
) -> None:
    server.script(reply)
    chunks = stream(client, **options)
    assert content(chunks) == TEXT
    assert [c.usage for c in chunks if c.usage is not None] == []


def test_fixed_chunks_and_pace(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Reply("abcdefghij", chunk_chars=4, tokens_per_second=20))
    started = time.monotonic()
    chunks = stream(client)
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["abcd", "efgh", "ij"]
    assert time.monotonic() - started >= 0.09  # two pauses of 50 ms between three pieces


@pytest.mark.parametrize(
    ("reply", "finish_reason"),
    [(Reply(TEXT, usage=Usage(7, 3)), "stop"), (Truncated(TEXT), "length")],
)
def test_non_streamed_reply(
    server: FakeOpenAIServer, client: openai.OpenAI, reply: Reply, finish_reason: str
) -> None:
    server.script(reply)
    completion = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == finish_reason
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    if reply.usage == Usage(7, 3):
        assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (7, 10)
    else:
        assert completion.usage.completion_tokens == len(split_pieces(TEXT))
    assert only_request(server).sent_chars == len(TEXT)


def test_credentials_are_redacted(server: FakeOpenAIServer) -> None:
    server.script(Reply("ok"))
    with openai.OpenAI(
        base_url=server.base_url,
        api_key="sk-secret-123",
        default_headers={"api-key": "sk-secret-123"},
        max_retries=0,
    ) as client:
        client.chat.completions.create(model="m", messages=MESSAGES)
    headers = only_request(server).headers
    assert headers["authorization"] == "Bearer [REDACTED]"
    assert headers["api-key"] == "[REDACTED]"
    assert not [v for v in headers.values() if "secret" in v]
    assert headers["content-type"] == "application/json"  # other headers are kept


KEY_HEADERS = [
    "x-goog-api-key",
    "x-api-key",
    "api-key",
    "anthropic-api-key",
    "x-auth-token",
    "ocp-apim-subscription-key",
]


@pytest.mark.parametrize("name", KEY_HEADERS)
def test_api_key_headers_of_any_provider_are_redacted(server: FakeOpenAIServer, name: str) -> None:
    server.script(Reply("ok"))
    secret = "AIzaSyD-gsk_SECRET123abcdefgh"  # no sk- prefix: only the name gives it away
    with openai.OpenAI(
        base_url=server.base_url, api_key="k", default_headers={name: secret}, max_retries=0
    ) as client:
        client.chat.completions.create(model="m", messages=MESSAGES)
    recorded = only_request(server).headers
    assert recorded[name] == "[REDACTED]"
    assert not [v for v in recorded.values() if "SECRET" in v]


def test_refusal_streams_as_refusal_pieces(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Reply(refusal="I can't help with that."))
    chunks = stream(client)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.refusal or "" for d in deltas) == "I can't help with that."
    assert len([d for d in deltas if d.refusal]) > 3
    assert [d.content for d in deltas if d.content] == []


@pytest.mark.parametrize(
    ("reply", "tool_choice"),
    [(Reply(TEXT), FORCE_TOOL), (Reply(TEXT), "required"), (Reply(TEXT, tool_call="auto"), "auto")],
)
def test_tool_call_streams_arguments(
    server: FakeOpenAIServer, client: openai.OpenAI, reply: Reply, tool_choice: Any
) -> None:
    server.script(reply)
    chunks = stream(client, tools=[TOOL], tool_choice=tool_choice)
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
    first = calls[0][0] if calls[0] else None
    assert first is not None
    assert first.function is not None
    assert (first.id, first.type, first.function.name) == (
        "call_chatcmpl-fake1",
        "function",
        "answer",
    )
    arguments = [call[0].function.arguments for call in calls if call and call[0].function]
    assert "".join(a or "" for a in arguments) == TEXT
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert content(chunks) == ""


def test_tool_offered_but_not_forced_gets_content(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.script(Reply(TEXT))
    chunks = stream(client, tools=[TOOL], tool_choice="auto")
    assert content(chunks) == TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_endpoint(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["fake-model"]
    assert only_request(server).path == "/v1/models"


# --- HTTP errors ---------------------------------------------------------------------------


def test_rate_limit_carries_retry_after(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Status.rate_limited(3))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


def test_sdk_retries_after_retry_after_ms(server: FakeOpenAIServer) -> None:
    server.script(Status(429, retry_after_ms=20), Reply("ok"))
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=1) as client:
        completion = client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "ok"
    assert [r.body["model"] for r in server.requests] == ["m", "m"]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
    ],
)
def test_status_maps_to_sdk_error(
    server: FakeOpenAIServer, client: openai.OpenAI, code: int, error: type[openai.APIStatusError]
) -> None:
    server.script(Status(code, message=f"fake {code}"))
    with pytest.raises(error) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert caught.value.status_code == code
    assert caught.value.message.endswith(f"fake {code}")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == f"fake {code}"


def test_unscripted_request_gets_a_clear_500(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.InternalServerError, match="no scripted reply for request #1"):
        client.chat.completions.create(model="m", messages=MESSAGES)


def test_failing_responder_surfaces_as_500(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.responder = SchemaResponder()  # the request below names no schema
    with pytest.raises(openai.InternalServerError, match="responder raised InvalidArgumentError"):
        client.chat.completions.create(model="m", messages=MESSAGES)


# --- faults --------------------------------------------------------------------------------


def test_drop_after_cuts_the_stream(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(DropAfter(Reply(TEXT), 10))
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        read_into(client, received)
    assert "".join(received) == TEXT[:10]
    request = only_request(server)
    assert (request.sent_chars, request.completed, request.disconnected_early) == (10, False, False)


def test_drop_of_non_streamed_request(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(DropAfter(Reply(TEXT), 0))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert only_request(server).completed is False


def test_client_closing_early_is_recorded(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    text = "word " * 400  # 400 pieces: two seconds at 200 tokens per second
    server.script(Reply(text, tokens_per_second=200))
    received = ""
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as chunks:
        for count, chunk in enumerate(chunks):
            received += chunk.choices[0].delta.content or ""
            if count == 5:
                break
    request = only_request(server)
    assert request.disconnected_early
    assert not request.completed
    assert len(received) <= request.sent_chars < len(text) / 10


def test_stall_pauses_mid_stream(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Stall(Reply("abcdefghijkl", chunk_chars=4), after_chars=6, seconds=0.4))
    arrivals: list[tuple[str, float]] = []
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as chunks:
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((chunk.choices[0].delta.content, time.monotonic()))
    # The stall splits a piece: "efgh" goes out as "ef", then "gh" after the pause.
    assert [piece for piece, _ in arrivals] == ["abcd", "ef", "gh", "ijkl"]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(arrivals)]
    assert gaps[1] >= 0.35
    assert max(gaps[0], gaps[2]) < 0.2


def test_faults_compose(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(DropAfter(Stall(Reply(TEXT, chunk_chars=2), 4, 0.2), 8))
    started, received = time.monotonic(), list[str]()
    with pytest.raises(openai.APIConnectionError):
        read_into(client, received)
    assert "".join(received) == TEXT[:8]
    assert time.monotonic() - started >= 0.2


def test_malformed_line_raises_in_the_sdk(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.script(Malformed(Reply("hello world"), after_chars=5))
    received: list[str] = []
    with pytest.raises(json.JSONDecodeError):
        read_into(client, received)
    assert "".join(received) == "hello"


# --- schema replies ------------------------------------------------------------------------


class Priority(str, Enum):
    HIGH = "high"
    LOW = "low"


class Check(BaseModel):
    id: str
    applies: bool
    score: int = Field(ge=3)


class Answer(BaseModel):
    request: str
    priority: Priority
    checks: list[Check] = Field(min_length=2)
    note: str | None
    ratio: float = Field(gt=1)
    decision: Literal["reply", "escalate"]


def test_schema_responder_fills_a_response_format(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    schema = Answer.model_json_schema()
    assert {"Check", "Priority"} <= set(schema["$defs"])  # the references get resolved
    server.responder = SchemaResponder(chunk_chars=5)
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    chunks = stream(client, response_format=response_format)
    data = json.loads(content(chunks))
    answer = Answer.model_validate(data)
    assert list(data) == list(Answer.model_fields)
    assert (answer.priority, answer.decision, answer.note) == (Priority.HIGH, "reply", "example")
    assert [c.score for c in answer.checks] == [3, 3]


def test_schema_responder_fills_a_forced_tool(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.responder = SchemaResponder()
    tool: Any = {
        "type": "function",
        "function": {"name": "answer", "parameters": Answer.model_json_schema()},
    }
    completion = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=[tool], tool_choice=FORCE_TOOL
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].type == "function"
    Answer.model_validate_json(calls[0].function.arguments)
    assert completion.choices[0].finish_reason == "tool_calls"


def test_schema_instance_terminates_on_recursion_and_keeps_limits() -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 10},
            "code": {"type": "string", "maxLength": 3},
            "children": {"type": "array", "items": {"$ref": "#"}},
            "parent": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        },
    }
    instance = schema_instance(node)
    assert instance["name"] == "examplexxx"
    assert instance["code"] == "exa"
    depth, level = 0, instance
    while level["parent"] is not None:
        depth, level = depth + 1, level["parent"]
    assert 3 < depth < 10


@pytest.mark.parametrize(
    "text", [TEXT, "", "  two  spaces\n\nand a verylongword!", "héllo wörld ✓"]
)
def test_pieces_join_back_to_the_text(text: str) -> None:
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert all(1 <= len(p) <= 8 for p in pieces)
    assert split_pieces(text, 3) == [text[i : i + 3] for i in range(0, len(text), 3)]


# --- server life cycle and concurrency -----------------------------------------------------


def test_script_queue_keep_alive_and_reset(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")
    server.script("one", Reply("two"), Reply("three"))
    with pytest.raises(TypeError, match="not a Reply"):
        server.script(b"bytes")  # type: ignore[arg-type]
    replies = [client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(2)]
    assert [r.choices[0].message.content for r in replies] == ["one", "two"]
    assert server.pending == 1
    first, second = server.requests
    assert first.connection == second.connection  # httpx reused the keep-alive connection
    server.reset()
    assert (server.pending, server.requests) == (0, [])
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


def test_many_concurrent_async_streams(server: FakeOpenAIServer) -> None:
    def respond(request: ReceivedRequest) -> Reply:
        return Reply(
            f"reply to {request.body['messages'][0]['content']}. " * 8, tokens_per_second=100
        )

    server.responder = respond
    streams = 50

    async def run() -> list[str]:
        opened = 0
        all_open = asyncio.Event()
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="k", max_retries=0
        ) as client:

            async def one(index: int) -> str:
                nonlocal opened
                chunks = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"#{index}"}], stream=True
                )
                async with chunks:
                    pieces = []
                    async for chunk in chunks:
                        pieces.append(chunk.choices[0].delta.content or "")
                        if len(pieces) == 1:
                            opened += 1
                            if opened == streams:
                                all_open.set()
                            # no stream is read to its end before every one has begun: a
                            # server answering one at a time never gets here (the guard fails)
                            await asyncio.wait_for(all_open.wait(), timeout=30)
                    return "".join(pieces)

            return await asyncio.gather(*(one(i) for i in range(streams)))

    texts = asyncio.run(run())
    assert texts == [f"reply to #{i}. " * 8 for i in range(streams)]
    # wait() first: the client can see [DONE] before the server thread records the end.
    assert all(r.wait() and r.completed for r in server.requests)
    assert len(server.requests) == streams


def test_stop_during_a_stalled_stream_logs_no_cancelled_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeOpenAIServer().start()
    server.script(Reply("kept alive"), Stall(Reply("abc def"), after_chars=3, seconds=30))
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="m", messages=MESSAGES)  # a kept-alive connection
        stalled = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            next(iter(stalled))  # the stream has begun; the server stalls after 3 characters
            server.stop()
        with pytest.raises(openai.APIConnectionError):
            list(stalled)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_stop_returns_quickly_with_a_stalled_client() -> None:
    server = FakeOpenAIServer().start()
    server.script(Stall(Reply("abc def"), after_chars=3, seconds=30))
    errors: list[BaseException] = []

    def read() -> None:
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            try:
                for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                    pass
            except openai.APIError as exc:
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 5
    while not (server.requests and server.requests[0].sent_chars == 3):
        assert time.monotonic() < deadline, "the stream never reached the stall"
        time.sleep(0.01)
    (request,) = server.requests
    server.stop()  # raises if its thread outlives the timeout: the 30 s stall is cut, not waited
    reader.join(5)
    assert not reader.is_alive()
    assert [type(e) for e in errors] == [openai.APIConnectionError]
    assert request.wait(0)
    assert not request.completed
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
