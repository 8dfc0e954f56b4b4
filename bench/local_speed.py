"""The embedded model's speed: prompt evaluation, and generation with and without a grammar.

    python bench/local_speed.py [--repeats 3] [--threads 1,2]

For each thread count it loads SmolLM2-135M through `LlamaCppBackend` and evaluates the
prompt of a 16-step form (`convergence_tasks.py`) from an empty cache. Then it generates
the form's answer greedily under the schema's grammar (through the backend, as a run sees
it), once with its names and ids grounded (`Request.grounding`, as the executor builds it)
and once without, and the same number of tokens with no grammar (llama.cpp directly). It
prints the median tokens per second of each over the repeats. Run it with the machine otherwise
idle: two processes sharing the cores halve every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Sequence
from typing import Any

from convergence_tasks import make_task

import arq
from arq.backends import LlamaCppBackend, Settings


def measure(threads: int, repeats: int) -> dict[str, float]:
    backend = LlamaCppBackend(n_threads=threads, seed=0)
    task = make_task(16, 0)
    request = arq.PromptBuilder().build(task.schema, task.context)
    tokens = backend.prompt_tokens(request)  # loads the model
    llm = backend._llm  # the worker thread is idle between the calls below
    backend._steering(request, tokens)  # builds the token table once, outside the timings
    settings = Settings(max_tokens=400, temperature=0.0, seed=0)
    found: dict[str, list[float]] = {"prompt": [], "grounded": [], "grammar": [], "free": []}

    async def generate(req: arq.Request) -> tuple[int, float]:
        start = time.perf_counter()
        chunks = [c async for c in backend.stream(req, settings)]
        usage = chunks[-1].usage
        assert usage is not None
        return usage.completion_tokens, time.perf_counter() - start

    try:
        for _ in range(repeats):
            llm.reset()
            start = time.perf_counter()
            llm.eval(tokens)
            found["prompt"].append(len(tokens) / (time.perf_counter() - start))
            # the prompt is evaluated now: what follows times generation alone
            count, seconds = asyncio.run(generate(request))
            found["grounded"].append(count / seconds)
            count, seconds = asyncio.run(generate(dataclasses.replace(request, grounding={})))
            found["grammar"].append(count / seconds)
            found["free"].append(free_generation(llm, tokens, count))
    finally:
        asyncio.run(backend.aclose())
    print(
        f"threads={threads}: prompt of {len(tokens)} tokens evaluated at"
        f" {statistics.median(found['prompt']):.0f} tokens/s; generation"
        f" {statistics.median(found['grounded']):.1f} tokens/s under the grammar with"
        f" {len(request.grounding)} steps grounded,"
        f" {statistics.median(found['grammar']):.1f} tokens/s under the grammar alone,"
        f" {statistics.median(found['free']):.1f} tokens/s with no grammar"
        f" (medians of {repeats})",
        flush=True,
    )
    return {name: statistics.median(values) for name, values in found.items()}


def free_generation(llm: Any, prompt: list[int], count: int) -> float:
    """Tokens/s of llama.cpp generating `count` tokens greedily, with no grammar."""
    start, made = time.perf_counter(), 0
    generator = llm.generate(prompt, temp=0.0)  # the prompt is cached: generation alone
    for _ in generator:
        made += 1
        if made >= count:
            break
    generator.close()
    return made / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args(argv)
    for threads in (int(t) for t in args.threads.split(",")):
        measure(threads, args.repeats)


if __name__ == "__main__":
    main()
