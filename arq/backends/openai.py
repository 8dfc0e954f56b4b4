"""`OpenAIBackend`: OpenAI and every OpenAI-compatible server, through the official SDK.

The only module of arq that imports `openai`. It maps a `Request` to the wire form the
server's capabilities allow (strict `json_schema`, `json_object` with a `schema`, JSON
mode, a forced tool call, or the prompt alone), streams the answer, and translates every
SDK error at one boundary (`_translated`) into `BackendError`: built from masked text
and plain attributes, raised outside the `except` block, so no `__cause__` or
`__context__` reaches the SDK's exception (whose message and request headers can hold the
key). The key and credential headers it is given are registered with
`arq.trace.register_secret`, so they are masked wherever arq writes text.

The SDK's own retries are switched off on every client this backend uses: the executor
retries transport errors itself, and two retry layers would multiply the attempts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import weakref
from collections.abc import AsyncGenerator, Awaitable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import openai

from arq.backends.base import Capabilities, Chunk, Settings
from arq.backends.openai_events import chunk_of
from arq.checks import AllowedValues
from arq.errors import BackendError, InvalidArgumentError, StateError
from arq.jsonschema import MAX_ENUM_VALUES, enum_values, json_schema
from arq.prompt import Request
from arq.retry import parse_retry_after
from arq.trace import credential_header, redact, register_secret

__all__ = ["PROFILES", "OpenAIBackend"]

MAX_ENUM_CHARS = 7_500  # characters of the choices sent (OpenAI allows 15,000 in a large enum)

PROFILES: dict[str, Capabilities] = {
    "openai": Capabilities(output="json_schema"),
    "llama-cpp-python": Capabilities(output="json_object_schema"),
    "llama.cpp": Capabilities(output="json_schema"),
    "vllm": Capabilities(output="json_schema"),
    "ollama": Capabilities(output="json_schema", stream_usage=True),
    "lm-studio": Capabilities(output="json_schema"),
    "plain": Capabilities(output="prompt", stream_usage=False),
}
"""Capabilities of servers arq has been used with; pass one as `capabilities=`.

llama-cpp-python's own server rejects the `json_schema` response format and wants
`{"type": "json_object", "schema": ...}`; llama.cpp's `llama-server` takes both.
"""

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_NO_KEY = "not-needed"  # the SDK refuses to start without a key, which local servers ignore
_END = object()  # `anext`'s default: the stream has ended
_T = TypeVar("_T")
_OTHER_LOOP = (
    "the openai.AsyncOpenAI client given to OpenAIBackend holds connections of the event loop"
    " that first used it, and this call runs on another event loop; make every call from one"
    " loop (Executor.run and map use the executor's own, each asyncio.run a new one), or give"
    " the backend an openai.OpenAI client, or base_url and api_key: it then makes a client"
    " for each event loop"
)


class OpenAIBackend:
    """Streams from the Chat Completions API of OpenAI or any compatible server.

    Args:
        model: The model name the server expects.
        client: An `openai.AsyncOpenAI` or `openai.OpenAI` client to take settings from
            (key, base URL, headers, timeout). An `AsyncOpenAI` client is used as is, with
            its retries off; its connections belong to the event loop that first uses it,
            and a call from another loop raises `StateError` (`Executor.run` and `map` run
            on the executor's own loop, each `asyncio.run` on a new one). From an `OpenAI`
            client, an async twin is made per event loop, so any loop works.
        base_url: The server, e.g. ``"http://127.0.0.1:8080/v1"`` (ignored with `client`).
        api_key: The key; by default the SDK reads `OPENAI_API_KEY`. Servers that need
            none accept any text, so a placeholder is used when `base_url` is given alone.
        capabilities: What the server supports (see `PROFILES`); strict `json_schema`
            by default.
        timeout: Seconds for connecting and for each read, per the SDK.
        max_tokens_param: Name of the token-limit field: OpenAI's reasoning models want
            ``"max_completion_tokens"``; most compatible servers know ``"max_tokens"``.
        extra_body: Extra JSON fields sent with every request (server-specific options,
            e.g. vLLM's ``{"continue_final_message": True, "add_generation_prompt": False}``
            when `capabilities.prefill` is set).
    """

    def __init__(
        self,
        model: str,
        *,
        client: openai.AsyncOpenAI | openai.OpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        capabilities: Capabilities | None = None,
        timeout: float | None = 60.0,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if not model:
            raise InvalidArgumentError("OpenAIBackend needs a model name")
        self.model = model
        self._capabilities = capabilities or Capabilities()
        self._max_tokens_param = max_tokens_param
        self._extra_body = dict(extra_body or {})
        self._shared: openai.AsyncOpenAI | None = None
        self._shared_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._settings: dict[str, Any] = {"timeout": timeout, "max_retries": 0}
        if isinstance(client, openai.AsyncOpenAI):
            self._shared = client.with_options(max_retries=0)
        elif isinstance(client, openai.OpenAI):
            self._settings.update(
                api_key=client.api_key,
                base_url=client.base_url,
                organization=client.organization,
                project=client.project,
                timeout=client.timeout,
                default_headers=_headers_given(client),
            )
        elif client is not None:
            raise InvalidArgumentError(
                f"client must be openai.AsyncOpenAI or openai.OpenAI, not {client!r}"
            )
        else:
            if base_url is not None:
                self._settings["base_url"] = base_url
            if api_key is not None:
                self._settings["api_key"] = api_key
            elif base_url is not None:
                # local servers need no key, but the SDK refuses to start without one
                self._settings["api_key"] = _NO_KEY
        self._clients: dict[
            asyncio.AbstractEventLoop, tuple[openai.AsyncOpenAI, asyncio.Task[None]]
        ] = {}
        for secret in _secrets(self._settings, self._shared):
            register_secret(secret)

    @property
    def name(self) -> str:
        """The model name."""
        return self.model

    @property
    def capabilities(self) -> Capabilities:
        """What the server supports."""
        return self._capabilities

    def payload(self, request: Request, settings: Settings) -> dict[str, Any]:
        """The JSON body of the Chat Completions call for `request` (pure; no I/O)."""
        caps = self._capabilities
        messages: list[dict[str, Any]] = [dict(m) for m in request.messages]
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if caps.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if settings.max_tokens is not None:
            body[self._max_tokens_param] = settings.max_tokens
        # one temperature per answer: the first step's, so a repair still samples its step
        temperature = settings.first_step_temperature
        if temperature is None:
            temperature = settings.temperature
        if temperature is not None:
            body["temperature"] = temperature
        if settings.seed is not None:
            body["seed"] = settings.seed
        name = request.schema.__name__
        if request.prefill:
            # a constrained answer would start a new object: a continuation is unconstrained
            messages.append({"role": "assistant", "content": request.prefill})
        elif caps.output == "json_schema":
            strict = _with_choices(
                json_schema(request.schema, "openai-strict", steps=request.steps), request
            )
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": strict, "strict": True},
            }
        elif caps.output == "json_object_schema":
            schema = _with_choices(request.output_schema, request)
            body["response_format"] = {"type": "json_object", "schema": schema}
        elif caps.output == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif caps.output == "tool":
            strict = _with_choices(
                json_schema(request.schema, "openai-strict", steps=request.steps), request
            )
            function = {"name": name, "parameters": strict, "strict": True}
            body["tools"] = [{"type": "function", "function": function}]
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        return body

    async def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Stream the answer; closing this generator closes the HTTP response."""
        body = self.payload(request, settings)
        client = self._client()
        extra = self._extra_body or None
        create = client.chat.completions.create(**body, extra_body=extra)
        response = await _guarded(create, reading=False)
        try:
            while (event := await _guarded(anext(response, _END), reading=True)) is not _END:
                chunk = chunk_of(event)
                if chunk is not None:
                    yield chunk
        finally:
            await response.close()

    async def complete(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Send a prepared Chat Completions body as it is, without streaming (a batch line's
        `body`); the completion as the server wrote it, and its request id.

        Raises:
            BackendError: the server answered with an error status, or the call failed.
        """
        client = self._client()
        rest = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        create = client.chat.completions.with_raw_response.create(
            model=body.get("model", self.model),
            messages=body.get("messages", []),
            stream=False,
            extra_body=rest or None,
        )
        raw = await _guarded(create, reading=False)
        try:
            completion = json.loads(raw.text)
        except ValueError:
            completion = None
        if not isinstance(completion, dict):
            message = "the model service sent a completion that is not a JSON object"
            raise BackendError(message, retryable=True, request_id=raw.request_id)
        return completion, raw.request_id

    async def submit_batch(self, path: str | os.PathLike[str], metadata: dict[str, str]) -> str:
        """Upload a batch input file and start a Chat Completions batch of it; its id."""
        client = self._client()
        upload = await _guarded(
            client.files.create(file=Path(path), purpose="batch"), reading=False
        )
        created = client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )
        return (await _guarded(created, reading=False)).id

    async def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch as the Batch API describes it (`status`, `output_file_id`, `errors`...)."""
        found = await _guarded(self._client().batches.retrieve(batch_id), reading=False)
        return found.model_dump(mode="json")

    async def batches(self) -> list[dict[str, Any]]:
        """The batches the service lists, newest first."""
        client = self._client()

        async def every() -> list[dict[str, Any]]:
            return [b.model_dump(mode="json") async for b in client.batches.list(limit=100)]

        return await _guarded(every(), reading=True)

    async def download(self, file_id: str, path: str | os.PathLike[str]) -> None:
        """Write a file of the service to `path` as it arrives."""
        client = self._client()

        async def fetch() -> None:
            async with client.files.with_streaming_response.content(file_id) as response:
                await response.stream_to_file(path)

        await _guarded(fetch(), reading=True)

    async def delete_file(self, file_id: str) -> None:
        """Delete a file of the service."""
        await _guarded(self._client().files.delete(file_id), reading=False)

    async def aclose(self) -> None:
        """Close the clients this backend made (not one the user passed), each on its loop."""
        current = asyncio.get_running_loop()
        for loop, (client, closer) in list(self._clients.items()):
            if loop is current:
                closer.cancel()
                del self._clients[loop]
                await client.close()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(closer.cancel)  # it closes the client there

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._shared is not None:
            if self._shared_loop is None:
                self._shared_loop = weakref.ref(loop)
            elif self._shared_loop() is not loop:
                raise StateError(_OTHER_LOOP)
            return self._shared
        entry = self._clients.get(loop)
        if entry is None:
            client = openai.AsyncOpenAI(**self._settings)
            entry = self._clients[loop] = (client, loop.create_task(self._close_at_end(client)))
        return entry[0]

    async def _close_at_end(self, client: openai.AsyncOpenAI) -> None:
        """Wait until this loop's tasks are cancelled (`asyncio.run` does so as it ends),
        then close the client on its own loop, so no connection outlives the loop."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._clients.pop(asyncio.get_running_loop(), None)
            await client.close()


def _headers_given(client: openai.OpenAI) -> dict[str, str] | None:
    """The headers the caller gave `client`, for its async twin: the SDK's public
    `default_headers` mixes them with its own, so those of a client given none are left out
    (the twin sends its own, such as its User-Agent)."""
    with openai.OpenAI(
        api_key="unused",
        base_url=client.base_url,
        organization=client.organization,
        project=client.project,
        max_retries=0,
    ) as plain:
        own = plain.default_headers
    headers = client.default_headers.items()
    given = {k: v for k, v in headers if isinstance(v, str) and own.get(k) != v}
    return given or None


def _secrets(settings: Mapping[str, Any], shared: openai.AsyncOpenAI | None) -> list[str]:
    """The key and the credential headers' values this backend's requests carry."""
    if shared is not None:
        key: object = shared.api_key
        headers: Mapping[str, object] = shared.default_headers
    else:  # with no key given, the SDK reads the variable
        key = settings.get("api_key", os.environ.get("OPENAI_API_KEY"))
        headers = settings.get("default_headers") or {}
    secrets = [key] if isinstance(key, str) and key != _NO_KEY else []
    for name, value in headers.items():
        if isinstance(value, str) and credential_header(name):
            secrets += [value, value.partition(" ")[2]]  # also a token without its scheme
    return secrets


async def _guarded(call: Awaitable[_T], *, reading: bool) -> _T:
    """Await one call of the SDK; its failure comes out as a `BackendError` raised outside
    the `except` block, so the SDK's exception is neither its cause nor its context."""
    try:
        return await call
    except Exception as exc:
        failure = _translated(exc, reading=reading)
        if failure is None:
            raise
    raise failure


def _translated(exc: Exception, *, reading: bool) -> BackendError | None:
    """The one place SDK and transport errors become arq errors, from masked text and
    plain attributes; None for an error that is not the service's (a bug, a bad argument).

    While `reading` the stream, any error is the service's: the SDK raises it while
    decoding what the service sent.
    """
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUS or status >= 500
        return BackendError(
            redact(f"the model service answered HTTP {status}: {exc.message}"),
            retryable=retryable,
            status=status,
            retry_after=parse_retry_after(exc.response.headers) if retryable else None,
            request_id=exc.request_id,
        )
    if isinstance(exc, openai.APITimeoutError):
        return BackendError("the model service timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return BackendError(
            redact(f"the connection to the model service failed: {cause!r}"), retryable=True
        )
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return BackendError(
            redact(f"the model service sent an error: {exc.message}"), retryable=True
        )
    if isinstance(exc, ValueError):  # a stream event that is not JSON
        return BackendError(
            redact(f"the model service sent a malformed event: {exc}"), retryable=True
        )
    if type(exc).__module__.partition(".")[0] in ("httpx", "httpx2", "httpcore", "h11"):
        return BackendError(redact(f"the stream broke off: {exc!r}"), retryable=True)
    if reading:  # an event the SDK could not build
        return BackendError(
            redact(f"the stream could not be read: {type(exc).__name__}: {exc}"), retryable=True
        )
    return None


def _with_choices(schema: dict[str, Any], request: Request) -> dict[str, Any]:
    """`schema` with each grounded step that has a list of choices (`one_of`, or the
    quotes that fit a pattern) narrowed to them (an `enum`), so a server that enforces the
    schema holds the value to them. As many values as the schema's own enums leave under
    OpenAI's `MAX_ENUM_VALUES` and at most `MAX_ENUM_CHARS` characters in all, steps in
    order, a step whose list does not fit skipped (OpenAI refuses larger enums); those, and
    quotes of a whole source, are left to the check."""
    properties = schema.get("properties", {})
    choices: dict[str, AllowedValues] = {}
    values, chars = MAX_ENUM_VALUES - enum_values(schema), MAX_ENUM_CHARS
    for step, held in request.allowed.items():
        if held.choices is None or step not in properties:
            continue
        size = sum(len(choice) for choice in held.choices)
        if len(held.choices) <= values and size <= chars:
            choices[step] = held
            values, chars = values - len(held.choices), chars - size
    if not choices:
        return schema
    narrowed = copy.deepcopy(schema)
    for step, held in choices.items():
        _string_part(narrowed["properties"][step], items=held.items)["enum"] = list(
            held.choices or ()
        )
    return narrowed


def _string_part(prop: dict[str, Any], *, items: bool) -> dict[str, Any]:
    """Where a step's strings are in its JSON Schema: the property, a list's `items`, or
    the string branch of an `anyOf` with null (so null stays allowed)."""
    target: dict[str, Any] = prop["items"] if items else prop
    for branch in target.get("anyOf", ()):
        if branch.get("type") == "string":
            string: dict[str, Any] = branch
            return string
    return target
