"""`arq lint`: report what a schema loses on providers, and how to fix it."""

from __future__ import annotations

import argparse
from typing import TextIO

from arq.cli.load import load_schema
from arq.cli.options import add_dialect
from arq.jsonschema import lint

__all__ = ["HELP", "add_arguments", "command"]

HELP = "Report what the schema loses on providers."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `arq lint` after SCHEMA."""
    add_dialect(parser)


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq lint`: one finding and its fix per entry, then the counts; 1 if an error."""
    findings = lint(load_schema(args.schema), dialect=args.dialect)
    for finding in findings:
        out.write(f"{finding.severity:<8}{finding.path}: {finding.message} [{finding.code}]\n")
        out.write(f"{'':8}fix: {finding.fix}\n")
    errors = sum(1 for f in findings if f.severity == "error")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    text = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
    out.write(f"{text or 'no findings'} ({args.dialect})\n")
    return 1 if errors else 0
