"""`arq render`: print the prompt, the response format a server gets, and the prompt's size."""

from __future__ import annotations

import argparse
import importlib.util
from typing import TextIO

from arq.cli.load import load_context, load_schema
from arq.cli.options import LOCAL_EXTRA, add_profile
from arq.cli.output import one_line, write_json
from arq.errors import ModelNotFoundError
from arq.prompt import PromptBuilder, Request

__all__ = ["HELP", "add_arguments", "command"]

HELP = "Print the prompt, the response format and its size."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `arq render` after SCHEMA."""
    parser.add_argument("--context", metavar="FILE", help="a JSON object: the run's context")
    add_profile(parser, default="openai")
    parser.add_argument("--json", action="store_true", help="print the whole request as JSON")


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`arq render`: the messages, the wire form of `--profile` and the size; or `--json`."""
    schema = load_schema(args.schema)
    context = load_context(args.context) if args.context else None
    request = PromptBuilder().build(schema, context)
    if args.json:
        write_json(out, request.to_dict())
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
        write_json(out, wire)
    else:
        out.write("none: the schema is in the prompt only\n")
    chars = request.prompt_chars()
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
        from arq.backends.llamacpp import count_tokens, resolve_model_path

        try:
            path = resolve_model_path()
        except ModelNotFoundError as exc:
            return None, f"token counts need the `local` extra's model: {exc}"
        return count_tokens(request, path), f"{path.stem} tokenizer, chat template applied"
    except Exception as exc:
        return None, one_line(f"tokens could not be counted: {type(exc).__name__}: {exc}")
