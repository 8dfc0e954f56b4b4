"""Framework overhead per call: arq against the raw openai SDK (and instructor, if installed).

Every side streams the same reply from the same zero-delay loopback server (in a child
process, so its work is not timed) with the same response format, then validates it into
the same Pydantic model:

- raw SDK: `chat.completions.create(stream=True)`, join the content, `model_validate_json`;
- arq: `Executor.arun` (prompt building, step parsing, per-step checks, trace);
- the SDK's raw response, bytes only: `with_streaming_response.create`, reading the body
  and parsing nothing (the floor of any client on the SDK's HTTP layer);
- with `--sync-client`, arq on a sync `openai.OpenAI` client too (read on a thread);
- instructor (when installed), in its JSON-schema mode: `create_partial` streaming the same
  reply, and `create` without streaming (one JSON body: a different, cheaper wire path).

The calls are interleaved in rounds (A, B, C, A, B, C, ...) so that the machine's drift
hits every side alike. Prints the median wall time per call, the client's median CPU time per
call (the server runs in another process), and their ratios to the raw SDK.

    python bench/overhead.py [--calls 300] [--steps 6] [--sync-client]

Target: arq's client CPU per call at most 0.5x the raw SDK's streamed call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from loopback import server_process
from pydantic import create_model

import arq
from arq.backends import OpenAIBackend, Settings

Call = Callable[[], Awaitable[Any]]


def make_schema(n: int) -> type[arq.Reasoning]:
    fields: dict[str, Any] = {
        f"step_{i}": (str, arq.query(f"Question {i}?", max_length=200)) for i in range(1, n)
    }
    fields["answer"] = (str, arq.answer("The answer."))
    return create_model("Bench", __base__=arq.Reasoning, __doc__="A benchmark task.", **fields)


def raw_sdk(client: openai.AsyncOpenAI, body: dict[str, Any], schema: type[Any]) -> Call:
    async def call() -> Any:
        stream = await client.chat.completions.create(**body)
        parts = [e.choices[0].delta.content or "" async for e in stream if e.choices]
        return schema.model_validate_json("".join(parts))

    return call


def raw_bytes(client: openai.AsyncOpenAI, body: dict[str, Any]) -> Call:
    async def call() -> Any:
        async with client.chat.completions.with_streaming_response.create(**body) as response:
            return [piece async for piece in response.iter_bytes()]

    return call


def arq_call(executor: arq.Executor, schema: type[arq.Reasoning]) -> Call:
    async def call() -> Any:
        return (await executor.arun(schema, {"question": "Why?"})).output

    return call


def instructor_calls(
    client: openai.AsyncOpenAI, body: dict[str, Any], schema: type[Any]
) -> dict[str, Call]:
    """instructor streaming the same reply (`create_partial`), and without streaming."""
    try:
        import instructor  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return {}
    patched = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    options = {"model": body["model"], "messages": body["messages"], "response_model": schema}

    async def streamed() -> Any:
        last: Any = None
        async for partial in patched.chat.completions.create_partial(**options, max_retries=0):
            last = partial
        return schema.model_validate(last.model_dump())

    async def whole() -> Any:
        return await patched.chat.completions.create(**options, max_retries=0)

    return {"instructor (streamed)": streamed, "instructor (one body)": whole}


async def measure(
    calls: dict[str, Call], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    for call in calls.values():  # warm up: connections, caches, imports
        for _ in range(5):
            await call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            await call()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return times, cpu


async def run(args: argparse.Namespace) -> None:
    schema = make_schema(args.steps)
    value = {name: f"value of {name}, " + "x" * 60 for name in schema.model_fields}
    text = json.dumps(value)
    with server_process(text) as base_url:
        backend = OpenAIBackend("fake-model", base_url=base_url)
        request = arq.PromptBuilder().build(schema, {"question": "Why?"})
        body = backend.payload(request, Settings())
        client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
        sync_client = openai.OpenAI(base_url=base_url, api_key="not-needed")
        sync_backend = OpenAIBackend("fake-model", client=sync_client)
        async with arq.Executor(backend) as executor, arq.Executor(sync_backend) as on_sync:
            calls: dict[str, Call] = {
                "raw openai SDK": raw_sdk(client, body, schema),
                "arq": arq_call(executor, schema),
                "SDK raw bytes only": raw_bytes(client, body),
            }
            if args.sync_client:
                calls["arq, sync client"] = arq_call(on_sync, schema)
            calls.update(instructor_calls(client, body, schema))
            times, cpu = await measure(calls, args.calls)
        await client.close()
        sync_client.close()
    base = statistics.median(times["raw openai SDK"])
    base_cpu = statistics.median(cpu["raw openai SDK"])
    print(
        f"{args.steps}-step schema, {len(text)}-char reply in {len(text) // 4}-ish chunks, "
        f"{args.calls} calls each, interleaved; openai {openai.__version__}, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'':22} {'median us':>10} {'p90 us':>10} {'ratio':>7} {'CPU us':>8} {'ratio':>7}")
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        median_cpu = statistics.median(cpu[name])
        print(
            f"{name:22} {median * 1e6:>10.0f} {p90 * 1e6:>10.0f} {median / base:>6.2f}x"
            f" {median_cpu * 1e6:>8.0f} {median_cpu / base_cpu:>6.2f}x"
        )
    if not any(name.startswith("instructor") for name in calls):
        print("(instructor is not installed: pip install instructor to compare it too)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--sync-client", action="store_true", help="arq on openai.OpenAI too")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
