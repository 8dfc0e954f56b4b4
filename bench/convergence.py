"""Acceptance against the number of steps: one pass, whole-object re-ask, and arq's repair.

If every generated step went wrong with an independent chance E, an answer of N steps
would pass with probability (1 - E)^N. This runs tasks of N checkable steps (see
`convergence_tasks.py`) on the embedded model (SmolLM2-135M through llama.cpp) three ways:

- single pass: one greedy call, every step checked (`arq.eval.baselines.single_pass`);
- whole-object re-ask: on a failure, the answer and all its errors go back and the whole
  object is asked for again, up to R times (`arq.eval.baselines.whole_object_reask`);
- arq: `arq.Executor(backend, max_repairs=R)`, checking each step as it streams and
  repairing from the failing step (a `ConvergenceError` or other error: not accepted).

R is 2 and ceil(N/4). Re-asks and repairs sample at `--repair-temperature` with fixed
seeds (call k uses seed + k - 1). Each task runs each way once, with the larger budget;
the smaller budget's outcome is the prefix of that run (the same calls, in the same
order, with the same seeds), and the single pass is the re-ask's first call. It prints
progress, then writes a JSON of every number, a Markdown table and a PNG plot.

    python bench/convergence.py --quick                  # N = 2, 8, 32, a few tasks
    python bench/convergence.py --out docs/convergence.json --doc docs/convergence.md
    python bench/convergence.py --ns 2,4 --tasks 5       # a chosen subset
    python bench/convergence.py --replot docs/convergence.json   # table and plot again

The plot needs matplotlib (`pip install matplotlib`), checked before the run starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from convergence_tasks import KINDS, NS, Task, make_task

import arq
from arq.backends import LlamaCppBackend, Settings
from arq.eval.baselines import whole_object_reask
from arq.parsing import StepParser
from arq.run.loop import RunLoop
from arq.trace import Trace

QUICK_NS = (2, 8, 32)
QUICK_TASKS = {2: 4, 8: 3, 32: 1}  # 2.6 minutes with --jobs 2 on 2 cores
FULL_TASKS = dict.fromkeys(NS, 30)
MARKERS = ("<!-- convergence-table:start -->", "<!-- convergence-table:end -->")
_TABLE = re.compile(f"{re.escape(MARKERS[0])}.*?{re.escape(MARKERS[1])}", re.S)

Record = dict[str, Any]


def budgets(n: int) -> dict[str, int]:
    """The two repair budgets: a fixed 2, and one that grows with the steps."""
    return {"R=2": 2, "R=ceil(N/4)": math.ceil(n / 4)}


# --- running --------------------------------------------------------------------------------


def _trace_record(trace: Trace) -> list[Record]:
    attempts = []
    for attempt in trace.attempts:
        repair = attempt.request.metadata.get("repair") or {}
        attempts.append(
            {
                "kind": attempt.kind,
                "repairs": repair.get("step"),
                "steps": {s.name: s.error is None for s in attempt.steps},
                "completion_tokens": attempt.usage.completion_tokens,
                "prompt_tokens": attempt.usage.prompt_tokens,
                "elapsed": round(attempt.elapsed, 4),
                "error": attempt.error,
                "text": attempt.text,
            }
        )
    return attempts


async def run_arq(executor: arq.Executor, task: Task) -> Record:
    """One arq run; the trace is kept whatever the outcome (hence the loop, not `arun`)."""
    run = RunLoop(executor.config, task.schema, task.context, ())
    events = run.events()
    error: str | None = None
    try:
        async for _ in events:
            pass
    except arq.ArqError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        await events.aclose()
    return {"accepted": error is None, "error": error, "attempts": _trace_record(run.trace)}


async def run_reask(
    backend: LlamaCppBackend, task: Task, reasks: int, settings: Settings, temperature: float
) -> Record:
    result = await whole_object_reask(
        backend,
        task.schema,
        task.context,
        max_reasks=reasks,
        settings=settings,
        reask_temperature=temperature,
    )
    calls = [
        {
            "accepted": call.accepted,
            "steps": call.step_ok,
            "completion_tokens": call.usage.completion_tokens,
            "prompt_tokens": call.usage.prompt_tokens,
            "elapsed": round(call.elapsed, 4),
            "finish_reason": call.finish_reason,
        }
        for call in result.attempts
    ]
    return {"accepted": result.accepted, "calls": calls, "first_text": result.attempts[0].text}


def outcome(calls: Sequence[Record], budget: int, accepted: bool) -> Record:
    """A run with `budget` extra calls: the prefix of a run with a larger budget."""
    used = calls[: budget + 1]
    return {
        "accepted": accepted and len(calls) <= budget + 1,
        "calls": len(used),
        "completion_tokens": sum(c["completion_tokens"] for c in used),
        "elapsed": sum(c["elapsed"] for c in used),
    }


def task_outcomes(task: Record) -> dict[str, Record]:
    """Every way's outcome on one task, keyed "single", "reask R=2", "arq R=ceil(N/4)"..."""
    calls, attempts = task["reask"]["calls"], task["arq"]["attempts"]
    found = {"single": outcome(calls, 0, task["reask"]["accepted"])}
    for label, budget in budgets(task["n"]).items():
        found[f"reask {label}"] = outcome(calls, budget, task["reask"]["accepted"])
        found[f"arq {label}"] = outcome(attempts, budget, task["arq"]["accepted"])
    return found


async def run_task(backend: LlamaCppBackend, args: argparse.Namespace, n: int, seed: int) -> Record:
    """One task, all three ways, with the larger budget (the smaller one is its prefix)."""
    task = make_task(n, seed)
    extra = max(budgets(n).values())
    settings = Settings(max_tokens=args.max_tokens, temperature=0.0, seed=args.seed)
    executor = arq.Executor(
        backend,
        max_repairs=extra,
        temperature=0.0,
        repair_temperature=args.repair_temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
        idle_timeout=None,  # a local model queues calls: silence is not a failure
    )
    record: Record = {"n": n, "seed": task.seed, "kinds": task.kinds, "truth": task.truth}
    _forget_prompt(backend)
    record["reask"] = await run_reask(backend, task, extra, settings, args.repair_temperature)
    _forget_prompt(backend)
    record["arq"] = await run_arq(executor, task)
    return record


# Each worker process holds one model and one event loop for all the tasks it is given.
_WORKER: dict[str, Any] = {}


def _start_worker(options: Record) -> None:
    args = argparse.Namespace(**options)
    backend = LlamaCppBackend(n_ctx=args.n_ctx, n_threads=args.threads, seed=args.seed)
    task = make_task(2, 0)
    backend.prompt_tokens(arq.PromptBuilder().build(task.schema, task.context))  # load it now
    _WORKER.update(args=args, loop=asyncio.new_event_loop(), backend=backend)


def _task_in_worker(n: int, seed: int) -> Record:
    loop: asyncio.AbstractEventLoop = _WORKER["loop"]
    return loop.run_until_complete(run_task(_WORKER["backend"], _WORKER["args"], n, seed))


def run_all(args: argparse.Namespace, tasks_per_n: dict[int, int]) -> Record:
    """Every task, spread over `args.jobs` processes (one model each, largest N first)."""
    data: Record = {"settings": _settings(args, tasks_per_n), "tasks": []}
    started = time.perf_counter()
    tallies = {n: {"single": 0, "reask": 0, "arq": 0, "done": 0} for n in tasks_per_n}
    first = args.first_task
    work = [
        (n, seed)
        for n in sorted(tasks_per_n, reverse=True)
        for seed in range(first, first + tasks_per_n[n])
    ]
    with ProcessPoolExecutor(
        args.jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(vars(args),),
    ) as pool:
        futures = [pool.submit(_task_in_worker, n, seed) for n, seed in work]
        try:
            for future in as_completed(futures):
                record = future.result()
                data["tasks"].append(record)
                tally = tallies[record["n"]]
                tally["done"] += 1
                _progress(record, tally, tasks_per_n[record["n"]], time.perf_counter() - started)
                data["elapsed"] = time.perf_counter() - started
                _write_json(args.out, data)  # after each task: a partial result survives
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # do not run the queued tasks
            raise
    data["tasks"].sort(key=lambda task: (task["n"], task["seed"]))
    data["elapsed"] = time.perf_counter() - started
    return data


def _forget_prompt(backend: LlamaCppBackend) -> None:
    """Each way pays for its own prompt: drop the prefix llama.cpp keeps evaluated.

    Within a run, later calls still reuse the prefix they share with earlier ones.
    """
    llm = backend._llm  # the loaded model, if any; the worker thread is idle here
    if llm is not None:
        llm.reset()


def _progress(record: Record, tally: dict[str, int], count: int, clock: float) -> None:
    n, found, i = record["n"], task_outcomes(record), tally["done"]
    first = record["reask"]["calls"][0]["steps"]
    big = f"R={max(budgets(n).values())}"
    tally["single"] += found["single"]["accepted"]
    tally["reask"] += record["reask"]["accepted"]
    tally["arq"] += record["arq"]["accepted"]
    arq_note = "ok" if record["arq"]["accepted"] else f"no ({_reason(record['arq']['error'])})"
    print(
        f"N={n:<2} task {i}/{count}: first call {sum(first.values())}/{n} steps ok;"
        f" re-ask {'ok' if record['reask']['accepted'] else 'no'} in"
        f" {len(record['reask']['calls'])} calls; arq {arq_note} in"
        f" {len(record['arq']['attempts'])} calls | running ({big}): single"
        f" {tally['single']}/{i}, re-ask {tally['reask']}/{i}, arq {tally['arq']}/{i}"
        f" | {clock / 60:.1f} min",
        flush=True,
    )


def _reason(error: str | None) -> str:
    if error is None:
        return "accepted"
    if "twice the same way" in error:
        return "same failure twice"
    if "repairs did not lead" in error:
        return "budget spent"
    return error.split(":", 1)[0]


def _settings(args: argparse.Namespace, tasks_per_n: dict[int, int]) -> Record:
    return {
        "model": "SmolLM2-135M-Instruct Q4_1, run as Q8_0 (llama.cpp, grammar-constrained)",
        "tasks_per_n": {str(n): k for n, k in tasks_per_n.items()},
        "first_call_temperature": 0.0,
        "repair_temperature": args.repair_temperature,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "n_ctx": args.n_ctx,
        "threads": args.threads,
        "jobs": args.jobs,
        "first_task": args.first_task,
    }


def _write_json(path: Path, data: Record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


# --- summary --------------------------------------------------------------------------------


def binomial_at_most(n: int, e: float, r: int, p: float = 1.0) -> float:
    """P(at most r of n steps fail, each failure then fixed by its repair with prob p)."""
    return sum(math.comb(n, k) * e**k * (1 - e) ** (n - k) * p**k for k in range(r + 1))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a rate k/n."""
    if n == 0:
        return 0.0, 1.0
    rate = k / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _values(text: str, keys: Sequence[str]) -> dict[str, Any]:
    """The step values a call wrote (a repair's text continues the kept JSON)."""
    parser = StepParser(keys)
    with contextlib.suppress(arq.OutputError):
        parser.feed(text if text.lstrip().startswith("{") else "{" + text)
    return parser.completed


def _repairs(tasks: Sequence[Record]) -> dict[str, float | int]:
    """How often a repair fixed the step it redid, what it wrote otherwise, and how the
    steps after it fared."""
    fixed = done = same = later_failed = later = 0
    for task in tasks:
        before: dict[str, Any] = {}
        for attempt in task["arq"]["attempts"]:
            written = _values(attempt["text"], list(task["truth"]))
            step = attempt["repairs"]
            if attempt["kind"] == "repair" and step is not None:
                done += 1
                fixed += attempt["steps"].get(step) is True
                same += step in written and written[step] == before.get(step)
                rest = [ok for name, ok in attempt["steps"].items() if name != step]
                later += len(rest)
                later_failed += rest.count(False)
            before = written
    return {
        "repairs": done,
        "p_fixed": fixed / done if done else float("nan"),
        "same_value_again": same,
        "later_steps": later,
        "later_error_rate": later_failed / later if later else float("nan"),
    }


def summarize(data: Record) -> Record:
    tasks: list[Record] = data["tasks"]
    ns = sorted({t["n"] for t in tasks})
    failed = sum(list(t["reask"]["calls"][0]["steps"].values()).count(False) for t in tasks)
    pooled = failed / sum(t["n"] for t in tasks)
    repair = _repairs(tasks)
    p = float(repair["p_fixed"]) if repair["repairs"] else 1.0
    kinds = {}
    for kind in KINDS:
        outcomes = [
            ok
            for t in tasks
            for step, ok in t["reask"]["calls"][0]["steps"].items()
            if t["kinds"][step] == kind
        ]
        kinds[kind] = outcomes.count(False) / len(outcomes) if outcomes else float("nan")
    per_n: list[Record] = []
    for n in ns:
        group = [t for t in tasks if t["n"] == n]
        e = sum(list(t["reask"]["calls"][0]["steps"].values()).count(False) for t in group)
        e /= n * len(group)
        ways: dict[str, Record] = {}
        for way in task_outcomes(group[0]):
            found = [task_outcomes(t)[way] for t in group]
            ways[way] = _way(found)
        bounds = {
            label: {
                "binomial": binomial_at_most(n, e, r),
                "binomial_pooled": binomial_at_most(n, pooled, r),
                "with_p": binomial_at_most(n, e, r, p),
                "with_p_pooled": binomial_at_most(n, pooled, r, p),
            }
            for label, r in budgets(n).items()
        }
        per_n.append(
            {
                "n": n,
                "tasks": len(group),
                "E": e,
                "prediction": (1 - e) ** n,
                "prediction_pooled": (1 - pooled) ** n,
                "ways": ways,
                "bounds": bounds,
                "arq_endings": _endings(group),
            }
        )
    later = [ok for t in tasks for c in t["reask"]["calls"][1:] for ok in c["steps"].values()]
    reask_e = later.count(False) / len(later) if later else float("nan")
    summary = {
        "E_pooled": pooled,
        "E_by_kind": kinds,
        "E_reask_calls": reask_e,
        "repair": repair,
        "per_n": per_n,
    }
    return {**summary, "goal": goal(per_n)}


def _endings(group: Sequence[Record]) -> dict[str, int]:
    """How the arq runs without a valid answer ended (with the larger budget)."""
    endings: dict[str, int] = {}
    for task in group:
        if not task["arq"]["accepted"]:
            reason = _reason(task["arq"]["error"])
            endings[reason] = endings.get(reason, 0) + 1
    return endings


def goal(per_n: Sequence[Record]) -> Record:
    """The project's goal at R = ceil(N/4): at least 90 % at N = 32, above the re-ask at
    every N, and at most twice the single pass's output tokens per run at every N."""
    way = "arq R=ceil(N/4)"
    at_32 = [row["ways"][way]["rate"] for row in per_n if row["n"] == 32]
    above = {
        row["n"]: row["ways"][way]["rate"] > row["ways"]["reask R=ceil(N/4)"]["rate"]
        for row in per_n
    }
    ratio = {
        row["n"]: row["ways"][way]["tokens_per_run"] / row["ways"]["single"]["tokens_per_run"]
        for row in per_n
    }
    return {
        "arq_at_32": at_32[0] if at_32 else None,
        "at_least_90_at_32": bool(at_32) and at_32[0] >= 0.9,
        "above_reask": above,
        "above_reask_everywhere": all(above.values()),
        "token_ratio_to_single": ratio,
        "within_twice_single": all(r <= 2 for r in ratio.values()),
    }


def _way(found: Sequence[Record]) -> Record:
    accepted = sum(f["accepted"] for f in found)
    tokens = sum(f["completion_tokens"] for f in found)
    seconds = sum(f["elapsed"] for f in found)
    low, high = wilson(accepted, len(found))
    return {
        "accepted": accepted,
        "runs": len(found),
        "rate": accepted / len(found),
        "ci95": [low, high],
        "tokens_per_run": tokens / len(found),
        "seconds_per_run": seconds / len(found),
        "calls_per_run": sum(f["calls"] for f in found) / len(found),
        "tokens_per_accepted": tokens / accepted if accepted else None,
        "seconds_per_accepted": seconds / accepted if accepted else None,
    }


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


WAY_LABELS = {"single": "single pass", "reask": "whole-object re-ask", "arq": "arq"}


def _label(way: str, n: int) -> str:
    name, _, budget = way.partition(" ")
    budget = budget.replace("R=ceil(N/4)", f"R=ceil(N/4)={math.ceil(n / 4)}")
    return WAY_LABELS[name] + (f", {budget}" if budget else "")


def markdown(summary: Record) -> str:
    lines = [
        "| N | way | accepted | 95 % CI | output tokens / run | output tokens / accepted"
        " | s / run | s / accepted | calls / run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["per_n"]:
        for way, w in row["ways"].items():
            lines.append(
                f"| {row['n']} | {_label(way, row['n'])} | {w['accepted']}/{w['runs']}"
                f" ({w['rate']:.0%}) | {w['ci95'][0]:.0%}-{w['ci95'][1]:.0%}"
                f" | {_num(w['tokens_per_run'])} | {_num(w['tokens_per_accepted'])}"
                f" | {_num(w['seconds_per_run'], 1)} | {_num(w['seconds_per_accepted'], 1)}"
                f" | {w['calls_per_run']:.2f} |"
            )
    pooled, repair = summary["E_pooled"], summary["repair"]
    lines += [
        "",
        "| N | steps checked | E at this N | (1-E)^N | (1-E_pooled)^N | single pass"
        " | P(at most R fail) | same, repairs fix with p | arq, R=ceil(N/4)"
        " | arq runs ended by |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in summary["per_n"]:
        bound = row["bounds"]["R=ceil(N/4)"]
        endings = ", ".join(f"{k}: {v}" for k, v in row["arq_endings"].items()) or "-"
        lines.append(
            f"| {row['n']} | {row['n'] * row['tasks']} | {row['E']:.3f}"
            f" | {_pct(row['prediction'])} | {_pct(row['prediction_pooled'])}"
            f" | {_pct(row['ways']['single']['rate'])} | {_pct(bound['binomial'])}"
            f" | {_pct(bound['with_p'])} | {_pct(row['ways']['arq R=ceil(N/4)']['rate'])}"
            f" | {endings} |"
        )
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in summary["E_by_kind"].items())
    goal = summary["goal"]
    ratios = ", ".join(f"N={n}: {r:.2f}" for n, r in goal["token_ratio_to_single"].items())
    at_32 = "no N=32 run" if goal["arq_at_32"] is None else f"{goal['arq_at_32']:.0%}"
    lines += [
        "",
        f"E_pooled = {pooled:.3f} over every step of every task. Per-step error rate of"
        f" the first call by kind: {kinds}. In the re-asks (temperature"
        f" {summary['temperature']}) steps failed at {summary['E_reask_calls']:.3f}.",
        f"Repairs made: {repair['repairs']}; the repaired step passed in"
        f" {repair['p_fixed']:.0%} of them (p); {repair['same_value_again']} wrote the"
        " rejected value again; the steps written after the repaired one failed at"
        f" {repair['later_error_rate']:.3f}.",
        "",
        f"Goal at R=ceil(N/4): arq at N=32 at least 90 %: {_yes(goal['at_least_90_at_32'])}"
        f" ({at_32}); above the whole-object re-ask at every N:"
        f" {_yes(goal['above_reask_everywhere'])}; at most twice the single pass's output"
        f" tokens per run: {_yes(goal['within_twice_single'])} ({ratios}).",
    ]
    return "\n".join(lines) + "\n"


def _pct(rate: float) -> str:
    return f"{rate:.1%}" if 0 < rate < 0.095 else f"{rate:.0%}"


def _yes(flag: bool) -> str:
    return "met" if flag else "not met"


def plot(summary: Record, path: Path) -> None:
    plt = _pyplot()
    rows = summary["per_n"]
    ns = [row["n"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5.2))
    styles = {
        "single": ("single pass", "tab:gray", "o", "-"),
        "reask R=ceil(N/4)": ("whole-object re-ask, R=ceil(N/4)", "tab:orange", "s", "-"),
        "arq R=ceil(N/4)": ("arq, R=ceil(N/4)", "tab:blue", "D", "-"),
        "reask R=2": ("whole-object re-ask, R=2", "tab:orange", "s", ":"),
        "arq R=2": ("arq, R=2", "tab:blue", "D", ":"),
    }
    for way, (label, colour, marker, line) in styles.items():
        rates = [row["ways"][way]["rate"] for row in rows]
        left.plot(ns, rates, line, color=colour, marker=marker, label=label)
        tokens = [row["ways"][way]["tokens_per_run"] for row in rows]
        right.plot(ns, tokens, line, color=colour, marker=marker, label=label)
    e = summary["E_pooled"]
    left.plot(ns, [row["prediction_pooled"] for row in rows], "--", color="black",
              label=f"(1-E)^N, E = {e:.3f}")  # fmt: skip
    bounds = [row["bounds"]["R=ceil(N/4)"] for row in rows]
    left.plot(ns, [b["binomial_pooled"] for b in bounds], "-.", color="tab:green",
              label="P(at most ceil(N/4) steps fail), E pooled")  # fmt: skip
    p = summary["repair"]["p_fixed"]
    left.plot(ns, [b["with_p_pooled"] for b in bounds], ":", color="tab:green",
              label=f"same, each repair fixing its step with p = {p:.2f}")  # fmt: skip
    for axis, title in ((left, "accepted answers"), (right, "output tokens per run")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ns, [str(n) for n in ns])
        axis.set_xlabel("steps N")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.set_ylim(-0.03, 1.03)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle("SmolLM2-135M, grammar-constrained, 2 CPU cores", fontsize=10)
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "the plot needs matplotlib, which is not installed: pip install matplotlib"
            " (or pass --no-plot)"
        ) from None
    return plt


def update_doc(path: Path, table: str) -> None:
    """Replace the table between the markers in `path`."""
    region = f"{MARKERS[0]}\n{table}{MARKERS[1]}"
    path.write_text(_TABLE.sub(lambda _: region, _doc_text(path), count=1))


def _doc_text(path: Path) -> str:
    """The text of `path`, which must hold the table's markers (checked before a run)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SystemExit(f"--doc {path}: {exc.strerror}") from None
    if _TABLE.search(text) is None:
        raise SystemExit(f"{path}: no {MARKERS[0]} ... {MARKERS[1]} region to update")
    return text


def report(data: Record, args: argparse.Namespace) -> None:
    summary = summarize(data)
    summary["temperature"] = data["settings"]["repair_temperature"]
    table = markdown(summary)
    data["summary"], data["table"] = summary, table
    _write_json(args.out, data)
    print()
    print(table)
    if not args.no_plot:
        plot(summary, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    if args.doc is not None:
        update_doc(args.doc, table)
        print(f"updated the table in {args.doc}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 2, 8, 32 with a few tasks")
    parser.add_argument("--tasks", type=int, help="tasks per N (default: per-N counts)")
    parser.add_argument(
        "--counts", help="tasks per N, e.g. 2:16,4:16,8:10,16:6,32:4 (the published run)"
    )
    parser.add_argument("--ns", help="comma-separated step counts, e.g. 2,8,32")
    parser.add_argument("--out", type=Path, default=Path("docs/convergence.json"))
    parser.add_argument("--doc", type=Path, help="a Markdown file whose table to update")
    parser.add_argument("--replot", type=Path, help="only summarise this JSON again")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--repair-temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--first-task",
        type=int,
        default=0,
        help="seed of the first task of each N (to extend a run)",
    )
    parser.add_argument("--max-tokens", type=int, default=800)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per job")
    parser.add_argument(
        "--jobs", type=int, default=2, help="processes running tasks at once, one model each"
    )
    args = parser.parse_args(argv)
    if not args.no_plot:
        _pyplot()  # fail now, not after the run
    if args.doc is not None:
        _doc_text(args.doc)  # likewise
    if args.replot is not None:
        args.out = args.out if "--out" in (argv or sys.argv) else args.replot
        report(json.loads(args.replot.read_text()), args)
        return
    ns = [int(n) for n in args.ns.split(",")] if args.ns else list(QUICK_NS if args.quick else NS)
    counts = QUICK_TASKS if args.quick else FULL_TASKS
    if args.counts:
        pairs = (pair.split(":") for pair in args.counts.split(","))
        counts = {int(n): int(k) for n, k in pairs}
        ns = list(counts) if not args.ns else ns
    tasks_per_n = {n: args.tasks or counts.get(n, 10) for n in ns}
    print(f"tasks per N: {tasks_per_n}; budgets R = 2 and ceil(N/4)", flush=True)
    if args.jobs < 1 or args.threads < 1:
        raise SystemExit("--jobs and --threads must be at least 1")
    data = run_all(args, tasks_per_n)
    report(data, args)
    print(f"total time: {data['elapsed'] / 60:.1f} min")


if __name__ == "__main__":
    main()
