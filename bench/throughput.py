"""Throughput: many runs at once against a zero-delay loopback server, arq against the raw SDK.

Both sides make `--runs` calls with at most `--concurrency` in flight, on one event loop,
streaming the same reply from a server in a child process (its work is not counted):

- raw async SDK: `chat.completions.create(stream=True)`, join, `model_validate_json`;
- arq: `Executor.amap` (per-step checks, traces, results in input order).

Prints runs per second and client CPU time per run, side by side, and their ratios.

    python bench/throughput.py [--runs 1000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import openai
from loopback import server_process
from overhead import make_schema

import arq
from arq.backends import OpenAIBackend, Settings


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
        results: dict[str, list[tuple[int, float, float]]] = {"raw async SDK": [], "arq": []}
        for _ in range(args.repeats):  # alternate, so drift hits both sides alike
            results["raw async SDK"].append(timed(raw_sdk(base_url, body, schema, args)))
            results["arq"].append(timed(with_arq(base_url, schema, args)))
    print(
        f"{args.runs} runs at concurrency {args.concurrency}, {args.steps}-step schema, "
        f"{len(text)}-char reply; best of {args.repeats}; openai {openai.__version__}, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'':14} {'runs/s':>8} {'CPU ms/run':>11}")
    best = {name: min(rows, key=lambda r: r[1]) for name, rows in results.items()}
    for name, (count, wall, cpu) in best.items():
        print(f"{name:14} {count / wall:>8.0f} {cpu / count * 1e3:>11.2f}")
    raw, ours = best["raw async SDK"], best["arq"]
    print(
        f"arq / raw: {ours[1] / raw[1]:.2f}x the wall time, "
        f"{(ours[2] / ours[0]) / (raw[2] / raw[0]):.2f}x the CPU per run"
    )


if __name__ == "__main__":
    main()
