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
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible server")
        where.add_argument("--local", action="store_true", help="the embedded model")
        sub.add_argument("--concurrency", type=at_least(1), default=8, metavar="N")
        _schema_option(sub)
        if name == "loop":
            sub.add_argument(
                "--batch-api", action="store_true", help="submit each round to the Batch API"
            )
            sub.add_argument("--poll", type=float, default=60.0, metavar="S", help="seconds")

    for name, text in (
        ("submit", "start the current round's batches on the Batch API"),
        ("status", "show the current round's batches"),
        ("fetch", "download the results of the batches that ended"),
    ):
        sub = steps.add_parser(name, help=text, **extra)
        sub.add_argument("dir", metavar="DIR", help="the job's folder")
        sub.add_argument("--base-url", metavar="URL", help="a server with the Batch API")
        if name == "fetch":
            sub.add_argument("--keep", action="store_true", help="keep the files on the server")

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
    if args.step in ("submit", "status", "fetch"):
        return _batch_api(args, out)
    schema = load_schema(args.schema or batch.Manifest.load(args.dir).job.schema_spec)
    if args.step == "ingest":
        summary = batch.ingest(args.dir, args.results, schema=schema)
        out.write(summary.line() + "\n")
        return 0
    batch_api = getattr(args, "batch_api", False)
    if batch_api and args.local:
        raise UsageError("--batch-api goes with --base-url (or OpenAI's), not --local")
    if not (batch_api or args.local or args.base_url):
        raise UsageError(f"`arq batch {args.step}` needs --base-url URL or --local")
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
        batch_api=batch_api,
        poll=args.poll,
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


def _batch_api(args: argparse.Namespace, out: TextIO) -> int:
    """`submit`, `status`, `fetch`: one line per batch, or per round."""
    from arq import batch

    if args.step == "submit":
        sent = batch.submit(args.dir, base_url=args.base_url)
        ids = ", ".join(str(entry["id"]) for entry in sent.batches)
        out.write(f"round {sent.number}: {len(sent.batches)} batch(es) submitted: {ids}\n")
    elif args.step == "status":
        for found in batch.status(args.dir, base_url=args.base_url):
            counts = found.get("request_counts") or {}
            out.write(
                f"{found['id']}: {found['status']}, {counts.get('completed', 0)} completed,"
                f" {counts.get('failed', 0)} failed of {counts.get('total', 0)}\n"
            )
    else:
        got = batch.fetch(args.dir, base_url=args.base_url, keep=args.keep)
        done = sum(entry.get("outputs") is not None for entry in got.batches)
        if got.state == "ran":
            out.write(f"round {got.number}: every batch fetched; `arq batch ingest` goes on\n")
        else:
            out.write(f"round {got.number}: {done} of {len(got.batches)} batches fetched\n")
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
