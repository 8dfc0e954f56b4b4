"""`arq validate`: check recorded outputs against a schema and report per record.

Files are `.json` (one record, or an array of records) or `.jsonl` / `.ndjson` (one
record per line; blank lines are skipped). A record is the output object alone, or

    {"version": 1, "context": {...}, "output": {...}}

(`version` may be left out; `context` too, and then `--context` supplies it). Anything
wrong with one record (bad JSON, an unknown version, a step that fails its checks) is a
failure of that record, reported with its file and line; the other records are still
checked.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from arq.cli.load import json_kind, load_context, load_schema, read_text
from arq.cli.output import one_line, write_json
from arq.errors import ArqError, ContextError, StepError, UsageError
from arq.schema import Reasoning, steps
from arq.trace import write_file
from arq.validation import validate_output

__all__ = [
    "HELP",
    "RECORD_VERSION",
    "Outcome",
    "add_arguments",
    "check_files",
    "command",
    "junit",
    "summary",
    "write_report",
    "write_to",
]

HELP = "Check recorded outputs against the schema."
RECORD_VERSION = 1
SUFFIXES = (".json", ".jsonl", ".ndjson")
_RECORD_KEYS = frozenset({"version", "context", "output"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `arq validate` after SCHEMA."""
    parser.add_argument("outputs", nargs="+", metavar="OUTPUTS", help=".json or .jsonl files")
    parser.add_argument("--format", choices=("text", "json", "junit"), default="text")
    parser.add_argument("--output", metavar="FILE", help="write the report here")
    parser.add_argument("--context", metavar="FILE", help="the context of bare outputs")
    parser.add_argument(
        "--allow-empty", action="store_true", help="exit 0 when the files hold no record"
    )


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq validate`: the report on every record; 1 if one is invalid, or if there is none
    (unless `--allow-empty`)."""
    schema = load_schema(args.schema)
    context = load_context(args.context) if args.context else None
    outcomes = check_files(schema, args.outputs, context)
    files = len(dict.fromkeys(args.outputs))
    if args.output:
        report = io.StringIO()
        write_report(report, args.format, args.schema, outcomes, files)
        write_to(args.output, report.getvalue())
        out.write(f"{summary(outcomes, files)}; report written to {args.output}\n")
    else:
        write_report(out, args.format, args.schema, outcomes, files)
    if not outcomes and args.allow_empty:
        err.write("warning: no records found\n")
    elif not outcomes:
        err.write("error: no records found: pass --allow-empty if no record is fine\n")
        return 1
    return 0 if all(o.valid for o in outcomes) else 1


@dataclass
class Outcome:
    """The verdict on one record.

    Attributes:
        file: The file, as given on the command line.
        line: The line where the record starts (or where its JSON broke).
        valid: The record's output passed every check.
        kind: "StepError", "InvalidJSON", "InvalidRecord", "ContextError", ...
        message: One line on what failed.
        step: The failing step, for a StepError.
        check: The cross-step check that failed, if one did.
        errors: Each error of the step: `loc`, `msg`, `type`.
        seconds: Time spent checking the record.
    """

    file: str
    line: int
    valid: bool = True
    kind: str = ""
    message: str = ""
    step: str | None = None
    check: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def location(self) -> str:
        """`file:line`."""
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON report's entry for this record."""
        return {
            "file": self.file,
            "line": self.line,
            "valid": self.valid,
            "kind": self.kind or None,
            "message": self.message or None,
            "step": self.step,
            "check": self.check,
            "errors": self.errors,
        }


class _Broken:
    """A record that could not be read, and why."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind, self.message = kind, message


def check_files(
    schema: type[Reasoning], paths: Sequence[str], context: Mapping[str, Any] | None
) -> list[Outcome]:
    """Check every record of every file, in order. Unreadable files are a `UsageError`."""
    for path in paths:
        if not path.endswith(SUFFIXES):
            raise UsageError(f"{path!r}: expected a .json or .jsonl file of recorded outputs")
    texts = [(path, read_text(path, "outputs file")) for path in paths]
    names = frozenset(s.name for s in steps(schema))
    outcomes = []
    for path, text in texts:
        for line, record in _records(path, text):
            start = time.perf_counter()
            outcome = _check(schema, names, path, line, record, context)
            outcome.seconds = time.perf_counter() - start
            outcomes.append(outcome)
    return outcomes


def _records(path: str, text: str) -> Iterator[tuple[int, Any]]:
    """(line, decoded record or `_Broken`) for each record of a file."""
    if not path.endswith(".json"):
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, _Broken("InvalidJSON", f"not valid JSON: {_json_error(exc)}")
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        yield exc.lineno, _Broken("InvalidJSON", f"not valid JSON: {_json_error(exc)}")
        return
    if not isinstance(document, list):
        yield _line_of(text, len(text) - len(text.lstrip())), document
        return
    decoder, position = json.JSONDecoder(), text.index("[") + 1
    for _ in document:  # the text is valid JSON: find where each item starts
        position = _skip(text, position, ",")
        value, end = decoder.raw_decode(text, position)
        yield _line_of(text, position), value
        position = end


def _skip(text: str, position: int, separator: str) -> int:
    match = re.compile(rf"[\s{re.escape(separator)}]*").match(text, position)
    return match.end() if match else position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} (column {exc.colno})"


def _check(
    schema: type[Reasoning],
    names: frozenset[str],
    path: str,
    line: int,
    record: Any,
    fallback: Mapping[str, Any] | None,
) -> Outcome:
    outcome = Outcome(path, line)
    if isinstance(record, _Broken):
        return _failed(outcome, record.kind, record.message)
    if not isinstance(record, dict):
        return _failed(
            outcome, "InvalidRecord", f"a record is a JSON object, not {json_kind(record)}"
        )
    output: Any = record
    context: Any = fallback
    if _is_envelope(record, names):
        problem = _envelope_problem(record)
        if problem:
            return _failed(outcome, "InvalidRecord", problem)
        output = record["output"]
        context = record["context"] if record.get("context") is not None else fallback
        if not isinstance(context, dict | None):
            return _failed(
                outcome, "InvalidRecord", f"'context' is {json_kind(context)}, not an object"
            )
    try:
        validate_output(schema, output, context=context)
    except StepError as error:
        outcome.step, outcome.check = error.step, error.check
        outcome.errors = [
            {
                "loc": _location(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in error.errors
        ]
        origin = f" (check {error.check!r})" if error.check else ""
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in outcome.errors)
        return _failed(outcome, "StepError", f"step {error.step!r}{origin}: {summary}")
    except ContextError as error:
        hint = "record the run's context with the output, or pass --context FILE"
        return _failed(outcome, "ContextError", f"{error} ({hint})")
    except ArqError as error:
        return _failed(outcome, type(error).__name__, str(error))
    except Exception as error:  # a check of the schema itself crashed on this output
        return _failed(
            outcome, type(error).__name__, f"a check raised {type(error).__name__}: {error}"
        )
    return outcome


def _is_envelope(record: dict[str, Any], names: frozenset[str]) -> bool:
    """A record with version/context/output, as opposed to the output alone. Keys that are
    all steps of the schema read as an output, whatever their names."""
    keys = set(record)
    if keys <= names:
        return False
    return "version" in keys or ("output" in keys and keys <= _RECORD_KEYS)


def _envelope_problem(record: dict[str, Any]) -> str | None:
    version = record.get("version", RECORD_VERSION)
    if isinstance(version, bool) or version != RECORD_VERSION:
        return f"unknown record version {version!r}: this arq reads version {RECORD_VERSION}"
    extra = sorted(set(record) - _RECORD_KEYS)
    if extra:
        keys = ", ".join(map(repr, extra))
        return f"unknown record keys {keys}: a record holds version, context and output"
    if "output" not in record:
        return "the record has no 'output'"
    if not isinstance(record["output"], dict):
        return f"'output' is {json_kind(record['output'])}, not an object"
    return None


def _failed(outcome: Outcome, kind: str, message: str) -> Outcome:
    outcome.valid, outcome.kind, outcome.message = False, kind, one_line(message)
    return outcome


def _location(loc: Any) -> str:
    parts = list(loc) if isinstance(loc, list | tuple) else [loc]
    text = str(parts[0]) if parts else ""
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# --- reports ---------------------------------------------------------------------------------


def summary(outcomes: Sequence[Outcome], files: int) -> str:
    invalid = sum(1 for o in outcomes if not o.valid)
    plural = "" if files == 1 else "s"
    return (
        f"{len(outcomes)} records in {files} file{plural}: "
        f"{len(outcomes) - invalid} valid, {invalid} invalid"
    )


def write_report(
    out: TextIO, fmt: str, schema_label: str, outcomes: Sequence[Outcome], files: int
) -> None:
    """Write the report in `fmt`: "text", "json" or "junit"."""
    if fmt == "json":
        invalid = sum(1 for o in outcomes if not o.valid)
        report = {
            "schema": schema_label,
            "records": len(outcomes),
            "valid": len(outcomes) - invalid,
            "invalid": invalid,
            "results": [o.to_dict() for o in outcomes],
        }
        write_json(out, report)
    elif fmt == "junit":
        out.write(junit(schema_label, outcomes))
    else:
        for outcome in outcomes:
            if outcome.valid:
                out.write(f"ok    {outcome.location}\n")
            elif len(outcome.errors) > 1:
                check = f" (check {outcome.check!r})" if outcome.check else ""
                out.write(f"FAIL  {outcome.location}  step {outcome.step!r}{check}\n")
                for error in outcome.errors:
                    out.write(f"        {error['loc']}: {one_line(error['msg'])}\n")
            else:
                out.write(f"FAIL  {outcome.location}  {outcome.message}\n")
        out.write(summary(outcomes, files) + "\n")


# characters XML 1.0 forbids; a recorded output may hold them
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def junit(schema_label: str, outcomes: Sequence[Outcome]) -> str:
    """JUnit XML: one test suite per file, one test case per record."""
    failures = sum(1 for o in outcomes if not o.valid)
    total = sum(o.seconds for o in outcomes)
    root = ET.Element(
        "testsuites",
        name=f"arq validate {schema_label}",
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        time=f"{total:.3f}",
    )
    by_file: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_file.setdefault(outcome.file, []).append(outcome)
    for file, group in by_file.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml_text(file),
            tests=str(len(group)),
            failures=str(sum(1 for o in group if not o.valid)),
            errors="0",
            skipped="0",
            time=f"{sum(o.seconds for o in group):.3f}",
        )
        for outcome in group:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_xml_text(schema_label),
                name=_xml_text(outcome.location),
                file=_xml_text(outcome.file),
                line=str(outcome.line),
                time=f"{outcome.seconds:.3f}",
            )
            if not outcome.valid:
                failure = ET.SubElement(
                    case, "failure", message=_xml_text(outcome.message), type=outcome.kind
                )
                details = [f"{e['loc']}: {e['msg']}" for e in outcome.errors]
                failure.text = _xml_text("\n".join(details or [outcome.message]))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def write_to(path: str, text: str) -> None:
    """Write a report file whole or not at all, as a `UsageError` if it cannot be written."""
    try:
        write_file(path, text)
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror or exc}") from None
