"""`arq export`: print a schema's JSON Schema in a dialect, whole or some steps only."""

from __future__ import annotations

import argparse
from typing import TextIO

from arq.cli.load import load_schema
from arq.cli.options import add_dialect
from arq.cli.output import write_json
from arq.errors import UsageError
from arq.jsonschema import json_schema
from arq.schema import steps

__all__ = ["HELP", "add_arguments", "command"]

HELP = "Print the schema's JSON Schema."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `arq export` after SCHEMA."""
    add_dialect(parser)
    parser.add_argument("--steps", metavar="a,b", help="only these steps, comma-separated")


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq export`: the JSON Schema of the schema, or of the steps `--steps` names."""
    schema = load_schema(args.schema)
    names: list[str] | None = None
    if args.steps is not None:
        names = [n.strip() for n in args.steps.split(",") if n.strip()]
        known = [s.name for s in steps(schema)]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise UsageError(
                f"--steps: {schema.__name__} has no step {', '.join(map(repr, unknown))}; "
                f"its steps: {', '.join(known)}"
                if unknown
                else f"--steps names no step; {schema.__name__}'s steps: {', '.join(known)}"
            )
    write_json(out, json_schema(schema, args.dialect, steps=names))
    return 0
