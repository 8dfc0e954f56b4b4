"""The demo's schema run many times on the embedded model: repairs, failures, speed, memory.

    python bench/demo_runs.py [--runs 20] [--temperature 0.5]

Each run uses its own seed (0, 1, 2, ...). The demo itself decodes greedily, which gives the
same run every time, so a sampling temperature is set here to see the spread. Prints per
run: repairs, outcome, output tokens, time to the first completed step, wall time; then the
totals, generated tokens per second and the process's peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import arq
from arq.backends import LlamaCppBackend
from arq.events import OutputAccepted, RepairStarted, StepAccepted


def _demo() -> Any:
    """The demo module, loaded from its file (examples/ is not a package on the path)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "support_reply.py"
    spec = importlib.util.spec_from_file_location("support_reply_demo", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


DEMO = _demo()
CONTEXT, Reply = DEMO.CONTEXT, DEMO.Reply


async def one(backend: LlamaCppBackend, seed: int, temperature: float) -> dict[str, object]:
    executor = arq.Executor(
        backend,
        temperature=temperature,
        repair_temperature=0.7,
        seed=seed,
        max_repairs=3,
        max_tokens=400,
    )
    start = time.perf_counter()
    first_step: float | None = None
    repairs, outcome, tokens, generating = 0, "valid", 0, 0.0
    try:
        async for event in executor.stream(Reply, CONTEXT):
            if isinstance(event, StepAccepted) and first_step is None:
                first_step = time.perf_counter() - start
            elif isinstance(event, RepairStarted):
                repairs += 1
            elif isinstance(event, OutputAccepted):
                tokens = event.result.usage.completion_tokens
                generating = sum(a.elapsed for a in event.result.trace.attempts)
    except arq.ConvergenceError as error:
        outcome = "failed after repairs" if repairs else "failed"
        tokens = error.trace.usage.completion_tokens
        generating = sum(a.elapsed for a in error.trace.attempts)
    except arq.OutputError as error:
        outcome = type(error).__name__
    return {
        "seed": seed,
        "repairs": repairs,
        "outcome": outcome,
        "tokens": tokens,
        "first_step": first_step,
        "elapsed": time.perf_counter() - start,
        "generating": generating,
    }


async def main(args: argparse.Namespace) -> None:
    backend = LlamaCppBackend()
    rows = []
    try:
        for seed in range(args.runs):
            row = await one(backend, seed, args.temperature)
            rows.append(row)
            first = row["first_step"]
            print(
                f"run {seed + 1:>2}/{args.runs}: repairs {row['repairs']}  {row['outcome']:<22}"
                f" tokens {row['tokens']:>4}  first step "
                f"{'-' if first is None else f'{first:.2f} s'}  total {row['elapsed']:.1f} s",
                flush=True,
            )
    finally:
        await backend.aclose()
    repaired = sum(1 for r in rows if r["repairs"])
    failed = sum(1 for r in rows if r["outcome"] != "valid")
    failed_after = sum(1 for r in rows if r["outcome"] == "failed after repairs")
    tokens = sum(int(str(r["tokens"])) for r in rows)
    generating = sum(float(str(r["generating"])) for r in rows)
    firsts = [float(str(r["first_step"])) for r in rows if r["first_step"] is not None]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n{args.runs} runs at temperature {args.temperature} (repaired steps at 0.7): "
        f"{repaired} needed a repair, {args.runs - failed} valid, {failed} without a valid "
        f"answer ({failed_after} of them after repairs)"
    )
    print(
        f"output tokens: {tokens} in {generating:.1f} s of model calls = "
        f"{tokens / generating:.1f} tokens/s (prompt processing included)"
    )
    print(
        f"time to the first completed step: median {statistics.median(firsts):.2f} s, "
        f"max {max(firsts):.2f} s"
    )
    print(f"peak memory (max RSS of this process): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, choices=range(1, 1001), metavar="N")
    parser.add_argument("--temperature", type=float, default=0.5)
    asyncio.run(main(parser.parse_args()))
