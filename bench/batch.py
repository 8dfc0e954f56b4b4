"""Batch jobs at scale: time and peak memory of `prepare` and `ingest`, and output tokens.

A 4-step schema over N items, three rounds. The engine is simulated (its answers are
written straight into the output file, by request content, and not timed):

- round 1: 20 % of the items list too many reasons (step 3 of 4 fails: the repair asks
  for steps 3 and 4 only);
- round 2: a quarter of those repairs write a label that is not allowed (step 4 fails:
  the repair asks for step 4 only);
- round 3: every answer is valid.

Each `prepare` and `ingest` runs in a subprocess of its own, so its peak memory (the
maximum resident set size) is its own. The job runs at N items and at N / 10 side by side,
so the memory ratio shows whether memory grows with the number of items. Output tokens
(about four characters a token) are compared with re-asking the whole object for each
failed item.

    python bench/batch.py                       # 100,000 items against 10,000
    python bench/batch.py --items 20000         # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import arq
from arq.checks import verbatim_in

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = ("kettle", "toaster", "blender", "lamp", "heater")
LABELS = ("keep", "refund", "replace")


class Review(arq.Reasoning):
    """Label a product review for the returns team."""

    product: Annotated[str, verbatim_in("review")] = arq.query(
        "Which product does the review name, quoted from it?"
    )
    sentiment: Literal["positive", "negative", "mixed"] = arq.query("How does the reviewer feel?")
    reasons: list[str] = arq.query(
        "Which reasons does the reviewer give?",
        instruction="At most three, a few words each.",
        max_length=3,
    )
    label: Literal["keep", "refund", "replace"] = arq.answer("What should the returns team do?")


def dataset(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(count):
            product = PRODUCTS[i % len(PRODUCTS)]
            review = (
                f"Review {i}: I bought the {product} last month. It works, but it is loud and"
                f" the handle gets hot. Customer number {i * 7919 % 100003}."
            )
            out.write(json.dumps({"id": f"r{i}", "context": {"review": review}}) + "\n")


def answer_for(i: int, asked: list[str], round_number: int) -> dict[str, Any]:
    full: dict[str, Any] = {
        "product": PRODUCTS[i % len(PRODUCTS)],
        "sentiment": "mixed",
        "reasons": ["loud", "hot handle"],
        "label": LABELS[i % 3],
    }
    if round_number == 1 and i % 5 == 0:
        full["reasons"] = ["loud", "hot handle", "heavy", "pricey", "slow"]
    if round_number == 2 and i % 20 == 0:
        full["label"] = "return"
    return {name: full[name] for name in asked}


def tokens(text: str) -> int:
    return -(-len(text) // 4)


def engine(folder: Path, round_number: int) -> tuple[Path, int, int]:
    """Answer the round's input files into one output file; its output tokens, and those
    of re-asking the whole object for each repair request."""
    output = folder / f"engine-round-{round_number}.jsonl"
    spent = whole = 0
    steps = list(Review.model_fields)
    with open(output, "w", encoding="utf-8") as out:
        for path in sorted((folder / f"round-{round_number}").glob("input-*.jsonl")):
            with open(path, encoding="utf-8") as source:
                for line in source:
                    request = json.loads(line)
                    body = request["body"]
                    text = " ".join(m["content"] for m in body["messages"])
                    i = int(re.search(r"Review (\d+):", text).group(1))  # type: ignore[union-attr]
                    schema = body["response_format"]["json_schema"]["schema"]
                    asked = list(schema["properties"])
                    answer = json.dumps(answer_for(i, asked, round_number))
                    spent += tokens(answer)
                    whole += tokens(json.dumps(answer_for(i, steps, round_number)))
                    usage = {"prompt_tokens": tokens(text), "completion_tokens": tokens(answer)}
                    message = {"role": "assistant", "content": answer}
                    completion = {
                        "id": f"chatcmpl-{i}",
                        "object": "chat.completion",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": usage,
                    }
                    response = {"status_code": 200, "request_id": f"req-{i}", "body": completion}
                    result = {"id": f"batch_req_{i}", "custom_id": request["custom_id"]}
                    out.write(json.dumps({**result, "response": response, "error": None}) + "\n")
    return output, spent, whole


def phase(args: argparse.Namespace) -> None:
    """One prepare or ingest, in this process: print its seconds and peak memory."""
    from arq import batch

    start = time.perf_counter()
    if args.phase == "prepare":
        batch.prepare(Review, args.dataset, args.dir, model="gpt-4.1-mini")
        line = "prepared"
    else:
        line = batch.ingest(args.dir, [args.results], schema=Review).line()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "line": line}))


def measure(*argv: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, env=env, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def job(work: Path, count: int) -> list[dict[str, Any]]:
    folder, data = work / f"job-{count}", work / f"items-{count}.jsonl"
    dataset(data, count)
    rows = [
        {
            "step": "prepare",
            **measure("--phase", "prepare", "--dir", str(folder), "--dataset", str(data)),
        }
    ]
    for round_number in (1, 2, 3):
        output, spent, whole = engine(folder, round_number)
        row = measure("--phase", "ingest", "--dir", str(folder), "--results", str(output))
        rows.append({"step": f"ingest round {round_number}", "spent": spent, "whole": whole, **row})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--phase", choices=("prepare", "ingest"))
    parser.add_argument("--dir")
    parser.add_argument("--dataset")
    parser.add_argument("--results")
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return
    work = Path(tempfile.mkdtemp(prefix="arq-batch-bench-"))
    try:
        small, large = args.items // 10, args.items
        runs = {count: job(work, count) for count in (small, large)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    columns = f"{'items':>8} {'seconds':>8} {'peak MiB':>9}"
    print(f"{'step':<16} {columns}   {columns}  memory ratio")
    for a, b in zip(runs[small], runs[large], strict=True):
        print(
            f"{a['step']:<16} {small:>8} {a['seconds']:>8.1f} {a['peak_mib']:>9.0f}   {large:>8}"
            f" {b['seconds']:>8.1f} {b['peak_mib']:>9.0f}  {b['peak_mib'] / a['peak_mib']:>11.2f}"
        )
    for row in runs[large][1:]:
        print(f"  {row['step']}: {row['line']}")
    spent = sum(row["spent"] for row in runs[large][1:])
    rounds_one = runs[large][1]["spent"]
    whole = rounds_one + sum(row["whole"] for row in runs[large][2:])
    print(
        f"output tokens, {large} items: {spent} with step repairs, {whole} re-asking the whole"
        f" object ({spent / whole:.3f}); repairs alone: {spent - rounds_one} against"
        f" {whole - rounds_one} ({(spent - rounds_one) / (whole - rounds_one):.3f})"
    )


if __name__ == "__main__":
    main()
