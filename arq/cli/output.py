"""How the `arq` command writes: JSON documents and one-line messages."""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

__all__ = ["fail", "one_line", "write_json"]


def one_line(text: str) -> str:
    """`text` with its line breaks folded, for a one-line message."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def fail(err: TextIO, message: str, code: int) -> int:
    """Write `error: message` as one line on `err`; return the exit status `code`."""
    err.write(f"error: {one_line(message)}\n")
    return code


def write_json(out: TextIO, value: Any) -> None:
    """Write `value` as indented JSON (non-ASCII characters kept), then a line break."""
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
