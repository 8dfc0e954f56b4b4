"""`arq validate` on a large JSONL of recorded outputs: the whole command, start-up included.

Writes `--records` versioned records (context + output, every tenth one invalid) of the
CI-validation example's schema to a temporary file, then times `arq validate` on it as a
CI step runs it (a fresh process), with the text and JUnit reports.

    python bench/validate.py [--records 10000]

Target: 10,000 records in at most 5 seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "check_recorded_outputs.py"


def records(n: int) -> str:
    lines = []
    for i in range(n):
        conversation = f"Order A-{i % 10000:04d} never arrived. I want my money back."
        order = f"A-{i % 10000:04d}" if i % 10 else "A-9999"  # every tenth: not quoted
        output = {"request": "a refund", "order_id": order, "decision": "reply"}
        record = {"version": 1, "context": {"conversation": conversation}, "output": output}
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "outputs.jsonl"
        data.write_text(records(args.records))
        schema = f"{EXAMPLE}:Triage"
        for fmt in ("text", "junit"):
            command = [sys.executable, "-m", "arq.cli", "validate", schema, str(data)]
            command += ["--format", fmt, "--output", str(Path(folder) / f"report.{fmt}")]
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                if done.returncode != 1:  # a tenth of the records are invalid
                    raise SystemExit(f"unexpected exit {done.returncode}: {done.stderr}")
            print(
                f"arq validate, {args.records} records, --format {fmt}: "
                f"median {statistics.median(times):.2f} s of {args.repeats} "
                f"(min {min(times):.2f}, max {max(times):.2f}); {done.stdout.strip()}"
            )


if __name__ == "__main__":
    main()
