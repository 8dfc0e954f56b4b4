"""`arq batch`: big jobs through batch files, in rounds until every item has its outcome.

arq batch prepare SCHEMA DATASET --out DIR --model M [--profile NAME] [settings...]
arq batch run DIR --base-url URL [--concurrency N]
arq batch ingest DIR [RESULTS.jsonl [ERRORS.jsonl]] [--schema SCHEMA]
arq batch loop DIR --base-url URL [--concurrency N] [--schema SCHEMA]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from arq.cli.load import load_schema
from arq.cli.options import LOCAL_EXTRA, add_profile, at_least
from arq.errors import UsageError

if TYPE_CHECKING:
    from arq.backends.base import Backend

__all__ = ["HELP", "SCHEMA", "add_arguments", "command"]

HELP = "Big jobs through batch files (OpenAI Batch API, vllm run-batch), in repair rounds."
SCHEMA = False  # the steps take their own arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The steps of `arq batch` and their options."""
    streams: Any = getattr(parser, "streams", None)
    extra = {"streams": streams} if streams is not None else {}
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    prepare = steps.add_parser("prepare", help="write the first round's request files", **extra)
    prepare.add_argument("schema", metavar="SCHEMA", help="module:Class, file.py:Class or name")
    prepare.add_argument("dataset", metavar="DATASET", help="JSONL items: {id, context}")
    prepare.add_argument("--out", required=True, metavar="DIR", help="the job's folder")
    prepare.add_argument("--model", required=True, metavar="M", help="the engine's model name")
    add_profile(prepare, default="openai")
    prepare.add_argument("--temperature", type=float, metavar="T")
    prepare.add_argument("--repair-temperature", type=float, metavar="T")
    prepare.add_argument("--seed", type=int, metavar="N")
    prepare.add_argument("--max-tokens", type=at_least(1), metavar="N")
    prepare.add_argument("--max-repairs", type=at_least(0), default=2, metavar="N")
    prepare.add_argument(
        "--retries", type=at_least(1), default=4, metavar="N", help="sends per request"
    )

    for name, text in (
        ("run", "send the current round to an OpenAI-compatible server"),
        ("loop", "run and ingest rounds until every item has its outcome"),
    ):
        sub = steps.add_parser(name, help=text, **extra)
        sub.add_argument("dir", metavar="DIR", help="the job's folder")
        where = sub.add_mutually_exclusive_group(required=True)
        where.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible server")
        where.add_argument("--local", action="store_true", help="the embedded model")
        sub.add_argument("--concurrency", type=at_least(1), default=8, metavar="N")
        _schema_option(sub)

    ingest = steps.add_parser("ingest", help="check a round's results, prepare the next", **extra)
    ingest.add_argument("dir", metavar="DIR", help="the job's folder")
    ingest.add_argument(
        "results", nargs="*", metavar="RESULTS", help="output (and error) files of the engine"
    )
    _schema_option(ingest)


def _schema_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema", metavar="SCHEMA", help="the job's schema, if not where prepare found it"
    )


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq batch STEP`: one line per round. 0 when the step is done."""
    from arq import batch

    if args.step == "prepare":
        manifest = batch.prepare(
            load_schema(args.schema),
            args.dataset,
            args.out,
            model=args.model,
            profile=args.profile,
            temperature=args.temperature,
            repair_temperature=args.repair_temperature,
            seed=args.seed,
            max_tokens=args.max_tokens,
            max_repairs=args.max_repairs,
            retries=args.retries,
            schema_spec=args.schema,
        )
        first = manifest.rounds[0]
        out.write(f"round 1: {first.requests} requests in {', '.join(first.inputs)}\n")
        return 0
    schema = load_schema(args.schema or batch.Manifest.load(args.dir).job.schema_spec)
    if args.step == "ingest":
        summary = batch.ingest(args.dir, args.results, schema=schema)
        out.write(summary.line() + "\n")
        return 0
    local = _local() if args.local else None
    if args.step == "run":
        ran = batch.run(
            args.dir,
            base_url=args.base_url,
            backend=local,
            schema=schema,
            concurrency=args.concurrency,
        )
        out.write(f"round {ran.number}: {ran.requests} answers in {', '.join(ran.outputs)}\n")
        return 0
    summaries = batch.loop(
        args.dir,
        base_url=args.base_url,
        backend=local,
        schema=schema,
        concurrency=args.concurrency,
        progress=lambda summary: _say(out, summary.line()),
    )
    if not summaries:
        out.write("every item has its outcome already\n")
    folder = Path(args.dir)
    accepted, failed = _lines(folder / "results.jsonl"), _lines(folder / "failed.jsonl")
    out.write(
        f"{accepted} accepted in {folder / 'results.jsonl'}, {failed} failed in"
        f" {folder / 'failed.jsonl'}\n"
    )
    return 0


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def _local() -> Backend:
    """The embedded model, or a usage error naming the extra it needs."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise UsageError(f"the embedded model needs the `local` extra ({LOCAL_EXTRA})")
    from arq.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend()


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()
