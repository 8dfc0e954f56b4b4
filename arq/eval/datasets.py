"""Evaluation datasets: JSONL items of a context and what a good output is expected to hold."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arq.errors import DatasetError

__all__ = ["check_unique", "load_dataset", "parse_item"]

_KEYS = ("id", "schema", "context", "expect")


def load_dataset(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The items of a JSONL file, one JSON object per line (blank lines are skipped).

    An item is `{"id": ..., "context": {...}, "expect": {...}}`: `context` is required,
    `expect` defaults to `{}`, `id` (text or number) to the line number, and `schema` names
    the schema to run it with when `evaluate` is given several. Other keys are kept.

    Raises:
        DatasetError: the file cannot be read, or a line is not a valid item (with its line).
    """
    name = os.fspath(path)
    try:
        lines = Path(name).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else str(exc)
        raise DatasetError(f"dataset {name!r}: {reason}") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}, line {number}: not valid JSON: {exc.msg}") from None
        items.append(parse_item(data, str(number), f"{name}, line {number}"))
    if not items:
        raise DatasetError(f"dataset {name!r} holds no items")
    check_unique(items, name)
    return items


def parse_item(data: Any, default_id: str, where: str) -> dict[str, Any]:
    """One checked item; `where` names it in errors (a file and line, or an index)."""
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: an item must be a JSON object, not {type(data).__name__}")
    for key in data:
        close = difflib.get_close_matches(key, _KEYS, n=1, cutoff=0.75)
        if key not in _KEYS and close:
            raise DatasetError(f"{where}: unknown key {key!r}: did you mean {close[0]!r}?")
    if not isinstance(data.get("context"), dict):
        raise DatasetError(f"{where}: 'context' must be an object (the run's context)")
    if not isinstance(data.get("expect", {}), dict):
        raise DatasetError(f"{where}: 'expect' must be an object")
    item_id = data.get("id", default_id)
    if not isinstance(item_id, str | int) or isinstance(item_id, bool) or item_id == "":
        raise DatasetError(f"{where}: 'id' must be a non-empty text or a number")
    if "schema" in data and not isinstance(data["schema"], str):
        raise DatasetError(f"{where}: 'schema' must be a schema's name")
    return {**data, "id": str(item_id), "expect": dict(data.get("expect", {}))}


def check_unique(items: Sequence[Mapping[str, Any]], where: str) -> None:
    """Refuse a dataset that uses an id twice."""
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise DatasetError(f"{where}: the id {item['id']!r} is used twice")
        seen.add(item["id"])
