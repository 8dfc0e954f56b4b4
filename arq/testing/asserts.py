"""Assertions for users' own tests: recorded outputs validate, prompts match their snapshot."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from arq.errors import AssertionFailed, StepError
from arq.prompt import PromptBuilder
from arq.schema import Reasoning
from arq.trace import write_file
from arq.validation import validate_output

__all__ = ["assert_invalid_at", "assert_prompt_matches", "assert_valid", "render_prompt"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)


def assert_valid(
    schema: type[SchemaT], output: Mapping[str, Any], *, context: Mapping[str, Any] | None = None
) -> SchemaT:
    """The validated output; an `AssertionError` naming the failing step if it is invalid."""
    try:
        return validate_output(schema, output, context=context)
    except StepError as error:
        raise AssertionFailed(
            f"{schema.__name__} output is invalid at step {error.step!r}: {error}"
        ) from None


def assert_invalid_at(
    schema: type[Reasoning],
    output: Mapping[str, Any],
    step: str,
    *,
    context: Mapping[str, Any] | None = None,
) -> StepError:
    """The `StepError` of an output that must fail at `step` (and at no earlier step)."""
    try:
        validate_output(schema, output, context=context)
    except StepError as error:
        if error.step != step:
            raise AssertionFailed(
                f"expected {schema.__name__} to fail at step {step!r}, "
                f"but it failed at {error.step!r}: {error}"
            ) from None
        return error
    raise AssertionFailed(f"expected {schema.__name__} to fail at step {step!r}, but it is valid")


def render_prompt(
    schema: type[Reasoning],
    context: Mapping[str, Any] | None = None,
    *,
    builder: PromptBuilder | None = None,
) -> str:
    """The request for `schema` as readable text: each message, then the output schema."""
    request = (builder or PromptBuilder()).build(schema, context)
    parts = [f"=== {m['role']} ===\n{m['content']}" for m in request.messages]
    parts.append("=== output schema ===\n" + json.dumps(request.output_schema, indent=2))
    return "\n\n".join(parts) + "\n"


def assert_prompt_matches(
    schema: type[Reasoning],
    context: Mapping[str, Any] | None,
    path: str | os.PathLike[str],
    *,
    update: bool = False,
    builder: PromptBuilder | None = None,
) -> None:
    """Compare the rendered prompt with the snapshot file at `path`.

    With `update` (or when the file does not exist yet) the snapshot is written instead; a
    missing snapshot still fails, so a forgotten file cannot pass silently.
    """
    rendered = render_prompt(schema, context, builder=builder)
    snapshot = Path(path)
    if update or not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        existed = snapshot.exists()
        write_file(snapshot, rendered)
        if not existed and not update:
            raise AssertionFailed(f"prompt snapshot {snapshot} did not exist; it was written now")
        return
    recorded = snapshot.read_text(encoding="utf-8")
    if recorded != rendered:
        diff = difflib.unified_diff(
            recorded.splitlines(), rendered.splitlines(), "snapshot", "rendered now", lineterm=""
        )
        raise AssertionFailed(
            f"the prompt of {schema.__name__} differs from {snapshot} (update the snapshot if"
            " the change is intended):\n" + "\n".join(diff)
        )
