"""`arq eval`: run `arq.eval.evaluate` from the command line, write reports.

SCHEMA and `--scorers` name module attributes, as the other commands' SCHEMA does.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from arq.cli.load import load_attribute, load_schema
from arq.cli.options import add_model_options, at_least, backend
from arq.errors import DatasetError, UsageError
from arq.eval.strategies import DEFAULT_STRATEGIES, STRATEGIES
from arq.schema import Reasoning
from arq.trace import write_file

if TYPE_CHECKING:
    from arq.eval import EvalReport, Scorer

__all__ = ["HELP", "add_arguments", "command", "load_schemas", "load_scorers"]

HELP = "Run ARQ and its baselines on a dataset; report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `arq eval` after SCHEMA; the model options are `arq run`'s."""
    parser.epilog = (
        "SCHEMA may also name a dict of schemas by name (module:attr); each item then names "
        "its schema with its 'schema' key. Exit status: 0 once the report is written, 1 if "
        "every run failed to reach the model, 2 on bad input."
    )
    add = parser.add_argument
    add("dataset", metavar="DATASET", help="a JSONL file: one {id, context, expect} per line")
    add("--scorers", required=True, metavar="SPEC", help="module:attr or file.py:attr: a dict "
        "or list of (output, item) -> bool callables")  # fmt: skip
    add("--strategies", default=",".join(DEFAULT_STRATEGIES), metavar="a,b",
        help=f"of {', '.join(STRATEGIES)} (default: {','.join(DEFAULT_STRATEGIES)})")  # fmt: skip
    add("--repeats", type=at_least(1), default=1, metavar="K", help="runs per item (pass^K)")
    add("--concurrency", type=at_least(1), metavar="N", help="runs at once (default: 1 "
        "on the embedded model, 8 on a server)")  # fmt: skip
    add("--temperature", type=float, default=0.7, metavar="T", help="default 0.7")
    add("--repair-temperature", type=float, metavar="T", help="default: --temperature")
    add("--seed", type=int, default=0, metavar="S", help="repeat r uses S + r (default 0)")
    add("--max-repairs", type=at_least(0), default=2, metavar="N", help="for arq (default 2)")
    add("--max-tokens", type=at_least(1), metavar="N", help="output limit per call")
    add("--unconverged", choices=("raise", "return"), default="raise", help="when repairs do "
        "not converge: raise ConvergenceError (default), or return what the run has, "
        "recorded as Unconverged (not answered)")  # fmt: skip
    add_model_options(parser)
    add("--limit", type=at_least(1), metavar="N", help="the first N items only")
    add("--out", metavar="DIR", help="write report.md, report.json and report.png there")
    add("--no-progress", action="store_true", help="no progress bar on stderr")


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq eval`: run, print the Markdown report, write the files. 0 once reported; 1 when
    the model service failed on every run."""
    from arq.eval import evaluate, load_dataset
    from arq.eval.evaluation import check_dataset

    schemas = load_schemas(args.schema)
    try:
        dataset = load_dataset(args.dataset)[: args.limit]
        check_dataset(schemas, dataset)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    scorers = load_scorers(args.scorers)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    wrong = [s for s in strategies if s not in STRATEGIES]
    if wrong or not strategies:
        raise UsageError(f"--strategies: unknown {wrong or 'none'}; choose from {STRATEGIES}")
    folder = Path(args.out) if args.out else None
    if folder is not None:  # before the run: a folder that cannot be made fails at once
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {args.out!r}: {exc.strerror or exc}") from None
    model = backend(args)
    try:
        report = evaluate(
            schemas,
            dataset,
            backend=model,
            strategies=strategies,
            repeats=args.repeats,
            scorers=scorers,
            concurrency=args.concurrency or (8 if args.base_url else 1),
            temperature=args.temperature,
            repair_temperature=args.repair_temperature,
            seed=args.seed,
            max_repairs=args.max_repairs,
            max_tokens=args.max_tokens,
            progress=False if args.no_progress else err,
            unconverged=args.unconverged,
        )
    finally:
        asyncio.run(model.aclose())
    out.write(report.to_markdown())
    if folder is not None:
        _write_files(report, folder, out, err)
    failed = [o for o in report.outcomes if o.error_type == "BackendError"]
    if failed and len(failed) == len(report.outcomes):  # a setup problem, not a score
        err.write(f"error: every run failed to reach the model: {failed[0].error}\n")
        return 1
    return 0


def _write_files(report: EvalReport, folder: Path, out: TextIO, err: TextIO) -> None:
    """report.md, report.json and, with matplotlib, report.png in `folder`; each is written
    whole or not at all, and one that cannot be written is a `UsageError`."""
    from arq.eval.report import PLOT_EXTRA

    written: list[str] = []
    try:
        write_file(folder / "report.md", report.to_markdown())
        write_file(folder / "report.json", report.to_json() + "\n")
        written += ["report.md", "report.json"]
        report.plot(folder / "report.png")
        written.append("report.png")
    except ImportError:
        err.write(f"warning: report.png not written: matplotlib is missing ({PLOT_EXTRA})\n")
    except OSError as exc:
        name = ["report.md", "report.json", "report.png"][len(written)]
        raise UsageError(f"--out: cannot write {folder / name}: {exc.strerror or exc}") from None
    out.write(f"\nreport written to {folder}/ ({', '.join(written)})\n")


def load_schemas(spec: str) -> type[Reasoning] | dict[str, type[Reasoning]]:
    """SCHEMA as `arq` reads it, or `module:attr` naming a dict of schemas by name."""
    try:
        value = load_attribute(spec, "SCHEMA") if ":" in spec.strip(":") else None
    except UsageError:
        value = None  # let load_schema say what is wrong, in its words
    if isinstance(value, type) and issubclass(value, Reasoning):
        return value
    if isinstance(value, Mapping) and value:
        if all(isinstance(v, type) and issubclass(v, Reasoning) for v in value.values()):
            return {str(k): v for k, v in value.items()}
        raise UsageError(f"{spec}: every value of the dict must be an arq.Reasoning subclass")
    return load_schema(spec)


def load_scorers(spec: str) -> dict[str, Scorer]:
    """`--scorers`: a `module:attr` or `file.py:attr` naming a dict or list of scorers."""
    from arq.eval.evaluation import named_scorers

    value = load_attribute(spec, "--scorers")
    if callable(value) and not isinstance(value, type):
        value = [value]
    if not isinstance(value, Mapping | list | tuple):
        raise UsageError(f"--scorers {spec}: a dict or list of scorers, not {type(value).__name__}")
    try:
        return named_scorers(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--scorers {spec}: {exc}") from None
