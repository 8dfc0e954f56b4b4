"""Check recorded model outputs against a reasoning schema, as a CI job would.

    python examples/check_recorded_outputs.py

Each line of `recorded_outputs.jsonl` holds the run's context and the model's output;
checks that read the context (here: the order id must be quoted from the conversation) run
against the recorded context.
Exits 1 when any record is invalid.

The same check from the command line, as a CI step runs it
(docs/how-to/validate-in-ci.md has the workflow):

    arq validate examples/check_recorded_outputs.py:Triage examples/recorded_outputs.jsonl \
        --format junit --output report.xml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import arq


class Triage(arq.Reasoning):
    """Triage a support message."""

    request: str = arq.query("What is the customer asking for?", max_length=200)
    order_id: Annotated[str, arq.verbatim_in("conversation")] | None = arq.query(
        "Which order id does the customer give?",
        instruction="Copy it exactly; null if there is none.",
        default=None,
    )
    decision: Literal["reply", "escalate"] = arq.answer("Reply now, or escalate?")


RECORDS = Path(__file__).with_name("recorded_outputs.jsonl")


def main() -> int:
    failures = 0
    for number, line in enumerate(RECORDS.read_text().splitlines(), start=1):
        record = json.loads(line)
        try:
            arq.validate_output(Triage, record["output"], context=record["context"])
        except arq.StepError as error:
            failures += 1
            print(f"record {number}: invalid at step {error.step!r}: {error.errors[0]['msg']}")
        else:
            print(f"record {number}: valid")
    print(f"{failures} of {number} records invalid")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
