"""The run's context as the model reads it: each value rendered as prompt text.

The prompt's context section shows values this way (the `as_text` filter of
`PromptBuilder`), and a repair quotes its evidence lines from the same text
(`arq.repair`), so a line quoted again reads as the model first saw it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic_core import to_jsonable_python

__all__ = ["context_text", "json_text"]


def json_text(value: Any) -> str:
    """A value as indented JSON (what JSON cannot hold, as its `str`)."""
    data = to_jsonable_python(value, fallback=str)
    return json.dumps(data, indent=2, ensure_ascii=False)


def context_text(value: Any) -> str:
    """A context value as prompt text: strings as-is, a conversation as `role: content`
    lines, anything else (numbers, lists, mappings, Pydantic models) as indented JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and value and all(_is_message(m) for m in value):
        return "\n".join(f"{m['role']}: {context_text(m['content'])}" for m in value)
    return json_text(value)


def _is_message(value: Any) -> bool:
    return isinstance(value, Mapping) and {"role", "content"} <= value.keys()
