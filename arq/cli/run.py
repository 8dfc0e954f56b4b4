"""`arq run`: run a schema on a model, printing each step as it is checked."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from pydantic_core import to_jsonable_python

from arq.cli.load import load_context, load_schema
from arq.cli.options import add_model_options, at_least, backend
from arq.cli.output import fail, one_line
from arq.errors import ConvergenceError
from arq.events import OutputAccepted, RepairStarted, RetryScheduled, StepAccepted, StepFailed
from arq.schema import Reasoning, steps
from arq.trace import Trace

if TYPE_CHECKING:
    from arq.executor import Executor

__all__ = ["HELP", "add_arguments", "command"]

HELP = "Run the schema on a model, printing each step as it completes."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `arq run` after SCHEMA."""
    add = parser.add_argument
    add("--context", metavar="FILE", help="a JSON object: the run's context")
    add_model_options(parser)
    add("--max-repairs", type=at_least(0), default=2, metavar="N")
    add("--temperature", type=float, metavar="T")
    add("--repair-temperature", type=float, metavar="T")
    add("--max-tokens", type=at_least(1), metavar="N", help="output limit per call")
    add("--seed", type=int, metavar="N")
    add("--trace", metavar="FILE", help="write every call as JSON lines")


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq run`: the steps as they pass or fail, the output, the cost. 1 if no valid answer."""
    from arq.executor import Executor

    schema = load_schema(args.schema)
    context = load_context(args.context) if args.context else {}
    steps(schema)  # a schema without steps is refused before any model is loaded
    executor = Executor(
        backend(args),
        max_repairs=args.max_repairs,
        temperature=args.temperature,
        repair_temperature=args.repair_temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    write = functools.partial(_say, out)
    write(
        f"model: {executor.backend.name}   schema: {schema.__name__} ({len(steps(schema))} steps)"
    )
    start = time.perf_counter()
    trace: Trace | None = None
    try:
        result = asyncio.run(_events(executor, schema, context, write))
        trace = result.trace
    except ConvergenceError as error:
        trace = error.trace
        write(f"kept steps: {', '.join(error.accepted) or 'none'}")
        _summary(write, error.trace, time.perf_counter() - start)
        return fail(err, f"no valid answer: {error}", 1)
    finally:
        if args.trace and trace is not None:
            trace.to_jsonl(args.trace)
    output = to_jsonable_python(result.output)
    write(json.dumps(output, indent=2, ensure_ascii=False))
    _summary(write, result.trace, time.perf_counter() - start)
    return 0


async def _events(
    executor: Executor,
    schema: type[Reasoning],
    context: dict[str, Any],
    write: Callable[[str], None],
) -> Any:
    failure = ""  # the reason just printed on a FAIL line, not repeated by the repair line
    async with executor:
        async for event in executor.stream(schema, context):
            if isinstance(event, StepAccepted):
                write(f"  ok   {event.step}: {_short(event.value)}")
            elif isinstance(event, StepFailed):
                failure = one_line(str(event.error))
                write(f"  FAIL {event.step or '(output)'}: {failure}")
            elif isinstance(event, RepairStarted):
                reason = one_line(event.reason)
                because = "" if reason == failure else f": {reason}"
                write(f"-- {event.kind} {event.attempt - 1}: redo from {event.step!r}{because}")
            elif isinstance(event, RetryScheduled):
                write(f"-- retry in {event.wait:.1f} s: {one_line(str(event.error))}")
            elif isinstance(event, OutputAccepted):
                return event.result
    raise AssertionError("the run ended without a result")  # pragma: no cover


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()  # live: each step shows as it completes, even through a pipe


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(to_jsonable_python(value), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(write: Callable[[str], None], trace: Trace, elapsed: float) -> None:
    usage = trace.usage
    write(
        f"calls: {len(trace.attempts)} ({trace.repairs} repairs)   "
        f"tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} output"
        f"{' (estimated)' if usage.estimated else ''}   time: {elapsed:.1f} s"
    )
