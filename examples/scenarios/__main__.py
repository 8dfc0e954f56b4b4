"""`python -m examples.scenarios [arq eval options]`: the scenario set on the embedded model."""

from __future__ import annotations

import sys
from pathlib import Path

from arq.cli import cli

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "schema.py"


def main(argv: list[str]) -> int:
    """`arq eval` on the scenario set: all four strategies, k=2; later options win."""
    return cli(
        [
            "eval",
            f"{SCHEMA}:SCHEMAS",
            str(HERE / "scenarios.jsonl"),
            "--scorers",
            f"{SCHEMA}:SCORERS",
            "--strategies",
            "arq,arq-unchecked,cot,direct",
            "--repeats",
            "2",
            *argv,
        ]
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
