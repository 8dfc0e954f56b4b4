"""A batch job on the embedded model: a stock blueprint over N support messages, in rounds.

The `classification-with-evidence` blueprint labels each message (billing, technical,
account) with quotes that must be copied from it; `arq batch loop --local` runs the rounds
on the embedded model until every item is accepted or has failed. Prints each round's line
and the share of items accepted after it.

    python bench/batch_local.py              # 50 items
    python bench/batch_local.py --items 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from arq import batch
from arq.backends.llamacpp import LlamaCppBackend
from arq.blueprints import ClassificationWithEvidence

LABELS = [
    {"id": "billing", "description": "payments, charges, invoices, refunds"},
    {"id": "technical", "description": "bugs, errors, outages"},
    {"id": "account", "description": "login, profile, settings"},
]
MESSAGES = [
    "I was charged twice for my {month} subscription and want the second payment back.",
    "The app crashes every time I open the {month} report.",
    "I cannot log in since I changed my email address in {month}.",
    "My invoice for {month} shows a price higher than my plan.",
    "The export button gives error 500 since the {month} update.",
    "Please change the name on my profile; it is still the one from {month}.",
    "The refund you promised in {month} never reached my card.",
    "Pages load forever since {month}, on every browser I tried.",
    "How do I turn on two-factor login? I set up the account in {month}.",
    "Why was I billed in {month} after I cancelled?",
]
MONTHS = ["January", "March", "May", "July", "September"]


def dataset(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(count):
            text = MESSAGES[i % len(MESSAGES)].format(month=MONTHS[i // len(MESSAGES) % 5])
            item = {"id": f"m{i}", "context": {"text": text, "labels": LABELS}}
            out.write(json.dumps(item) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arq-batch-local-"))
    try:
        dataset(work / "items.jsonl", args.items)
        folder = work / "job"
        batch.prepare(ClassificationWithEvidence, work / "items.jsonl", folder, model="local")
        backend = LlamaCppBackend(seed=0)
        accepted = 0
        start = time.perf_counter()
        for summary in batch.loop(
            folder, backend=backend, schema=ClassificationWithEvidence, concurrency=1
        ):
            accepted += summary.counts["accepted"]
            share = accepted / args.items
            print(f"{summary.line()}; accepted so far {accepted}/{args.items} ({share:.0%})")
        print(f"{time.perf_counter() - start:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
