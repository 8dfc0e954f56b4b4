"""What a token costs the embedded model, against how much context comes before it.

    python bench/context_cost.py [--depths 0,1000,2000,3000,4000] [--repeats 3]

Loads SmolLM2-135M through `LlamaCppBackend` (one thread, flash attention on, as the
convergence benchmark runs it) and, for each depth, evaluates that many tokens of context,
then times tokens evaluated one at a time (as generation does) and in batches of 8 and 64
(as a prompt's tail, or a key the backend writes, is evaluated). The figures are
milliseconds per token, the median of the repeats; they say how much a prompt token costs
every token written after it. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from convergence_tasks import make_task

import arq
from arq.backends import LlamaCppBackend

SINGLE = 32  # tokens evaluated one at a time per measurement
BATCHES = (8, 64)
N_CTX = 8192


def per_token(llm: Any, context: list[int], depth: int, batch: int, count: int) -> float:
    """Milliseconds per token to evaluate `count` tokens after `depth` tokens of context,
    `batch` at a time."""
    llm.n_tokens = depth  # drop what the previous measurement added after the context
    llm._ctx.kv_cache_seq_rm(-1, depth, -1)
    tokens = context[depth : depth + count]
    start = time.perf_counter()
    for at in range(0, count, batch):
        llm.eval(tokens[at : at + batch])
    return (time.perf_counter() - start) * 1000 / count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--depths", default="0,1000,2000,3000,4000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    backend = LlamaCppBackend(n_ctx=N_CTX, n_threads=1)
    task = make_task(32, 0)  # any text will do: a form's prompt, repeated to the length
    prompt = backend.prompt_tokens(arq.PromptBuilder().build(task.schema, task.context))
    longest = max(depths) + max(SINGLE, *BATCHES)
    if min(depths) < 0 or longest > N_CTX:
        raise SystemExit(f"--depths: from 0 to {N_CTX - max(SINGLE, *BATCHES)}")
    context = (prompt * (longest // len(prompt) + 1))[:longest]
    llm = backend._llm  # loaded by prompt_tokens; the worker thread is idle
    print(
        "| context tokens | one at a time | " + " | ".join(f"{b} at once" for b in BATCHES) + " |"
    )
    print("|---:|---:|" + "---:|" * len(BATCHES))
    try:
        for depth in depths:
            llm.reset()
            if depth:
                llm.eval(context[:depth])
            found: dict[int, list[float]] = {1: [], **{b: [] for b in BATCHES}}
            for _ in range(args.repeats):  # the ways alternate, so a busy spell hits each
                found[1].append(per_token(llm, context, depth, 1, SINGLE))
                for batch in BATCHES:
                    found[batch].append(per_token(llm, context, depth, batch, batch))
            cells = [f"{statistics.median(found[b]):.1f} ms" for b in (1, *BATCHES)]
            print(f"| {depth:,} | " + " | ".join(cells) + " |", flush=True)
    finally:
        asyncio.run(backend.aclose())


if __name__ == "__main__":
    main()
