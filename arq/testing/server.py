"""A real OpenAI-compatible HTTP server on loopback, for tests that use the openai SDK.

```python
with FakeOpenAIServer() as server:
    server.script(Reply('{"answer": "yes"}', tokens_per_second=50), Status.rate_limited(2))
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    ...
    assert server.requests[0].body["model"] == "gpt-4o-mini"
```

The server speaks enough HTTP/1.1 for httpx (keep-alive, chunked SSE streams) from an
asyncio loop in a background thread, so many slow streams can run at once. It serves
`POST .../chat/completions`, `GET .../models`, and the Files and Batches endpoints
(`arq.testing.batches`), and binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections import deque
from http import HTTPStatus
from types import TracebackType
from typing import Any

from arq.errors import ArqError, StateError
from arq.testing.batches import BatchAPI
from arq.testing.replies import (
    FaultEvent,
    ReceivedRequest,
    Render,
    Responder,
    Scripted,
    Status,
    as_scripted,
    flatten,
)
from arq.trace import redact_headers

__all__ = ["FakeOpenAIServer"]


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 answering with scripted replies.

    Replies given to `script` are served in order, one per chat request; when none is
    left, `responder` (if set) makes one from the request, else the request gets a 500
    saying "no scripted reply". A responder runs on the server's event loop, so it must
    not block.
    """

    def __init__(self, *, model: str = "fake-model") -> None:
        """Make a stopped server; `model` is listed by /models and used when none is asked."""
        self.model = model
        self.responder: Responder | None = None
        self.batches = BatchAPI(model)
        """Files and batches; `batches.outcome` chooses how the next batches end."""
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self._requests: list[ReceivedRequest] = []
        self._connections = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None
        self._startup_error: BaseException | None = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; the server must be started."""
        if self._port is None:
            raise StateError("the server is not running: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """The URL to give the openai client, e.g. "http://127.0.0.1:54321/v1"."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._script)

    def script(self, *replies: Scripted | str) -> None:
        """Queue replies, served in order, one per chat request; a str is `Reply(str)`."""
        checked = [as_scripted(item, "script()") for item in replies]
        with self._lock:
            self._script.extend(checked)

    def reset(self) -> None:
        """Forget the queue, the received requests, the responder, the files and batches."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
        self.responder = None
        self.batches = BatchAPI(self.model)

    def start(self, timeout: float = 5.0) -> FakeOpenAIServer:
        """Bind a free port on 127.0.0.1; returns once the server accepts connections."""
        if self._thread is not None:
            raise StateError("the server is already running")
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(target=self._run, args=(ready,), name="FakeOpenAIServer")
        thread.daemon = True  # a test that forgets stop() must not hang the interpreter
        self._thread = thread
        thread.start()
        if not ready.wait(timeout) or self._startup_error is not None:
            self.stop()
            raise StateError("the fake OpenAI server did not start") from self._startup_error
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every connection, stalled streams included; idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread, self._loop, self._port = None, None, None
        if thread.is_alive():
            raise StateError(f"the server thread did not stop within {timeout} s")

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._handle, host="127.0.0.1", port=0)
            )
        except BaseException as exc:
            self._startup_error = exc
            loop.close()
            ready.set()
            return
        self._loop = loop
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(_cancel_all())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # With a zero high-water mark drain() waits until the kernel took every byte, so
        # sent_chars counts what was flushed, not what sits in a user-space buffer.
        writer.transport.set_write_buffer_limits(high=0)
        conn = _Conn(reader, writer, next(self._connections))
        try:
            while await self._serve_one(conn):
                pass
        except asyncio.CancelledError:
            # stop() cancels every connection, stalled ones too, and must not wait for
            # them. The connection ends here, and so does its task, normally: asyncio logs
            # the traceback of a cancelled connection task (Python 3.11) as an error.
            writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve_one(self, conn: _Conn) -> bool:
        """Read and answer one request; False when the connection must end."""
        try:
            head = await _read_request(conn.reader)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        if head is None:
            return False
        method, target, version, headers, raw = head
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(raw) if raw else None
        path, _, query = target.partition("?")
        rec = ReceivedRequest(method, path, redact_headers(headers), body, conn.serial)
        rec.query = query
        with self._lock:
            self._requests.append(rec)
            serial = len(self._requests)
        try:
            await self._answer(conn, rec, serial, keep, raw)
        except _ClientGone:
            rec.disconnected_early = True
            return False
        finally:
            rec._done.set()
        return keep and rec.completed

    async def _answer(
        self, conn: _Conn, rec: ReceivedRequest, serial: int, keep: bool, raw: bytes
    ) -> None:
        """Route one request and write its answer, recording how much of it went out."""
        extra = [("x-request-id", f"req_fake{serial}")]
        extra.append(("Connection", "keep-alive" if keep else "close"))
        if self.batches.handles(rec.path):
            code, data, kind = self.batches.answer(rec, raw, lambda r: self._next_reply(r, serial))
            length = [("Content-Type", kind), ("Content-Length", str(len(data)))]
            await conn.send(_head(code, [*length, *extra]) + data)
            rec.completed = True
            return
        if rec.method == "GET" and rec.path.rstrip("/").endswith("/models"):
            model = {"id": self.model, "object": "model", "created": 0, "owned_by": "arq"}
            await conn.send(_response(200, {"object": "list", "data": [model]}, extra))
            rec.completed = True
            return
        if not (rec.method == "POST" and rec.path.rstrip("/").endswith("/chat/completions")):
            item: Scripted = Status(404, message=f"FakeOpenAIServer: no route {rec.path}")
        elif not isinstance(rec.body, dict):
            item = Status(400, message="We could not parse the JSON body of your request.")
        else:
            item = self._next_reply(rec, serial)
        rec.reply = item
        if isinstance(item, Status):
            extra += item.headers()
            await conn.send(_response(item.code, item.error_body(), extra))
            rec.completed = True
            return
        reply, events = flatten(item)
        render = Render(reply, rec.body, serial, self.model)
        if rec.stream:
            rec.completed = await _stream(conn, rec, render, events, extra)
            return
        if any(e.kind == "drop" for e in events):
            conn.writer.transport.abort()
            return
        stalls = sum(e.seconds for e in events if e.kind == "stall")
        await conn.pause(stalls + len(render.pieces) * render.delay)
        bad = next((e.data for e in events if e.kind == "malformed"), None)
        payload = render.completion() if bad is None else bad
        await conn.send(_response(200, payload, extra, json_body=True))
        rec.sent_chars = len(render.text)
        rec.completed = True

    def _next_reply(self, rec: ReceivedRequest, serial: int) -> Scripted:
        with self._lock:
            if self._script:
                return self._script.popleft()
        responder = self.responder
        if responder is None:
            return Status(
                500,
                message=f"FakeOpenAIServer: no scripted reply for request #{serial}; "
                "queue one with server.script(...) or set server.responder",
            )
        try:
            return as_scripted(responder(rec), "the responder")
        except Exception as exc:  # the test must see it, as an answer it can read
            return Status(500, message=f"FakeOpenAIServer: the responder raised {exc!r}")


class _ClientGone(ArqError):
    """The client closed or reset the connection before the reply was complete."""


class _Conn:
    """One client connection: sends that notice the client leaving, and pauses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, serial: int):
        self.reader, self.writer, self.serial = reader, writer, serial

    def gone(self) -> bool:
        # httpx never pipelines, so during a reply the only thing the client can send is
        # its FIN (EOF) or a reset; both show on the reader without consuming anything.
        reader = self.reader
        return self.writer.is_closing() or reader.at_eof() or reader.exception() is not None

    async def send(self, data: bytes) -> None:
        if self.gone():
            raise _ClientGone
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as exc:
            raise _ClientGone from exc

    async def event(self, data: str | bytes) -> None:
        """Send one SSE event as one HTTP chunk; bytes are that chunk's payload as is."""
        await self.send(_http_chunk(data) if isinstance(data, bytes) else _sse_chunk(data))

    async def pause(self, seconds: float) -> None:
        """Sleep, checking every 50 ms whether the client left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            if self.gone():
                raise _ClientGone
            await asyncio.sleep(min(left, 0.05))


async def _stream(
    conn: _Conn, rec: ReceivedRequest, render: Render, events: list[FaultEvent], extra: list[Any]
) -> bool:
    """Write `render` as an SSE stream with its fault events; True if it all went out."""
    headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
    await conn.send(_head(200, [*headers, ("Transfer-Encoding", "chunked"), *extra]))
    await conn.event(render.chunk(render.first_delta()))
    pieces, pending, pos = deque(render.pieces), deque(events), 0
    while pieces or pending:
        if pending and (pending[0].at <= pos or not pieces):
            event = pending.popleft()
            if event.kind == "drop":
                conn.writer.transport.abort()  # no terminating chunk: the client sees a cut body
                return False
            if event.kind == "stall":
                await conn.pause(event.seconds)
            else:
                await conn.event(event.data)
            continue
        piece = pieces.popleft()
        if pending and pending[0].at < pos + len(piece):  # an event strikes inside this piece
            cut = pending[0].at - pos
            pieces.appendleft(piece[cut:])
            piece = piece[:cut]
        if pos and render.delay:
            await conn.pause(render.delay)
        await conn.event(render.chunk(render.piece_delta(piece)))
        pos += len(piece)
        rec.sent_chars = pos
    await conn.event(render.chunk({}, render.finish_reason))
    if render.include_usage and (usage := render.usage()) is not None:
        await conn.event(render.envelope([], usage))
    # [DONE] and the last chunk go together, so a client draining the body after [DONE]
    # (the async SDK does) finds the end at once.
    await conn.send(_sse_chunk("[DONE]") + b"0\r\n\r\n")
    return True


async def _cancel_all() -> None:
    """Cancel every connection task and let the aborted transports finish closing."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, str, dict[str, str], bytes] | None:
    """Read one request: method, target, version, lower-cased headers, body; None at EOF."""
    line = await reader.readline()
    while line in (b"\r\n", b"\n"):  # tolerate blank lines between requests (RFC 9112)
        line = await reader.readline()
    if not line.endswith(b"\n"):
        return None
    method, target, version = line.decode("latin-1").split()
    headers: dict[str, str] = {}
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
            pass
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method.upper(), target, version.upper(), headers, body


def _sse_chunk(data: str) -> bytes:
    """One SSE event framed as one HTTP/1.1 chunk."""
    return _http_chunk(f"data: {data}\n\n".encode())


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _head(code: int, headers: list[tuple[str, str]]) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {code} {phrase}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _response(
    code: int, body: Any, extra: list[tuple[str, str]], *, json_body: bool = False
) -> bytes:
    """A whole response with Content-Length; a str or bytes body is sent as is (a str
    as text/plain unless `json_body`), anything else as JSON."""
    kind = "application/json"
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data, kind = body.encode(), kind if json_body else "text/plain; charset=utf-8"
    else:
        data = json.dumps(body).encode()
    return _head(code, [("Content-Type", kind), ("Content-Length", str(len(data))), *extra]) + data
