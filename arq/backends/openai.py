"""`OpenAIBackend`: OpenAI and every OpenAI-compatible server, through the official SDK.

The only module of arq that imports `openai`. It maps a `Request` to the wire form the
server's capabilities allow (strict `json_schema`, `json_object` with a `schema`, JSON
mode, a forced tool call, or the prompt alone), and streams the answer: the SDK builds
and sends the request (auth, base URL, headers, query, timeouts, HTTP status errors), and
the response's bytes are read through its public raw-response interface
(`with_streaming_response`) and decoded by `arq.backends.openai_events`, into only the
fields arq uses, with no SDK object per chunk. It translates every SDK and transport
error at one boundary (`_translated`) into `BackendError`: built from masked text
and plain attributes, raised outside the `except` block, so no `__cause__` or
`__context__` reaches the SDK's exception (whose message and request headers can hold the
key). The key and credential headers it is given are registered with
`arq.trace.register_secret`, so they are masked wherever arq writes text.

The SDK's own retries are switched off on every client this backend uses: the executor
retries transport errors itself, and two retry layers would multiply the attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import openai

from arq.backends.base import Capabilities, Chunk, Settings
from arq.backends.enums import with_choices
from arq.backends.openai_events import StreamEvents
from arq.errors import BackendError, InvalidArgumentError, StateError
from arq.jsonschema import json_schema
from arq.prompt import Request
from arq.retry import parse_retry_after
from arq.trace import credential_header, redact, register_secret

__all__ = ["PROFILES", "OpenAIBackend"]

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
_END = object()  # a sync client's reading thread is done: no more pieces
_DRAIN_SECONDS = 0.1  # reading the body's end after [DONE], so the connection is reused
_TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "h11")
_T = TypeVar("_T")
_OTHER_LOOP = (
    "the openai.AsyncOpenAI client given to OpenAIBackend holds connections of the event loop"
    " that first used it, and this call runs on another event loop; make every call from one"
    " loop (Executor.run and map use the executor's own, each asyncio.run a new one), or give"
    " the backend an openai.OpenAI client (it reads on a thread of its own, from any loop),"
    " or base_url and api_key (it then makes a client for each event loop)"
)


class OpenAIBackend:
    """Streams from the Chat Completions API of OpenAI or any compatible server.

    Args:
        model: The model name the server expects.
        client: Your own client: `openai.AsyncOpenAI`, `openai.OpenAI` or their Azure
            kinds (`AsyncAzureOpenAI`, `AzureOpenAI`). It sends every request as it is
            configured (key, base URL, headers, query, timeout, HTTP client), with its
            retries off. An async client's connections belong to the event loop that
            first uses it, and a call from another loop raises `StateError`
            (`Executor.run` and `map` run on the executor's own loop, each `asyncio.run`
            on a new one). A sync client reads each stream on a thread of its own, so
            any loop works; closing a stream early closes its response when the next
            bytes arrive (or the client's read timeout passes).
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
        self._shared: openai.AsyncOpenAI | openai.OpenAI | None = None
        self._shared_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._settings: dict[str, Any] = {"timeout": timeout, "max_retries": 0}
        if isinstance(client, openai.AsyncOpenAI | openai.OpenAI):
            self._shared = client.with_options(max_retries=0)
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
            strict = with_choices(
                json_schema(request.schema, "openai-strict", steps=request.steps), request
            )
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": strict, "strict": True},
            }
        elif caps.output == "json_object_schema":
            schema = with_choices(request.output_schema, request)
            body["response_format"] = {"type": "json_object", "schema": schema}
        elif caps.output == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif caps.output == "tool":
            strict = with_choices(
                json_schema(request.schema, "openai-strict", steps=request.steps), request
            )
            function = {"name": name, "parameters": strict, "strict": True}
            body["tools"] = [{"type": "function", "function": function}]
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        return body

    async def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Stream the answer; closing this generator closes the HTTP response."""
        body = self.payload(request, settings)
        if self._extra_body:
            body["extra_body"] = self._extra_body
        client = self._client()
        events = StreamEvents()
        pieces = (
            _async_pieces(client, body, events)
            if isinstance(client, openai.AsyncOpenAI)
            else _thread_pieces(client, body, events)
        )
        try:
            async for piece in pieces:
                for chunk in events.feed(piece):
                    yield chunk
                if events.done:
                    break
            else:
                for chunk in events.finish():
                    yield chunk
        finally:
            await pieces.aclose()

    async def complete(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Send a prepared Chat Completions body as it is, without streaming (a batch line's
        `body`); the completion as the server wrote it, and its request id.

        Raises:
            BackendError: the server answered with an error status, or the call failed.
        """
        rest = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        raw = await self._api(
            lambda client: client.chat.completions.with_raw_response.create(
                model=body.get("model", self.model),
                messages=body.get("messages", []),
                stream=False,
                extra_body=rest or None,
            )
        )
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
        upload = await self._api(lambda c: c.files.create(file=Path(path), purpose="batch"))
        created = await self._api(
            lambda c: c.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata=metadata,
            )
        )
        return str(created.id)

    async def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch as the Batch API describes it (`status`, `output_file_id`, `errors`...)."""
        found = await self._api(lambda c: c.batches.retrieve(batch_id))
        return dict(found.model_dump(mode="json"))

    async def batches(self) -> list[dict[str, Any]]:
        """The batches the service lists, newest first."""
        client = self._client()
        if isinstance(client, openai.OpenAI):
            listed = await _guarded(
                asyncio.to_thread(list, client.batches.list(limit=100)), reading=True
            )
            return [b.model_dump(mode="json") for b in listed]

        async def every() -> list[dict[str, Any]]:
            return [b.model_dump(mode="json") async for b in client.batches.list(limit=100)]

        return await _guarded(every(), reading=True)

    async def download(self, file_id: str, path: str | os.PathLike[str]) -> None:
        """Write a file of the service to `path` as it arrives."""
        client = self._client()
        if isinstance(client, openai.OpenAI):

            def fetch_sync() -> None:
                with client.files.with_streaming_response.content(file_id) as response:
                    response.stream_to_file(path)

            await _guarded(asyncio.to_thread(fetch_sync), reading=True)
            return

        async def fetch() -> None:
            async with client.files.with_streaming_response.content(file_id) as response:
                await response.stream_to_file(path)

        await _guarded(fetch(), reading=True)

    async def delete_file(self, file_id: str) -> None:
        """Delete a file of the service."""
        await self._api(lambda c: c.files.delete(file_id))

    async def _api(self, call: Callable[[Any], Any]) -> Any:
        """`call(client)`: awaited on an async client, run on a thread for a sync one."""
        client = self._client()
        if isinstance(client, openai.OpenAI):
            return await _guarded(asyncio.to_thread(call, client), reading=False)
        return await _guarded(call(client), reading=False)

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

    def _client(self) -> openai.AsyncOpenAI | openai.OpenAI:
        loop = asyncio.get_running_loop()
        if isinstance(self._shared, openai.OpenAI):
            return self._shared  # read on a thread of its own: any loop will do
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


def _secrets(
    settings: Mapping[str, Any], shared: openai.AsyncOpenAI | openai.OpenAI | None
) -> list[str]:
    """The key and the credential headers' values this backend's requests carry."""
    if shared is not None:
        key: object = shared.api_key
        headers: Mapping[str, object] = shared.default_headers
    else:  # with no key given, the SDK reads the variable
        key = settings.get("api_key", os.environ.get("OPENAI_API_KEY"))
        headers = settings.get("default_headers") or {}
    secrets = [key] if isinstance(key, str) and key and key != _NO_KEY else []
    for name, value in headers.items():
        if isinstance(value, str) and credential_header(name):
            secrets += [value, value.partition(" ")[2]]  # also a token without its scheme
    return secrets


async def _async_pieces(
    client: openai.AsyncOpenAI, body: dict[str, Any], events: StreamEvents
) -> AsyncGenerator[bytes, None]:
    """The body of a streamed response, read through the SDK's raw-response interface;
    closing this generator closes the response. After `[DONE]` the body's end is read
    (briefly), as the SDK does, so an HTTP/1.1 connection goes back to the pool."""
    manager = client.chat.completions.with_streaming_response.create(**body)
    response = await _guarded(manager.__aenter__(), reading=False)
    pieces = response.iter_bytes()
    try:
        while (piece := await _guarded(anext(pieces, None), reading=True)) is not None:
            yield piece
    finally:
        if events.done:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_drain(pieces), _DRAIN_SECONDS)
        if isinstance(pieces, AsyncGenerator):
            await pieces.aclose()
        await response.close()


async def _drain(pieces: AsyncIterator[bytes]) -> None:
    async for _ in pieces:
        pass


async def _thread_pieces(
    client: openai.OpenAI, body: dict[str, Any], events: StreamEvents
) -> AsyncGenerator[bytes, None]:
    """The body of a streamed response of a sync client, read on a thread of its own and
    handed to this loop. Closing this generator tells the thread to close the response
    once its current read returns; after `[DONE]` it first lets the thread read the body's
    end (briefly), so the connection goes back to the pool."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        reading = False
        try:
            with client.chat.completions.with_streaming_response.create(**body) as response:
                reading = True
                for piece in response.iter_bytes():
                    put(piece)
                    if stop.is_set():
                        break
        except Exception as exc:
            put(_translated(exc, reading=reading) or exc)
        finally:
            put(_END)  # whatever happened, the reader is not left waiting

    threading.Thread(target=pump, name="arq-openai-stream", daemon=True).start()
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        if events.done:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_until_end(queue), _DRAIN_SECONDS)
        stop.set()


async def _until_end(queue: asyncio.Queue[object]) -> None:
    while await queue.get() is not _END:
        pass


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

    While `reading` the response's body, any error is the service's: the HTTP client
    raises it while receiving what the service sent.
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
    if type(exc).__module__.partition(".")[0] in _TRANSPORT_MODULES:
        # the HTTP client's own errors, raised while the raw body is read
        if any(kind.__name__ == "TimeoutException" for kind in type(exc).__mro__):
            return BackendError("the model service timed out", retryable=True)
        return BackendError(redact(f"the stream broke off: {exc!r}"), retryable=True)
    if reading:  # the body could not be read
        return BackendError(
            redact(f"the stream could not be read: {type(exc).__name__}: {exc}"), retryable=True
        )
    return None
