"""Throughput: many runs at once against a zero-delay loopback server, arq against the raw SDK.

Every side makes `--runs` calls with at most `--concurrency` in flight, on one event loop,
streaming the same reply from a server in a child process (its work is not counted):

- server ceiling: a raw SSE reader with no parsing (HTTP/1.1 over asyncio streams, one
  keep-alive connection per slot, reading each body to its last chunk), measured first, so
  that a limit of the test server is not read as one of a client;
- raw async SDK: `chat.completions.create(stream=True)`, join, `model_validate_json`;
- arq: `Executor.amap` (per-step checks, traces, results in input order).

The SDK and arq alternate for `--repeats` rounds. Prints the median runs per second and
client CPU time per run of each side, and arq's ratios to the raw SDK.

    python bench/throughput.py [--runs 1000] [--concurrency 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import openai
from loopback import server_process
from overhead import make_schema

import arq
from arq.backends import OpenAIBackend, Settings


async def raw_reader(base_url: str, body: dict[str, Any], args: Any) -> int:
    """The server's ceiling: each slot reads whole streamed bodies, parsing nothing."""
    url = urlsplit(base_url)
    data = json.dumps(body).encode()
    head = (
        f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    runs = iter(range(args.runs))

    async def slot() -> int:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        done = 0
        for _ in runs:
            writer.write(head + data)
            tail = b""
            while not tail.endswith(b"\r\n0\r\n\r\n"):  # the body's last chunk
                piece = await reader.read(65536)
                if not piece:
                    raise RuntimeError("the server closed the connection")
                tail = (tail + piece)[-16:]
            done += 1
        writer.close()
        await writer.wait_closed()
        return done

    return sum(await asyncio.gather(*(slot() for _ in range(args.concurrency))))


async def raw_sdk(base_url: str, body: dict[str, Any], schema: type[Any], args: Any) -> int:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    limit = asyncio.Semaphore(args.concurrency)

    async def one() -> Any:
        async with limit:
            stream = await client.chat.completions.create(**body)
            parts = [e.choices[0].delta.content or "" async for e in stream if e.choices]
            return schema.model_validate_json("".join(parts))

    done = await asyncio.gather(*(one() for _ in range(args.runs)))
    await client.close()
    return len(done)


async def with_arq(base_url: str, schema: type[arq.Reasoning], args: Any) -> int:
    backend = OpenAIBackend("fake-model", base_url=base_url)
    async with arq.Executor(backend) as executor:
        contexts = [{"question": "Why?"}] * args.runs
        outcomes = await executor.amap(schema, contexts, concurrency=args.concurrency)
    failed = [o for o in outcomes if not isinstance(o, arq.Result)]
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed, e.g. {failed[0]}")
    return len(outcomes)


def timed(coroutine: Any) -> tuple[int, float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    count = asyncio.run(coroutine)
    return count, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per side")
    args = parser.parse_args()
    schema = make_schema(args.steps)
    text = json.dumps({name: f"value of {name}, " + "x" * 60 for name in schema.model_fields})
    with server_process(text) as base_url:
        body = OpenAIBackend("fake-model", base_url=base_url).payload(
            arq.PromptBuilder().build(schema, {"question": "Why?"}), Settings()
        )
        ceiling = timed(raw_reader(base_url, body, args))
        results: dict[str, list[tuple[int, float, float]]] = {"raw async SDK": [], "arq": []}
        for _ in range(args.repeats):  # alternate, so drift hits both sides alike
            results["raw async SDK"].append(timed(raw_sdk(base_url, body, schema, args)))
            results["arq"].append(timed(with_arq(base_url, schema, args)))
    print(
        f"{args.runs} runs at concurrency {args.concurrency}, {args.steps}-step schema, "
        f"{len(text)}-char reply; median of {args.repeats}; openai {openai.__version__}, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'':26} {'runs/s':>8} {'CPU ms/run':>11}")
    rows = {"server ceiling (raw SSE)": [ceiling]} | results
    medians: dict[str, tuple[float, float]] = {}
    for name, samples in rows.items():
        rate = statistics.median(count / wall for count, wall, _ in samples)
        cpu = statistics.median(cpu / count for count, _, cpu in samples)
        medians[name] = (rate, cpu)
        print(f"{name:26} {rate:>8.0f} {cpu * 1e3:>11.2f}")
    (raw_rate, raw_cpu), (arq_rate, arq_cpu) = medians["raw async SDK"], medians["arq"]
    ceiling_rate = medians["server ceiling (raw SSE)"][0]
    print(
        f"arq / raw SDK: {raw_rate / arq_rate:.2f}x the wall time, "
        f"{arq_cpu / raw_cpu:.2f}x the CPU per run; arq at {arq_rate / ceiling_rate:.0%} "
        "of the server's ceiling"
    )


if __name__ == "__main__":
    main()
