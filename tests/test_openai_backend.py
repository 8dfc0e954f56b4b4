"""`OpenAIBackend`: its wire payloads, and the real SDK streaming from the fake server."""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import openai
import pytest
from pydantic import Field

import arq
import arq.backends.openai
from arq.backends.base import Backend, Capabilities, Chunk, OutputMode, Settings
from arq.backends.enums import MAX_ENUM_CHARS
from arq.backends.openai import PROFILES, OpenAIBackend
from arq.errors import BackendError
from arq.jsonschema import MAX_ENUM_VALUES, enum_values, json_schema
from arq.prompt import PromptBuilder, Request
from arq.repair import repair_request
from arq.testing import (
    DropAfter,
    FakeOpenAIServer,
    Malformed,
    Reply,
    Stall,
    Status,
    Truncated,
    Usage,
    split_pieces,
)
from tests.schemas import SupportReply

CONTEXT: dict[str, Any] = {
    "conversation": [{"role": "user", "content": "My order A-1234 never came. Refund it?"}],
}
TEXT = (
    '{"request": "a refund", "order_id": "A-1234", "applicable": [], "checks": [], '
    '"decision": "reply", "answer": "We are looking into it."}'
)
ACCEPTED: dict[str, Any] = {"request": "a refund", "order_id": "A-1234"}
REMAINING = ["applicable", "checks", "decision", "answer"]
MODES: list[OutputMode] = ["json_schema", "json_object_schema", "json_object", "tool", "prompt"]
SECRET = "sk-live-abcdef123456"


def build() -> Request:
    return PromptBuilder().build(SupportReply, CONTEXT)


def repair(*, prefill: bool) -> Request:
    return repair_request(
        PromptBuilder(), build(), accepted=ACCEPTED, failure=None, prefill=prefill
    )


def backend_for(server: FakeOpenAIServer, **options: Any) -> OpenAIBackend:
    return OpenAIBackend("gpt-test", base_url=server.base_url, **options)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


# --- collecting a stream ------------------------------------------------------------------


async def collect(
    backend: OpenAIBackend, request: Request, settings: Settings | None = None
) -> tuple[list[Chunk], BaseException | None]:
    """The chunks of one stream and the error that ended it, if any; closes the backend."""
    chunks: list[Chunk] = []
    try:
        async for chunk in backend.stream(request, settings or Settings()):
            chunks.append(chunk)
    except Exception as exc:
        return chunks, exc
    finally:
        await backend.aclose()
    return chunks, None


def stream(
    backend: OpenAIBackend, request: Request | None = None, settings: Settings | None = None
) -> list[Chunk]:
    """All chunks of a stream that must succeed."""
    chunks, error = asyncio.run(collect(backend, request or build(), settings))
    assert error is None, f"the stream failed: {error!r}"
    return chunks


def stream_error(
    backend: OpenAIBackend, request: Request | None = None
) -> tuple[list[Chunk], BackendError]:
    """The chunks received before a stream failed, and its `BackendError`, which must not
    reach the SDK's exception (its message and request headers can hold the key)."""
    chunks, error = asyncio.run(collect(backend, request or build()))
    assert isinstance(error, BackendError), f"expected a BackendError, got {error!r}"
    assert (error.__cause__, error.__context__) == (None, None)
    return chunks, error


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def finish_reasons(chunks: list[Chunk]) -> list[str]:
    return [c.finish_reason for c in chunks if c.finish_reason is not None]


def usages(chunks: list[Chunk]) -> list[Usage]:
    return [c.usage for c in chunks if c.usage is not None]


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- payload: output modes ----------------------------------------------------------------


def payload(mode: OutputMode, request: Request | None = None, **options: Any) -> dict[str, Any]:
    backend = OpenAIBackend("gpt-test", capabilities=Capabilities(output=mode), **options)
    return backend.payload(request or build(), Settings())


def test_backend_satisfies_the_protocol() -> None:
    backend = OpenAIBackend("gpt-test", base_url="http://127.0.0.1:1/v1")
    assert isinstance(backend, Backend)
    assert backend.name == "gpt-test"
    assert backend.capabilities == Capabilities(output="json_schema")


def test_payload_common_fields() -> None:
    request = build()
    body = payload("json_schema", request)
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["messages"] == [dict(m) for m in request.messages]
    assert body["messages"] is not request.messages
    for absent in ("max_tokens", "max_completion_tokens", "temperature", "seed", "tools"):
        assert absent not in body


def test_payload_json_schema_is_strict() -> None:
    request = build()
    body = payload("json_schema", request)
    strict = json_schema(SupportReply, "openai-strict", steps=request.steps)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "SupportReply", "schema": strict, "strict": True},
    }
    assert list(strict["properties"]) == list(request.steps)
    assert strict["additionalProperties"] is False
    assert "tools" not in body


def test_payload_json_object_with_schema() -> None:
    request = build()
    body = payload("json_object_schema", request)
    assert body["response_format"] == {"type": "json_object", "schema": request.output_schema}
    assert list(body["response_format"]["schema"]["properties"]) == list(request.steps)


def test_payload_json_object_without_schema() -> None:
    assert payload("json_object")["response_format"] == {"type": "json_object"}


def test_payload_tool_is_forced() -> None:
    request = build()
    body = payload("tool", request)
    strict = json_schema(SupportReply, "openai-strict", steps=request.steps)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "SupportReply", "parameters": strict, "strict": True},
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "SupportReply"}}
    assert "response_format" not in body


def test_payload_prompt_mode_has_no_constraint() -> None:
    body = payload("prompt")
    assert "response_format" not in body
    assert "tools" not in body
    assert "tool_choice" not in body


# where each output mode puts the schema in the payload
SCHEMA_PATHS = [
    ("json_schema", ("response_format", "json_schema", "schema")),
    ("json_object_schema", ("response_format", "schema")),
    ("tool", ("tools", 0, "function", "parameters")),
]


def sent_schema(mode: OutputMode, path: tuple[str | int, ...], request: Request) -> Any:
    """The schema the payload for `request` sends, found along `path`."""
    schema: Any = payload(mode, request)
    for part in path:
        schema = schema[part]
    return schema


class Picked(arq.Reasoning):
    code: Annotated[str, arq.one_of("codes")] = arq.query("Which code?")
    quote: Annotated[str, arq.verbatim_in("notes")] = arq.answer("Quote the notes.")


@pytest.mark.parametrize(("mode", "path"), SCHEMA_PATHS)
def test_payload_narrows_one_of_steps_to_the_runs_choices(
    mode: OutputMode, path: tuple[str | int, ...]
) -> None:
    request = PromptBuilder().build(Picked, {"codes": ["A-1", "B-2"], "notes": "Ann Lee"})
    schema = sent_schema(mode, path, request)
    assert schema["properties"]["code"]["enum"] == ["A-1", "B-2"]
    assert "enum" not in schema["properties"]["quote"]  # a quote has no JSON Schema form
    assert "enum" not in json_schema(Picked, "openai-strict")["properties"]["code"]  # a copy
    repair = repair_request(PromptBuilder(), request, accepted={}, failure=None, rejected=['"A-1"'])
    schema = sent_schema(mode, path, repair)
    assert schema["properties"]["code"]["enum"] == ["B-2"]  # a refused choice is not offered


class MaybeMany(arq.Reasoning):
    maybe: Annotated[str, arq.one_of("codes")] | None = arq.query("A code, if any?")
    many: Annotated[list[str], arq.one_of("codes")] = arq.answer("Which codes?")


@pytest.mark.parametrize(("mode", "path"), SCHEMA_PATHS)
def test_an_optional_or_list_step_is_narrowed_where_its_strings_are(
    mode: OutputMode, path: tuple[str | int, ...]
) -> None:
    request = PromptBuilder().build(MaybeMany, {"codes": ["A-1", "B-2"]})
    schema = sent_schema(mode, path, request)
    maybe, many = schema["properties"]["maybe"], schema["properties"]["many"]
    assert "enum" not in maybe  # null stays allowed
    assert {"type": "string", "enum": ["A-1", "B-2"]} in maybe["anyOf"]
    assert {"type": "null"} in maybe["anyOf"]
    assert "enum" not in many
    assert many["items"]["enum"] == ["A-1", "B-2"]


class Named(arq.Reasoning):
    name: Annotated[str, Field(pattern=r"^[A-Z][a-z]+$"), arq.verbatim_in("notes")] = arq.query(
        "Whose?"
    )
    code: Annotated[str, arq.one_of("codes")] = arq.query("Which code?")
    tag: Annotated[str, arq.one_of("tags")] = arq.answer("Which tag?")


def test_payload_sends_the_quotes_that_fit_a_pattern_and_caps_the_enum_values() -> None:
    context = {"notes": "Ann and Bo", "codes": ["A-1", "B-2"], "tags": ["x", "y"]}
    schema = sent_schema("json_schema", SCHEMA_PATHS[0][1], PromptBuilder().build(Named, context))
    assert schema["properties"]["name"]["enum"] == ["An", "Ann", "Bo"]
    assert schema["properties"]["code"]["enum"] == ["A-1", "B-2"]
    # more values than a server takes: the steps that do not fit in are left to the check
    many = [f"C-{i}" for i in range(MAX_ENUM_VALUES - 2)]
    schema = sent_schema(
        "json_schema", SCHEMA_PATHS[0][1], PromptBuilder().build(Named, {**context, "codes": many})
    )
    assert schema["properties"]["name"]["enum"] == ["An", "Ann", "Bo"]
    assert "enum" not in schema["properties"]["code"]
    assert schema["properties"]["tag"]["enum"] == ["x", "y"]  # a later, smaller list fits
    long = ["x" * (MAX_ENUM_CHARS // 2), "y" * (MAX_ENUM_CHARS // 2)]  # two values, too long
    schema = sent_schema(
        "json_schema", SCHEMA_PATHS[0][1], PromptBuilder().build(Named, {**context, "codes": long})
    )
    assert "enum" not in schema["properties"]["code"]
    assert schema["properties"]["tag"]["enum"] == ["x", "y"]


class Graded(arq.Reasoning):
    grade: Literal["low", "mid", "high"] = arq.query("How urgent?")
    code: Annotated[str, arq.one_of("codes")] = arq.answer("Which code?")


def test_the_schemas_own_enums_count_against_the_enum_limit() -> None:
    def sent(codes: list[str]) -> Any:
        request = PromptBuilder().build(Graded, {"codes": codes})
        return sent_schema("json_schema", SCHEMA_PATHS[0][1], request)

    fits = sent([f"C-{i}" for i in range(MAX_ENUM_VALUES - 3)])  # 3 grades + the codes
    assert len(fits["properties"]["code"]["enum"]) == MAX_ENUM_VALUES - 3
    assert enum_values(fits) == MAX_ENUM_VALUES
    too_many = sent([f"C-{i}" for i in range(MAX_ENUM_VALUES - 2)])
    assert "enum" not in too_many["properties"]["code"]
    assert too_many["properties"]["grade"]["enum"] == ["low", "mid", "high"]


@pytest.mark.parametrize(("mode", "path"), SCHEMA_PATHS)
def test_repair_payload_asks_for_the_remaining_steps_only(
    mode: OutputMode, path: tuple[str | int, ...]
) -> None:
    request = repair(prefill=False)
    assert list(request.steps) == REMAINING
    schema = sent_schema(mode, path, request)
    assert list(schema["properties"]) == REMAINING
    assert schema["required"] == REMAINING


def test_repair_payload_shows_the_kept_steps_as_an_earlier_answer() -> None:
    body = payload("json_schema", repair(prefill=False))
    assistant = body["messages"][-2]
    assert assistant["role"] == "assistant"
    assert json.loads(assistant["content"]) == ACCEPTED
    assert body["messages"][-1]["role"] == "user"


@pytest.mark.parametrize("mode", MODES)
def test_prefill_payload_ends_with_the_assistant_prefix_and_no_constraint(
    mode: OutputMode,
) -> None:
    request = repair(prefill=True)
    assert request.prefill.startswith('{"request": "a refund"')
    body = payload(mode, request)
    assert body["messages"][-1] == {"role": "assistant", "content": request.prefill}
    assert body["messages"][:-1] == [dict(m) for m in request.messages]
    assert "response_format" not in body
    assert "tools" not in body
    assert request.messages[-1]["role"] == "user"  # the request itself is left alone


@pytest.mark.parametrize("stream_usage", [True, False])
def test_stream_options_follow_the_capability(stream_usage: bool) -> None:
    backend = OpenAIBackend("gpt-test", capabilities=Capabilities(stream_usage=stream_usage))
    body = backend.payload(build(), Settings())
    if stream_usage:
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in body


def test_plain_profile_asks_for_no_usage_and_no_constraint() -> None:
    backend = OpenAIBackend("gpt-test", capabilities=PROFILES["plain"])
    body = backend.payload(build(), Settings())
    assert "stream_options" not in body
    assert "response_format" not in body


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_token_limit_goes_in_the_configured_field(param: Any) -> None:
    backend = OpenAIBackend("gpt-test", max_tokens_param=param)
    body = backend.payload(build(), Settings(max_tokens=321))
    other = {"max_tokens", "max_completion_tokens"} - {param}
    assert body[param] == 321
    assert not other & body.keys()


def test_sampling_settings_only_when_set_even_when_zero() -> None:
    backend = OpenAIBackend("gpt-test")
    body = backend.payload(build(), Settings(temperature=0.0, seed=0))
    assert (body["temperature"], body["seed"]) == (0.0, 0)
    assert "max_tokens" not in body
    body = backend.payload(build(), Settings(temperature=0.7))
    assert body["temperature"] == 0.7
    assert "seed" not in body


def test_one_temperature_per_answer_the_first_steps_when_it_has_its_own() -> None:
    backend = OpenAIBackend("gpt-test")
    body = backend.payload(build(), Settings(temperature=0.0, first_step_temperature=0.7))
    assert body["temperature"] == 0.7
    body = backend.payload(build(), Settings(first_step_temperature=0.0))
    assert body["temperature"] == 0.0


def test_payload_is_fresh_each_time() -> None:
    backend = OpenAIBackend("gpt-test")
    request = build()
    first = backend.payload(request, Settings())
    first["response_format"]["json_schema"]["schema"]["properties"].clear()
    first["messages"][0]["content"] = "changed"
    second = backend.payload(request, Settings())
    assert list(second["response_format"]["json_schema"]["schema"]["properties"]) == list(
        request.steps
    )
    assert second["messages"][0]["content"] == request.messages[0]["content"] != "changed"


# --- streaming end to end -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_stream_each_mode(server: FakeOpenAIServer, mode: OutputMode) -> None:
    server.script(Reply(TEXT))
    backend = backend_for(server, capabilities=Capabilities(output=mode))
    request = build()
    chunks = stream(backend, request)
    assert text_of(chunks) == TEXT
    assert finish_reasons(chunks) == ["tool_calls" if mode == "tool" else "stop"]
    (usage,) = usages(chunks)
    assert usage.completion_tokens == len(split_pieces(TEXT))
    assert usage.prompt_tokens > 0
    assert all(c.refusal is None for c in chunks)
    (received,) = server.requests
    assert received.path == "/v1/chat/completions"
    # exactly the payload went over the wire, nothing lost or added by the SDK
    assert received.body == backend.payload(request, Settings())


def test_stream_reports_the_given_usage_last(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT, usage=Usage(prompt_tokens=11, completion_tokens=7)))
    chunks = stream(backend_for(server))
    assert chunks[-1].usage == Usage(prompt_tokens=11, completion_tokens=7)
    assert chunks[-1].text == ""
    assert usages(chunks) == [Usage(11, 7)]


def test_stream_without_usage(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    chunks = stream(backend_for(server, capabilities=Capabilities(stream_usage=False)))
    assert text_of(chunks) == TEXT
    assert usages(chunks) == []
    assert "stream_options" not in server.requests[0].body


def test_stream_skips_empty_deltas(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT, chunk_chars=10))
    chunks = stream(backend_for(server))
    # the role-only first delta and nothing else is dropped: one chunk per piece, the
    # finish chunk and the usage chunk
    assert [c.text for c in chunks[:-2]] == split_pieces(TEXT, 10)
    assert (chunks[-2].finish_reason, chunks[-1].usage is not None) == ("stop", True)


def test_stream_truncated_reply_finishes_with_length(server: FakeOpenAIServer) -> None:
    server.script(Truncated('{"request": "a ref'))
    chunks = stream(backend_for(server), settings=Settings(max_tokens=5))
    assert text_of(chunks) == '{"request": "a ref'
    assert finish_reasons(chunks) == ["length"]
    assert server.requests[0].body["max_tokens"] == 5


def test_stream_tool_arguments_come_through_as_text(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT, chunk_chars=7))
    chunks = stream(backend_for(server, capabilities=Capabilities(output="tool")))
    assert text_of(chunks) == TEXT
    assert [c.text for c in chunks if c.text] == split_pieces(TEXT, 7)
    assert finish_reasons(chunks) == ["tool_calls"]
    body = server.requests[0].body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "SupportReply"}}


def test_stream_refusal(server: FakeOpenAIServer) -> None:
    server.script(Reply(refusal="I can't help with that request."))
    chunks = stream(backend_for(server))
    refusal = "".join(c.refusal or "" for c in chunks)
    assert refusal == "I can't help with that request."
    assert len([c for c in chunks if c.refusal]) > 1  # streamed in pieces
    assert text_of(chunks) == ""
    assert finish_reasons(chunks) == ["stop"]


def test_stream_content_filter_is_a_finish_reason(server: FakeOpenAIServer) -> None:
    server.script(Reply('{"request": "', finish_reason="content_filter"))
    chunks = stream(backend_for(server))
    assert finish_reasons(chunks) == ["content_filter"]
    assert text_of(chunks) == '{"request": "'


def test_llama_cpp_python_profile_sends_json_object_with_schema(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    request = build()
    chunks = stream(backend_for(server, capabilities=PROFILES["llama-cpp-python"]), request)
    assert text_of(chunks) == TEXT
    response_format = server.requests[0].body["response_format"]
    assert response_format == {"type": "json_object", "schema": request.output_schema}


def test_stream_prefill_sends_the_assistant_prefix(server: FakeOpenAIServer) -> None:
    request = repair(prefill=True)
    rest = TEXT[TEXT.index('"applicable"') :]
    server.script(Reply(rest))
    chunks = stream(backend_for(server, capabilities=Capabilities(prefill=True)), request)
    assert text_of(chunks) == rest
    assert json.loads(request.prefill + text_of(chunks)) == json.loads(TEXT)
    body = server.requests[0].body
    assert body["messages"][-1] == {"role": "assistant", "content": request.prefill}
    assert "response_format" not in body


def test_stream_repair_sends_the_suffix_schema(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    stream(backend_for(server), repair(prefill=False))
    schema = server.requests[0].body["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == REMAINING


def test_extra_body_and_settings_reach_the_server(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    extra = {"continue_final_message": True, "add_generation_prompt": False, "top_k": 20}
    backend = backend_for(server, extra_body=extra, max_tokens_param="max_completion_tokens")
    stream(backend, settings=Settings(max_tokens=64, temperature=0.0, seed=7))
    body = server.requests[0].body
    assert extra.items() <= body.items()
    assert (body["max_completion_tokens"], body["temperature"], body["seed"]) == (64, 0.0, 7)
    assert "max_tokens" not in body


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status(429, retry_after=2), 2.0),
        (Status(429, retry_after=0.5), 0.5),
        (Status(429, retry_after_ms=1500), 1.5),
        (Status(429, retry_after=30, retry_after_ms=250), 0.25),
        (Status(503, retry_after=4), 4.0),
        (Status(429), None),
    ],
)
def test_rate_limit_and_retry_after(
    server: FakeOpenAIServer, status: Status, expected: float | None
) -> None:
    server.script(status)
    chunks, error = stream_error(backend_for(server))
    assert chunks == []
    assert (error.retryable, error.status, error.retry_after) == (True, status.code, expected)
    assert error.request_id == "req_fake1"
    assert f"HTTP {status.code}" in str(error)


@pytest.mark.parametrize("code", [408, 409, 500, 502, 503])
def test_transient_statuses_are_retryable(server: FakeOpenAIServer, code: int) -> None:
    server.script(Status(code, message=f"fake trouble {code}"))
    _, error = stream_error(backend_for(server))
    assert (error.retryable, error.status, error.retry_after) == (True, code, None)
    assert f"fake trouble {code}" in str(error)
    assert error.request_id == "req_fake1"
    assert len(server.requests) == 1


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retryable(server: FakeOpenAIServer, code: int) -> None:
    server.script(Status(code, retry_after=5))  # a Retry-After must not make it retryable
    _, error = stream_error(backend_for(server))
    assert (error.retryable, error.status, error.retry_after) == (False, code, None)
    assert error.request_id == "req_fake1"
    assert len(server.requests) == 1


def test_api_key_in_an_error_message_is_redacted(server: FakeOpenAIServer) -> None:
    server.script(Status(401, message=f"Incorrect API key provided: {SECRET}."))
    _, error = stream_error(backend_for(server, api_key=SECRET))
    assert SECRET not in str(error)
    assert "abcdef123456" not in str(error)
    assert "Incorrect API key provided" in str(error)
    assert error.status == 401
    assert server.requests[0].headers["authorization"] == "Bearer [REDACTED]"


def test_the_key_given_is_masked_whatever_its_shape(server: FakeOpenAIServer) -> None:
    """No pattern knows a Groq key; the backend knows the exact key it was given."""
    key = "gsk_KEYSHAPE123abcdefgh"
    server.script(Status(401, message=f"Invalid API key: {key}"))
    _, error = stream_error(backend_for(server, api_key=key))
    assert str(error) == (
        "the model service answered HTTP 401: Error code: 401 - Invalid API key: ***"
    )


def test_a_credential_header_value_is_masked(server: FakeOpenAIServer) -> None:
    key = "AIzaSyHEADER-0123456789"
    with openai.OpenAI(
        base_url=server.base_url, api_key="unused", default_headers={"x-goog-api-key": key}
    ) as client:
        backend = OpenAIBackend("gpt-test", client=client)
        server.script(Status(403, message=f"API key {key} is not allowed"))
        _, error = stream_error(backend)
    assert key not in str(error)
    assert "API key *** is not allowed" in str(error)
    assert server.requests[0].headers["x-goog-api-key"] == "[REDACTED]"


def test_the_key_the_sdk_reads_from_the_environment_is_masked(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "env-KEYSHAPE-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    server.script(Status(401, message=f"Invalid API key: {key}"))
    _, error = stream_error(OpenAIBackend("gpt-test"))
    assert key not in str(error)


def test_no_exception_chain_reaches_the_sdk_error(server: FakeOpenAIServer) -> None:
    """`from exc` (and `from None`, through `__context__`) would keep the SDK's exception,
    whose message echoes the key and whose request carries it, in every traceback."""
    key = "sk-test-CHAIN123abcdef"
    server.script(Status(401, message=f"Invalid API key: {key}"))
    _, error = stream_error(backend_for(server, api_key=key))
    printed = "".join(traceback.format_exception(error))
    assert "CHAIN123" not in printed
    assert "BackendError: the model service answered HTTP 401" in printed


def test_error_with_a_plain_text_body(server: FakeOpenAIServer) -> None:
    server.script(Status(502, body="<html>Bad Gateway</html>"))
    _, error = stream_error(backend_for(server))
    assert (error.retryable, error.status) == (True, 502)


def test_dropped_stream_fails_after_some_chunks(server: FakeOpenAIServer) -> None:
    server.script(DropAfter(Reply(TEXT, chunk_chars=5), 10))
    chunks, error = stream_error(backend_for(server))
    assert text_of(chunks) == TEXT[:10]
    assert len(chunks) == 2
    assert error.retryable
    assert (error.status, error.retry_after) == (None, None)
    request = server.requests[0]
    assert request.wait()
    assert (request.sent_chars, request.completed) == (10, False)


def test_drop_before_any_content(server: FakeOpenAIServer) -> None:
    server.script(DropAfter(Reply(TEXT), 0))
    chunks, error = stream_error(backend_for(server))
    assert text_of(chunks) == ""
    assert error.retryable


def test_malformed_event_is_retryable(server: FakeOpenAIServer) -> None:
    server.script(Malformed(Reply("hello world"), after_chars=5))
    chunks, error = stream_error(backend_for(server))
    assert text_of(chunks) == "hello"
    assert error.retryable
    assert error.status is None
    assert "malformed" in str(error)


def test_connection_refused_is_retryable() -> None:
    backend = OpenAIBackend("gpt-test", base_url=f"http://127.0.0.1:{free_port()}/v1")
    chunks, error = stream_error(backend)
    assert chunks == []
    assert error.retryable
    assert (error.status, error.retry_after) == (None, None)
    assert "connection" in str(error)


def test_read_timeout_is_retryable(server: FakeOpenAIServer) -> None:
    server.script(Stall(Reply(TEXT, chunk_chars=5), after_chars=5, seconds=3))
    chunks, error = stream_error(backend_for(server, timeout=0.3))
    assert text_of(chunks) == TEXT[:5]
    assert error.retryable
    assert error.status is None
    assert "timed out" in str(error)
    request = server.requests[0]
    assert request.wait()  # the server saw the client hang up during the stall
    assert request.disconnected_early


# --- closing early ------------------------------------------------------------------------


def test_closing_the_generator_closes_the_connection(server: FakeOpenAIServer) -> None:
    text = "word " * 100  # 100 pieces at 50 per second: two seconds
    server.script(Reply(text, tokens_per_second=50))
    backend = backend_for(server)

    async def read_a_few() -> list[Chunk]:
        gen = backend.stream(build(), Settings())
        try:
            return [await gen.__anext__() for _ in range(3)]
        finally:
            await gen.aclose()
            await backend.aclose()

    chunks = asyncio.run(read_a_few())
    assert [c.text for c in chunks] == split_pieces(text)[:3]
    request = server.requests[0]
    assert request.wait()
    assert request.disconnected_early
    assert not request.completed
    assert len(text_of(chunks)) <= request.sent_chars < len(text) / 4


def test_a_cancelled_stream_closes_the_connection(server: FakeOpenAIServer) -> None:
    text = "word " * 100
    server.script(Reply(text, tokens_per_second=50))
    backend = backend_for(server)
    received: list[Chunk] = []

    async def read_all() -> None:
        async for chunk in backend.stream(build(), Settings()):
            received.append(chunk)

    async def main() -> None:
        try:
            await asyncio.wait_for(read_all(), timeout=0.2)
        except asyncio.TimeoutError:
            pass
        finally:
            await backend.aclose()

    asyncio.run(main())
    request = server.requests[0]
    assert request.wait()
    assert request.disconnected_early
    assert received
    assert request.sent_chars < len(text) / 2


# --- clients ------------------------------------------------------------------------------


def test_sync_client_settings_are_used(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    with openai.OpenAI(
        base_url=server.base_url,
        api_key="sk-sync-client-key",
        max_retries=5,
        default_headers={"X-Team": "support"},
    ) as client:
        chunks = stream(OpenAIBackend("gpt-test", client=client))
    assert text_of(chunks) == TEXT
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer [REDACTED]"
    assert request.headers["x-team"] == "support"
    assert request.headers["x-stainless-async"] == "false"  # the user's own client sent it


def test_a_sync_client_sends_the_request_as_configured(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    with openai.OpenAI(
        base_url=server.base_url,
        api_key="sk-sync-client-key",
        organization="org-support",
        default_headers={"User-Agent": "support-bot/1"},
    ) as client:
        client = client.with_options(default_headers={"X-Team": "support"})
        stream(OpenAIBackend("gpt-test", client=client))
    headers = server.requests[0].headers
    assert (headers["user-agent"], headers["x-team"]) == ("support-bot/1", "support")
    assert headers["openai-organization"] == "org-support"
    assert headers["x-stainless-async"] == "false"
    assert headers["x-stainless-retry-count"] == "0"


def test_the_backend_reads_no_private_name_of_the_sdk() -> None:
    """Underscore names of `openai` break on its next release: only `self` has them here."""
    tree = ast.parse(Path(arq.backends.openai.__file__).read_text(encoding="utf-8"))
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    modules = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and "._" in node.module
    ]
    assert (private, modules) == ([], [])


def test_async_client_is_used_without_its_retries(server: FakeOpenAIServer) -> None:
    server.script(Status(503))

    async def main() -> tuple[BaseException | None, bool]:
        async with openai.AsyncOpenAI(
            base_url=server.base_url,
            api_key="sk-async-client-key",
            max_retries=5,
            default_headers={"X-Team": "billing"},
        ) as client:
            backend = OpenAIBackend("gpt-test", client=client)
            _, error = await collect(backend, build())
            return error, client.is_closed()

    error, closed = asyncio.run(main())
    assert isinstance(error, BackendError)
    assert (error.retryable, error.status) == (True, 503)
    (request,) = server.requests  # one request: the SDK did not retry
    assert request.headers["x-team"] == "billing"
    assert request.headers["authorization"] == "Bearer [REDACTED]"
    assert request.headers["x-stainless-retry-count"] == "0"
    assert not closed  # aclose() leaves a client the caller passed alone


def test_base_url_alone_uses_a_placeholder_key(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT))
    chunks = stream(OpenAIBackend("gpt-test", base_url=server.base_url))
    assert text_of(chunks) == TEXT
    assert server.requests[0].headers["authorization"] == "Bearer [REDACTED]"


def test_no_key_and_no_base_url_fails_before_any_request() -> None:
    # OPENAI_API_KEY is unset by the autouse fixture: the SDK refuses to build a client
    backend = OpenAIBackend("gpt-test")
    _, error = asyncio.run(collect(backend, build()))
    assert isinstance(error, openai.OpenAIError)
    assert "api_key" in str(error)


@pytest.mark.parametrize("client", [object(), "sk-key", 42])
def test_wrong_client_type(client: Any) -> None:
    with pytest.raises(TypeError, match=r"openai\.AsyncOpenAI or openai\.OpenAI"):
        OpenAIBackend("gpt-test", client=client)


def test_model_is_required() -> None:
    with pytest.raises(ValueError, match="model name"):
        OpenAIBackend("", base_url="http://127.0.0.1:1/v1")


@pytest.mark.parametrize("how", ["base_url", "api_key", "sync_client", "async_client"])
def test_sdk_retries_are_off(server: FakeOpenAIServer, how: str) -> None:
    server.script(Status(500), Reply(TEXT))

    async def main() -> BaseException | None:
        if how == "async_client":
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k") as client:
                return (await collect(OpenAIBackend("gpt-test", client=client), build()))[1]
        if how == "sync_client":
            with openai.OpenAI(base_url=server.base_url, api_key="k") as sync:
                return (await collect(OpenAIBackend("gpt-test", client=sync), build()))[1]
        key = {"api_key": "k"} if how == "api_key" else {}
        return (await collect(backend_for(server, **key), build()))[1]

    error = asyncio.run(main())
    assert isinstance(error, BackendError)
    assert error.status == 500
    assert len(server.requests) == 1
    assert server.pending == 1  # the reply a retry would have taken is still queued


# --- event loops --------------------------------------------------------------------------


def test_two_event_loops_each_get_a_client(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT), Reply(TEXT))
    backend = backend_for(server)
    first = stream(backend)  # asyncio.run: one loop
    second = stream(backend)  # and another
    assert text_of(first) == text_of(second) == TEXT
    one, two = server.requests
    assert one.connection != two.connection


def test_one_loop_reuses_its_client_and_connection(server: FakeOpenAIServer) -> None:
    server.script(Reply(TEXT), Reply(TEXT))
    backend = backend_for(server)

    async def twice() -> list[str]:
        texts: list[str] = []
        try:
            for _ in range(2):
                texts.append(text_of([c async for c in backend.stream(build(), Settings())]))
        finally:
            await backend.aclose()
        return texts

    assert asyncio.run(twice()) == [TEXT, TEXT]
    one, two = server.requests
    assert one.connection == two.connection  # keep-alive on the same client


def test_concurrent_streams_on_one_loop(server: FakeOpenAIServer) -> None:
    server.responder = lambda request: Reply(TEXT, tokens_per_second=200)
    backend = backend_for(server)

    async def many() -> list[str]:
        async def one() -> str:
            return text_of([c async for c in backend.stream(build(), Settings())])

        try:
            return await asyncio.gather(*(one() for _ in range(5)))
        finally:
            await backend.aclose()

    assert asyncio.run(many()) == [TEXT] * 5
    assert len(server.requests) == 5
