"""The SSE stream as `OpenAIBackend` reads it, byte by byte, from the test server through the
user's own SDK client (async, and sync on its reading thread): comments, multi-line data,
line ends, error events, `[DONE]`, a cut connection, bytes that are not UTF-8."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from arq.backends.base import Chunk, Settings
from arq.backends.openai import OpenAIBackend
from arq.backends.openai_events import StreamEvents
from arq.errors import BackendError
from arq.testing import (
    DropAfter,
    FakeOpenAIServer,
    Malformed,
    Reply,
    Scripted,
    Stall,
    Status,
    Usage,
)
from tests.test_openai_backend import TEXT, build, collect, text_of

KINDS = ["AsyncOpenAI", "OpenAI"]
_HEAD = '{"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'


def content_event(text: str) -> str:
    """The JSON of a chunk whose delta's content is `text`."""
    delta = json.dumps({"content": text}, ensure_ascii=False)
    return _HEAD + f'"choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}'


def make_client(
    kind: str, server: FakeOpenAIServer, timeout: float = 60.0
) -> openai.OpenAI | openai.AsyncOpenAI:
    """The user's own client of `kind`, pointed at `server`."""
    if kind == "AsyncOpenAI":
        return openai.AsyncOpenAI(
            base_url=server.base_url, api_key="sk-user-key-0001", timeout=timeout
        )
    if kind == "OpenAI":
        return openai.OpenAI(base_url=server.base_url, api_key="sk-user-key-0001", timeout=timeout)
    azure: dict[str, Any] = {
        "timeout": timeout,
        "azure_endpoint": f"http://127.0.0.1:{server.port}",
        "api_key": "azure-key-0123456789",
        "api_version": "2024-10-21",
    }
    if kind == "AsyncAzureOpenAI":
        return openai.AsyncAzureOpenAI(**azure)
    return openai.AzureOpenAI(**azure)


async def read(
    kind: str, server: FakeOpenAIServer, count: int = 1, timeout: float = 60.0
) -> list[tuple[list[Chunk], BaseException | None]]:
    """`count` streams, one after another, through one backend on the user's own client."""
    client = make_client(kind, server, timeout)
    backend = OpenAIBackend("gpt-test", client=client)
    try:
        return [await collect(backend, build()) for _ in range(count)]
    finally:
        if isinstance(client, openai.AsyncOpenAI):
            await client.close()
        else:
            client.close()


def stream(kind: str, server: FakeOpenAIServer, item: Scripted) -> list[Chunk]:
    server.script(item)
    ((chunks, error),) = asyncio.run(read(kind, server))
    assert error is None, f"the stream failed: {error!r}"
    return chunks


def stream_error(kind: str, server: FakeOpenAIServer, item: Scripted) -> tuple[str, BackendError]:
    """The text received before the stream failed, and its error (retryable, unchained)."""
    server.script(item)
    ((chunks, error),) = asyncio.run(read(kind, server))
    assert isinstance(error, BackendError), f"expected a BackendError, got {error!r}"
    assert error.retryable
    assert error.status is None
    assert (error.__cause__, error.__context__) == (None, None)
    return text_of(chunks), error


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# --- what a well-formed stream may hold ---------------------------------------------------


def test_comments_and_keep_alives_are_skipped(server: FakeOpenAIServer, kind: str) -> None:
    wire = b": keep-alive\n\n:\n\n: OPENROUTER PROCESSING\n"
    chunks = stream(kind, server, Malformed(Reply(TEXT), after_chars=6, data=wire))
    assert text_of(chunks) == TEXT


def test_a_comment_inside_an_event_is_skipped(server: FakeOpenAIServer, kind: str) -> None:
    event = content_event("")[:-1]  # without its closing brace
    wire = f"data: {event}\n: ping\ndata: }}\n\n".encode()
    chunks = stream(kind, server, Malformed(Reply(TEXT), after_chars=6, data=wire))
    assert text_of(chunks) == TEXT


def test_multi_line_data_is_joined(server: FakeOpenAIServer, kind: str) -> None:
    lines = content_event("<two lines>").replace(',"choices"', ',\n"choices"').split("\n")
    wire = "".join(f"data: {line}\n" for line in lines).encode() + b"\n"
    assert len(lines) == 2
    chunks = stream(kind, server, Malformed(Reply(TEXT), after_chars=6, data=wire))
    assert text_of(chunks) == TEXT[:6] + "<two lines>" + TEXT[6:]


@pytest.mark.parametrize("end", [b"\r\n", b"\r"], ids=["CRLF", "CR"])
def test_crlf_and_cr_line_ends(server: FakeOpenAIServer, kind: str, end: bytes) -> None:
    wire = b"event: message" + end + b"data: " + content_event("<x>").encode() + end + end
    chunks = stream(kind, server, Malformed(Reply(TEXT), after_chars=6, data=wire))
    assert text_of(chunks) == TEXT[:6] + "<x>" + TEXT[6:]


def test_an_event_split_across_reads(server: FakeOpenAIServer, kind: str) -> None:
    """Half an event in one HTTP chunk (ending inside a CRLF), the rest in the next."""
    wire = b"data: " + content_event("<split>").encode() + b"\r\n\r\n"
    first, second = wire[:20], wire[20:-3]
    item = Malformed(Malformed(Reply(TEXT), 6, data=wire[-3:]), 6, data=second)
    chunks = stream(kind, server, Malformed(item, 6, data=first))
    assert text_of(chunks) == TEXT[:6] + "<split>" + TEXT[6:]


def test_a_role_only_first_delta_and_unknown_fields_carry_nothing(
    server: FakeOpenAIServer, kind: str
) -> None:
    role = _HEAD + '"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}'
    wire = f"id: 7\nretry: 100\nfoo: bar\ndata: {role}\n\n".encode()
    chunks = stream(kind, server, Malformed(Reply(TEXT), data=wire))
    assert text_of(chunks) == TEXT
    assert all(c.text or c.finish_reason or c.usage for c in chunks)  # no empty chunk


def test_usage_arrives_in_a_chunk_with_empty_choices(server: FakeOpenAIServer, kind: str) -> None:
    chunks = stream(kind, server, Reply(TEXT, usage=Usage(12, 34)))
    assert chunks[-1] == Chunk(usage=Usage(12, 34))
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


def test_a_refusal_streams_as_refusal(server: FakeOpenAIServer, kind: str) -> None:
    chunks = stream(kind, server, Reply(refusal="I can't help with that."))
    assert "".join(c.refusal or "" for c in chunks) == "I can't help with that."
    assert text_of(chunks) == ""


def test_nothing_after_done_is_read_and_the_connection_is_reused(
    server: FakeOpenAIServer, kind: str
) -> None:
    server.script(Malformed(Reply(TEXT), after_chars=6, data="[DONE]"), Reply(TEXT))
    (first, error_one), (second, error_two) = asyncio.run(read(kind, server, count=2))
    assert (error_one, error_two) == (None, None)
    assert (text_of(first), text_of(second)) == (TEXT[:6], TEXT)
    one, two = server.requests
    assert one.wait()
    assert one.completed  # the rest of the body was read to its end, so the connection
    assert one.connection == two.connection  # went back to the pool


# --- errors the service reports inside the stream -----------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b'event: error\ndata: {"error": {"message": "The server is overloaded", "code": 1}}\n\n',
        b'data: {"error": {"message": "The server is overloaded", "type": "server_error"}}\n\n',
        b'event: error\ndata: {"message": "The server is overloaded"}\n\n',
    ],
    ids=["event: error", "error in data", "event: error, bare message"],
)
def test_an_error_event_is_a_retryable_backend_error(
    server: FakeOpenAIServer, kind: str, wire: bytes
) -> None:
    text, error = stream_error(kind, server, Malformed(Reply(TEXT), after_chars=6, data=wire))
    assert text == TEXT[:6]
    assert str(error) == "the model service sent an error: The server is overloaded"


def test_an_error_without_a_message_says_so(server: FakeOpenAIServer, kind: str) -> None:
    wire = b'data: {"error": {"code": 500}}\n\n'
    _, error = stream_error(kind, server, Malformed(Reply(TEXT), data=wire))
    assert str(error) == "the model service sent an error: An error occurred during streaming"


def test_a_key_in_an_error_event_is_masked(server: FakeOpenAIServer, kind: str) -> None:
    wire = b'data: {"error": {"message": "bad key sk-user-key-0001"}}\n\n'
    _, error = stream_error(kind, server, Malformed(Reply(TEXT), data=wire))
    assert "sk-user-key-0001" not in str(error)


# --- broken wire --------------------------------------------------------------------------


def test_a_connection_dropped_mid_event(server: FakeOpenAIServer, kind: str) -> None:
    half = b"data: " + content_event("<lost>").encode()[:30]
    item = DropAfter(Malformed(Reply(TEXT), after_chars=6, data=half), 6)
    text, error = stream_error(kind, server, item)
    assert text == TEXT[:6]
    assert "broke off" in str(error)


def test_an_event_cut_by_the_next_one_is_malformed(server: FakeOpenAIServer, kind: str) -> None:
    half = b"data: " + content_event("<lost>").encode()[:30]
    text, error = stream_error(kind, server, Malformed(Reply(TEXT), after_chars=6, data=half))
    assert text == TEXT[:6]
    assert str(error).startswith("the model service sent a malformed event: ")


def test_bytes_that_are_not_utf8(server: FakeOpenAIServer, kind: str) -> None:
    wire = b"data: " + content_event("<?>").encode().replace(b"<?>", b"<\xff\xfe>") + b"\n\n"
    text, error = stream_error(kind, server, Malformed(Reply(TEXT), after_chars=6, data=wire))
    assert text == TEXT[:6]
    assert str(error).startswith(
        "the model service sent a malformed event: its bytes are not UTF-8"
    )


def test_a_silent_stream_times_out_as_the_client_is_set(
    server: FakeOpenAIServer, kind: str
) -> None:
    server.script(Stall(Reply(TEXT, chunk_chars=5), after_chars=5, seconds=3))
    ((chunks, error),) = asyncio.run(read(kind, server, timeout=0.3))
    assert text_of(chunks) == TEXT[:5]
    assert isinstance(error, BackendError)
    assert (error.retryable, str(error)) == (True, "the model service timed out")
    assert (error.__cause__, error.__context__) == (None, None)
    request = server.requests[0]
    assert request.wait()
    assert request.disconnected_early


def test_closing_early_stops_the_server_sending(server: FakeOpenAIServer, kind: str) -> None:
    text = "word " * 100  # 100 pieces at 50 per second: two seconds
    server.script(Reply(text, tokens_per_second=50))

    async def read_a_few() -> list[Chunk]:
        client = make_client(kind, server)
        backend = OpenAIBackend("gpt-test", client=client)
        gen = backend.stream(build(), Settings())
        try:
            return [await anext(gen) for _ in range(3)]
        finally:
            await gen.aclose()
            if isinstance(client, openai.AsyncOpenAI):
                await client.close()
            else:
                client.close()

    chunks = asyncio.run(read_a_few())
    assert len(chunks) == 3
    request = server.requests[0]
    assert request.wait()
    assert request.disconnected_early
    assert request.sent_chars < len(text) / 4


# --- the user's own clients ---------------------------------------------------------------

ALL_KINDS = ["AsyncOpenAI", "OpenAI", "AsyncAzureOpenAI", "AzureOpenAI"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_of_client_sends_the_request_as_configured(
    server: FakeOpenAIServer, kind: str
) -> None:
    chunks = stream(kind, server, Reply(TEXT))
    assert text_of(chunks) == TEXT
    (request,) = server.requests
    headers = request.headers
    assert headers["x-stainless-async"].startswith("async") == kind.startswith("Async")
    assert headers["x-stainless-retry-count"] == "0"
    if "Azure" in kind:  # Azure's key header, deployment path and api-version query
        assert (headers["api-key"], "authorization" in headers) == ("[REDACTED]", False)
        assert request.path == "/openai/deployments/gpt-test/chat/completions"
        assert request.query == "api-version=2024-10-21"
    else:
        assert headers["authorization"] == "Bearer [REDACTED]"
        assert request.path == "/v1/chat/completions"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_of_client_fails_once_with_the_status_and_no_key(
    server: FakeOpenAIServer, kind: str
) -> None:
    key = "azure-key-0123456789" if "Azure" in kind else "sk-user-key-0001"
    server.script(Status(503, message=f"overloaded for {key}"), Reply(TEXT))
    ((_, error),) = asyncio.run(read(kind, server))
    assert isinstance(error, BackendError)
    assert (error.status, error.retryable, error.request_id) == (503, True, "req_fake1")
    assert key not in str(error)
    assert (error.__cause__, error.__context__) == (None, None)
    assert len(server.requests) == 1  # the client's own retries are off


# --- the decoder alone: what no server here sends ------------------------------------------


def test_a_body_that_ends_without_the_last_blank_line_still_gives_its_event() -> None:
    events = StreamEvents()
    assert list(events.feed(f"data: {content_event('a')}\n\ndata: ".encode())) == [Chunk("a")]
    assert list(events.feed(content_event("b").encode())) == []
    assert list(events.finish()) == [Chunk("b")]


def test_a_body_that_ends_inside_an_event_is_malformed() -> None:
    events = StreamEvents()
    assert list(events.feed(f"data: {content_event('a')[:25]}".encode())) == []
    with pytest.raises(BackendError, match="malformed event"):
        list(events.finish())


def test_any_split_of_the_bytes_gives_the_same_chunks() -> None:
    wire = (
        f": hi\r\ndata: {content_event('a')}\r\n\r\nevent: x\rdata: {content_event('é')}\r\r"
        f"data: {content_event('c')}\n\ndata: [DONE]\n\ndata: {content_event('late')}\n\n"
    ).encode()
    for size in (1, 2, 3, 7, len(wire)):
        events = StreamEvents()
        chunks = [c for i in range(0, len(wire), size) for c in events.feed(wire[i : i + size])]
        assert [c.text for c in [*chunks, *events.finish()]] == ["a", "é", "c"], size
        assert events.done


def test_a_sync_client_serves_calls_from_any_event_loop(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT), Reply(TEXT))
    with openai.OpenAI(base_url=server.base_url, api_key="sk-user-key-0001") as client:
        backend = OpenAIBackend("gpt-test", client=client)
        first = asyncio.run(collect(backend, build()))  # one loop
        second = asyncio.run(collect(backend, build()))  # and another
    assert [(text_of(chunks), error) for chunks, error in (first, second)] == [(TEXT, None)] * 2
    one, two = server.requests
    assert one.connection == two.connection  # the user's client keeps its connection


def test_an_escaped_lone_surrogate_is_content_as_json_reads_it() -> None:
    """jiter refuses it; `json` takes it, and the step checks reject it later, as before."""
    wire = f"data: {content_event('<?>').replace('<?>', chr(92) + 'ud800')}\n\n".encode()
    (chunk,) = StreamEvents().feed(wire)
    assert chunk.text == "\ud800"
