"""The `arq` command: its parser, the subcommand each line names, and the exit status.

    arq render SCHEMA [--context FILE] [--profile NAME] [--json]
    arq run SCHEMA [--context FILE] [--local | --base-url URL --model M [--profile NAME]]
    arq validate SCHEMA OUTPUTS... [--format text|json|junit] [--output FILE] [--allow-empty]
    arq lint SCHEMA [--dialect openai-strict|json-schema]
    arq export SCHEMA [--dialect ...] [--steps a,b]
    arq eval SCHEMA DATASET --scorers SPEC [--strategies a,b] [--repeats K] [--out DIR]
    arq batch prepare|run|ingest|loop ...

Each subcommand is a module of `arq.cli` that declares its arguments (`add_arguments`) and
runs (`command`). SCHEMA is `package.module:Class`, `path/to/file.py:Class` or a stock
blueprint name. Exit status: 0 success, 1 a failed verdict (invalid outputs, no valid
answer, an error finding), 2 a usage error (bad arguments, a missing file, an unknown
schema), 130 when interrupted. Bad input never shows a traceback: one line on stderr says
what to do.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol, TextIO

import arq.cli.batch as batch
import arq.cli.eval as evaluation
import arq.cli.export as export
import arq.cli.lint as lint
import arq.cli.render as render
import arq.cli.run as run
import arq.cli.validate as validate
from arq import __version__
from arq.cli.output import fail
from arq.errors import ArqError, BackendError, DeadlineExceededError, OutputError, UsageError
from arq.telemetry.export import exporting

__all__ = ["cli", "main"]


class _Command(Protocol):
    """What a subcommand's module holds."""

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def command(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> int: ...


COMMANDS: dict[str, _Command] = {
    "render": render,
    "run": run,
    "validate": validate,
    "lint": lint,
    "export": export,
    "eval": evaluation,
    "batch": batch,
}
_MODEL_COMMANDS = ("run", "eval")  # the commands that call a model

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
        if args.command in _MODEL_COMMANDS:
            with exporting(err):  # spans and metrics, when OTEL_*_EXPORTER asks for them
                return COMMANDS[args.command].command(args, out, err)
        return COMMANDS[args.command].command(args, out, err)
    except _ParserExit as done:
        return done.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # the reader of stdout left: `main` ends quietly
    except UsageError as error:
        return fail(err, str(error), 2)
    except _RUN_FAILURES as error:
        return fail(err, f"{type(error).__name__}: {error}", 1)
    except Exception as error:
        if os.environ.get("ARQ_TRACEBACK"):
            raise
        return fail(err, f"{type(error).__name__}: {error}", 2)


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


def _parser(streams: tuple[TextIO, TextIO]) -> _Parser:
    parser = _Parser(
        prog="arq",
        description="Render, run and check reasoning schemas.",
        epilog="SCHEMA: package.module:Class, path/to/file.py:Class or a stock blueprint name.",
        streams=streams,
    )
    parser.add_argument("--version", action="version", version=f"arq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub: _Parser = commands.add_parser(
            name, help=command.HELP, description=command.HELP, streams=streams
        )
        if getattr(command, "SCHEMA", True):  # a command with steps takes its own
            sub.add_argument("schema", metavar="SCHEMA", help="module:Class, file.py:Class or name")
        command.add_arguments(sub)
    return parser
