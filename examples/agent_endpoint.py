"""An agent backend: a small async web endpoint that runs a reasoning schema per request.

    python examples/agent_endpoint.py --base-url http://127.0.0.1:8000/v1 --model M --port 8080
    curl -s localhost:8080/triage -d '{"ticket": "My router (order R-7731) keeps rebooting."}'

    python examples/agent_endpoint.py --demo     # self-contained: a loopback test model,
                                                 # 50 concurrent requests, then it exits

One `Executor` serves every request: `arun` runs on the server's event loop, many at once,
with the number of model calls in flight bounded by a semaphore. Each response is the
validated output with the calls and tokens it took, or a 502 naming the error; an invalid
object is never returned. Only the standard library serves HTTP here, so the example has no
extra dependency; a real service would use its web framework the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Annotated, Any, Literal

import arq
from arq.backends import OpenAIBackend
from arq.testing import FakeOpenAIServer, SchemaResponder


class Triage(arq.Reasoning):
    """Triage a support ticket."""

    summary: str = arq.query("What is the ticket about?", max_length=120, max_chunks=40)
    order_id: Annotated[str, arq.verbatim_in("ticket")] | None = arq.query(
        "Which order id does the ticket give?",
        instruction="Copy it exactly from the ticket; null if there is none.",
        default=None,
    )
    team: Literal["billing", "shipping", "tech"] = arq.answer("Which team takes it?")


class Endpoint:
    """POST /triage with a JSON context; at most `limit` runs at once."""

    def __init__(self, executor: arq.Executor, limit: int) -> None:
        self.executor = executor
        self.slots = asyncio.Semaphore(limit)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self.respond(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as error:
            status, body = 400, {"error": f"bad request: {error}"}
        payload = json.dumps(body).encode()
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write((head + "Connection: close\r\n\r\n").encode() + payload)
        await writer.drain()
        writer.close()

    async def respond(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        request_line = (await reader.readline()).decode()
        length = 0
        while (line := (await reader.readline()).decode().strip()) != "":
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if not request_line.startswith("POST /triage "):
            return 404, {"error": "POST a JSON context to /triage"}
        context = json.loads(await reader.readexactly(length))
        if not isinstance(context, dict):
            return 400, {"error": "the body must be a JSON object"}
        async with self.slots:
            try:
                result = await self.executor.arun(Triage, context)
            except arq.ArqError as error:
                return 502, {"error": f"{type(error).__name__}: {error}"}
        return 200, {
            "output": result.output.model_dump(),
            "calls": len(result.trace.attempts),
            "completion_tokens": result.usage.completion_tokens,
        }


async def post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A minimal HTTP client for the demo."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    head = f"POST /triage HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(payload)}\r\n\r\n"
    writer.write(head.encode() + payload)
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


async def serve(executor: arq.Executor, port: int, limit: int, demo: int) -> int:
    endpoint = Endpoint(executor, limit)
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", port)
    port = server.sockets[0].getsockname()[1]
    async with server, executor:
        if not demo:
            print(f"serving POST http://127.0.0.1:{port}/triage", flush=True)
            await server.serve_forever()
        tickets = [{"ticket": f"Ticket {i}: an example order is late."} for i in range(demo)]
        start = time.perf_counter()
        answers = await asyncio.gather(*(post(port, t) for t in tickets))
        elapsed = time.perf_counter() - start
    ok = sum(1 for status, _ in answers if status == 200)
    print(f"{ok} of {demo} requests answered with a valid triage in {elapsed:.2f} s")
    print("first answer:", json.dumps(answers[0][1]))
    return 0 if ok == demo else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Serve a reasoning schema over HTTP.")
    parser.add_argument("--base-url", help="an OpenAI-compatible server")
    parser.add_argument("--model", default="default")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--limit", type=int, default=16, help="runs in flight at once")
    parser.add_argument("--demo", action="store_true", help="run against a loopback test model")
    args = parser.parse_args(argv)
    if args.demo:
        with FakeOpenAIServer() as fake:
            fake.responder = SchemaResponder(tokens_per_second=500)
            backend = OpenAIBackend("fake-model", base_url=fake.base_url)
            return asyncio.run(serve(arq.Executor(backend), 0, args.limit, demo=50))
    if args.base_url is None:
        parser.error("give --base-url (or --demo)")
    key = os.environ.get("OPENAI_API_KEY")
    backend = OpenAIBackend(args.model, base_url=args.base_url, api_key=key)
    return asyncio.run(serve(arq.Executor(backend), args.port, args.limit, demo=0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
