"""JSONL files of a batch job, read and written a line at a time.

Every file is written to a temporary name beside its target and renamed when complete
(`arq.trace.replacing`): several files that belong together are opened in one
`contextlib.ExitStack`, so they are all renamed when the block ends, or all removed if it
raises. Reading tolerates what a crash leaves: a last line cut before its end is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from arq.errors import BatchError
from arq.trace import replacing

__all__ = ["MAX_FILE_BYTES", "MAX_FILE_REQUESTS", "ShardWriter", "concat", "open_new", "read_jsonl"]

MAX_FILE_REQUESTS = 50_000
"""Requests per input file at most: the OpenAI Batch API's limit."""
MAX_FILE_BYTES = 200 * 1024 * 1024
"""Bytes per input file at most: the OpenAI Batch API's limit."""


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """The JSON values of a JSONL file with their line numbers, one at a time.

    Blank lines are skipped, and so is a last line that ends without a line break and does
    not parse: a writer stopped in the middle of it.

    Raises:
        BatchError: the file is missing, or a line that is not the last is not JSON.
    """
    if not os.path.isfile(path):
        raise BatchError(f"{os.fspath(path)}: no such file", path=os.fspath(path))
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                if not line.endswith("\n"):
                    return  # cut mid-line: the writer was stopped here
                raise BatchError(
                    f"{os.fspath(path)}, line {number}: not JSON ({exc})", path=os.fspath(path)
                ) from None
            yield number, value


def open_new(stack: contextlib.ExitStack, path: Path) -> IO[str]:
    """A text file that replaces `path` when `stack` closes (removed if it unwinds with an
    error)."""
    temp = stack.enter_context(replacing(path))
    return stack.enter_context(open(temp, "w", encoding="utf-8"))


class ShardWriter:
    """Writes request lines to `folder/input-000.jsonl`, `input-001.jsonl`, ..., a new
    file when the next line would pass `max_requests` lines or `max_bytes` bytes.

    Args:
        stack: Holds the files until they are all complete.
        folder: Where the files go.
        max_requests: Lines per file at most.
        max_bytes: Bytes per file at most.
    """

    def __init__(
        self,
        stack: contextlib.ExitStack,
        folder: Path,
        *,
        max_requests: int = MAX_FILE_REQUESTS,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.stack = stack
        self.folder = folder
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.names: list[str] = []
        self.lines = 0
        self._out: IO[str] | None = None
        self._count = 0
        self._bytes = 0

    def write(self, line: str) -> None:
        """Add one line (ending with a line break)."""
        size = len(line.encode("utf-8"))
        full = self._count >= self.max_requests or self._bytes + size > self.max_bytes
        if self._out is None or (full and self._count):
            name = f"input-{len(self.names):03d}.jsonl"
            self.names.append(name)
            self._out = open_new(self.stack, self.folder / name)
            self._count = self._bytes = 0
        self._out.write(line)
        self._count += 1
        self._bytes += size
        self.lines += 1

    def remove_stale(self) -> None:
        """Remove input files beyond those written (left by an earlier attempt)."""
        for path in self.folder.glob("input-*.jsonl"):
            if path.name not in self.names:
                path.unlink()


def concat(parts: Iterable[Path], target: Path) -> int:
    """Write the files `parts` (those that exist), one after another, as `target`; the
    bytes written."""
    size = 0
    with replacing(target) as temp, open(temp, "wb") as out:
        for part in parts:
            with contextlib.suppress(FileNotFoundError), open(part, "rb") as source:
                while block := source.read(1 << 20):
                    out.write(block)
                    size += len(block)
    return size
