"""The embedded model's wall time per answer on fixed requests, against another revision.

    python bench/local_speed.py [--compare REF] [--repeats 5] [--threads 2]

Each side loads `LlamaCppBackend` in a process of its own and answers the same fixed
requests greedily, in order: the demo's first request (`examples/support_reply.py`: a
quote, a list of objects, an enum), the stock guideline-adherence blueprint on its
recorded broken-order context (a checklist of objects), and the convergence forms at N = 8 and 32
(`convergence_tasks.py`, task seed 0: names quoted, ids and dates held to choices). For
each it records the time to the first chunk (the prompt read, after the prefix the
previous request left cached, and the first token) and the time to the whole answer.
Tokens per second would mislead: a backend that writes forced tokens in batches spends
fewer forward passes on the same answer.

With `--compare REF` the revision REF (its `arq/` as git holds it) runs beside this tree,
the two alternating which goes first in each repeat, on the same weights (both re-encode
the bundled model into one cache folder of this run). It prints the medians of each side
and their ratios (this tree / REF). Run it with the machine otherwise idle; figures from a
busy machine still compare, since the sides alternate, but vary more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = ("demo", "guidelines", "form-8", "form-32")


def requests() -> dict[str, Any]:
    """The fixed requests, built by the arq this interpreter imports."""
    sys.path.insert(0, str(ROOT / "examples"))
    import support_reply
    from convergence_tasks import make_task

    import arq
    from arq.blueprints import guideline_adherence

    builder = arq.PromptBuilder()
    found = {"demo": builder.build(support_reply.Reply, support_reply.CONTEXT)}
    record = json.loads((ROOT / "tests/blueprint_records/guideline_adherence.json").read_text())
    context = record["contexts"]["broken-order"]
    schema = guideline_adherence.for_guidelines(context["guidelines"])
    found["guidelines"] = builder.build(schema, context)
    for n in (8, 32):
        task = make_task(n, 0)
        found[f"form-{n}"] = builder.build(task.schema, task.context)
    return found


async def answer(backend: Any, request: Any) -> dict[str, Any]:
    from arq.backends import Settings

    start = time.perf_counter()
    first, text, usage = None, [], None
    async for chunk in backend.stream(request, Settings(max_tokens=512, temperature=0.0)):
        if first is None:
            first = time.perf_counter() - start
        text.append(chunk.text)
        usage = chunk.usage or usage
    return {
        "first_chunk": first,
        "answer": time.perf_counter() - start,
        "tokens": usage.completion_tokens if usage else None,
        "text": "".join(text),
    }


def child(threads: int) -> None:
    """Answer every fixed request once; print one JSON line of figures."""
    from arq.backends import LlamaCppBackend

    fixed = requests()
    backend = LlamaCppBackend(n_threads=threads, seed=0)
    start = time.perf_counter()
    backend.prompt_tokens(fixed["demo"])  # loads the model
    loaded = time.perf_counter() - start

    async def run() -> dict[str, Any]:
        try:
            return {case: await answer(backend, fixed[case]) for case in CASES}
        finally:
            await backend.aclose()

    print(json.dumps({"load": loaded, "cases": asyncio.run(run())}))


def tree_of(ref: str, into: Path) -> Path:
    """`ref`'s files (as git holds them) written under `into`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def side(tree: Path, threads: int, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / "local_speed.py"), "--child", "--threads", str(threads)],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the run in {tree.name} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--compare", metavar="REF", help="a git revision to run beside")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.threads)
        return
    with tempfile.TemporaryDirectory(prefix="arq-speed-") as scratch:
        env = {**os.environ, "ARQ_CACHE_DIR": str(Path(scratch) / "weights")}
        env.pop("ARQ_MODEL", None)
        trees = {"this tree": ROOT}
        if args.compare:
            trees[args.compare] = tree_of(args.compare, Path(scratch) / "other")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for repeat in range(args.repeats):
            order = list(trees) if repeat % 2 == 0 else list(reversed(trees))
            for name in order:
                runs[name].append(side(trees[name], args.threads, env))
                print(f"repeat {repeat + 1}/{args.repeats}: {name} done", flush=True)
    report(runs, args)


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\nmedians of {args.repeats} runs, {args.threads} threads, greedy, max 512 tokens")
    medians: dict[str, dict[str, float]] = {}
    for name, found in runs.items():
        medians[name] = {"load": statistics.median(r["load"] for r in found)}
        for case in CASES:
            for figure in ("first_chunk", "answer"):
                medians[name][f"{case} {figure}"] = statistics.median(
                    r["cases"][case][figure] for r in found
                )
        tokens = {case: found[0]["cases"][case]["tokens"] for case in CASES}
        same = all(len({r["cases"][case]["text"] for r in found}) == 1 for case in CASES)
        print(f"{name}: output tokens {tokens}; same answers every repeat: {same}")
    names = list(medians)
    rows = [f"{'figure (s)':<22}" + "".join(f"{n:>14}" for n in names)]
    if len(names) == 2:
        rows[0] += f"{'ratio':>10}"
    for key in medians[names[0]]:
        row = f"{key:<22}" + "".join(f"{medians[n][key]:>14.3f}" for n in names)
        if len(names) == 2:
            row += f"{medians[names[0]][key] / medians[names[1]][key]:>10.2f}"
        rows.append(row)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
