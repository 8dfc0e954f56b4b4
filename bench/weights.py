"""How fast the embedded model reads a prompt and writes, in each encoding of its weights.

    python bench/weights.py [--repeats 3] [--n 32]

Loads SmolLM2-135M through `LlamaCppBackend` (one thread, as the convergence benchmark
runs it) as shipped (Q4_1) and re-encoded (`weights="Q8_0"`, the default, and "F16"), then,
round after round so a busy spell hits each alike, evaluates the prompt of a convergence
task with N steps (2,300 tokens at N = 32) and times 32 tokens evaluated one at a time after
it, as generation does. Prints the medians, the ratio to Q4_1 and the file sizes. Run it
with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from convergence_tasks import make_task

import arq
from arq.backends import LlamaCppBackend

ENCODINGS: dict[str, str | None] = {"Q4_1 (as shipped)": None, "Q8_0": "Q8_0", "F16": "F16"}
SINGLE = 32  # tokens evaluated one at a time after the prompt


def measure(backend: LlamaCppBackend, prompt: list[int]) -> tuple[float, float]:
    """Seconds to evaluate `prompt` from nothing, and milliseconds per token after it."""
    llm = backend._llm  # loaded; the worker thread is idle
    llm.reset()  # `eval` drops the cache after `n_tokens`, now 0
    start = time.perf_counter()
    llm.eval(prompt)
    read = time.perf_counter() - start
    start = time.perf_counter()
    for token in prompt[:SINGLE]:
        llm.eval([token])
    return read, (time.perf_counter() - start) * 1000 / SINGLE


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=32, help="steps of the task whose prompt is read")
    args = parser.parse_args(argv)
    task = make_task(args.n, 0)
    request = arq.PromptBuilder().build(task.schema, task.context)
    kept = tempfile.TemporaryDirectory(prefix="arq-weights-")  # the copies, to weigh them
    backends = {
        label: LlamaCppBackend(n_ctx=8192, n_threads=1, weights=weights, weights_cache=kept.name)
        for label, weights in ENCODINGS.items()
    }
    try:
        prompts = {label: b.prompt_tokens(request) for label, b in backends.items()}  # loads
        found: dict[str, list[tuple[float, float]]] = {label: [] for label in backends}
        for _ in range(args.repeats):
            for label, backend in backends.items():
                found[label].append(measure(backend, prompts[label]))
        size = len(next(iter(prompts.values())))
        print(f"prompt: {size} tokens (N = {args.n}); medians of {args.repeats}, one thread\n")
        print("| weights | file MB | prompt s | prompt tokens/s | x Q4_1 | ms/token after it |")
        print("|---|---:|---:|---:|---:|---:|")
        base = statistics.median(r for r, _ in found["Q4_1 (as shipped)"])
        for label, rows in found.items():
            read = statistics.median(r for r, _ in rows)
            token = statistics.median(t for _, t in rows)
            megabytes = _loaded_size(backends[label]) / 1e6
            print(
                f"| {label} | {megabytes:.0f} | {read:.2f} | {size / read:.0f} | "
                f"{base / read:.2f} | {token:.1f} |"
            )
    finally:
        for backend in backends.values():
            asyncio.run(backend.aclose())
        kept.cleanup()


def _loaded_size(backend: LlamaCppBackend) -> int:
    return Path(backend._llm.model_path).stat().st_size


if __name__ == "__main__":
    main()
