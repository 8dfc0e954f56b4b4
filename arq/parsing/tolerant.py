"""`parse_tolerant`: the JSON object in a model's text that may hold prose or fences."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, cast

from arq.errors import OutputParseError
from arq.parsing.events import step_names

__all__ = ["parse_tolerant"]

# Bounds the raw_decode attempts of parse_tolerant, each linear in the text after it.
_MAX_ATTEMPTS = 32
_fence = re.compile(r"```[A-Za-z0-9_+-]*")


def _candidates(text: str) -> list[int]:
    """Offsets where a JSON object may start, the likeliest first, at most _MAX_ATTEMPTS."""
    found: dict[int, None] = {}  # an ordered set
    stripped = len(text) - len(text.lstrip())
    if text.startswith("{", stripped):
        found[stripped] = None
    brace = -1  # only grows, so the searches after fences read the text once in all
    for m in _fence.finditer(text):
        if m.end() > brace:
            brace = text.find("{", m.end())
            if brace < 0:
                break
            found[brace] = None
            if len(found) >= _MAX_ATTEMPTS:
                break
    brace = text.find("{")
    while brace >= 0 and len(found) < _MAX_ATTEMPTS:
        found[brace] = None
        brace = text.find("{", brace + 1)
    return list(found)


def parse_tolerant(text: str, steps: Sequence[str] | type[Any] | None = None) -> dict[str, Any]:
    """Find the JSON object in a model's text, which may hold fences or prose around it.

    For backends without constrained decoding. Objects are tried at the start of the text,
    then after code fences, then at each brace (a bounded number of tries). With `steps`,
    the first object having at least one step key wins over other objects; objects inside
    an object already decoded are not candidates.

    Raises:
        OutputParseError: No JSON object was found (problem "invalid_json").
    """
    wanted = set(step_names(steps)) if steps is not None else None
    decoder = json.JSONDecoder()
    fallback: dict[str, Any] | None = None
    failed_at: int | None = None
    decoded: list[tuple[int, int]] = []
    for start in _candidates(text):
        if any(a < start < b for a, b in decoded):
            continue
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            failed_at = exc.pos if failed_at is None else failed_at
            continue
        except (ValueError, RecursionError):  # e.g. an int too long to convert
            failed_at = start if failed_at is None else failed_at
            continue
        decoded.append((start, end))
        if wanted is None or not wanted.isdisjoint(obj):
            return cast("dict[str, Any]", obj)
        if fallback is None:
            fallback = obj
    if fallback is not None:
        return fallback
    hint = "the output should be one JSON object, bare or in a ```json fence"
    if failed_at is None:
        raise OutputParseError(
            f"no JSON object found in the output, which holds no '{{': {hint}",
            problem="invalid_json",
            position=0,
        )
    raise OutputParseError(
        f"no valid JSON object found in the output; the first one breaks at character"
        f" {failed_at}: {hint}",
        problem="invalid_json",
        position=failed_at,
    )
