"""A keyed index on disk (SQLite, from the standard library), so memory stays flat.

An engine writes its results in any order; joining them to a round's items, and telling
duplicates and strangers apart, needs a lookup by `custom_id` that does not hold every
line in memory. The index is a file beside the job's files, removed when closed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from types import TracebackType

__all__ = ["DiskIndex"]


class DiskIndex:
    """Keys with a text value and a rank; `put` keeps a key's value of the highest rank
    (the first of equal ranks).

    Args:
        path: The database file; any earlier one is replaced, and it is removed on close.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode = OFF")  # a scratch file: rebuilt, never repaired
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute(
            "CREATE TABLE entries (key TEXT PRIMARY KEY, rank INTEGER, value TEXT,"
            " used INTEGER DEFAULT 0)"
        )
        self.duplicates = 0

    def __enter__(self) -> DiskIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, key: str) -> bool:
        """Add `key` with no value; False if it was there already."""
        cursor = self.db.execute("INSERT OR IGNORE INTO entries (key) VALUES (?)", (key,))
        return cursor.rowcount == 1

    def put(self, key: str, value: str, rank: int = 0) -> None:
        """Store `value` under `key`, unless the key holds one of the same or a higher rank
        (then it counts as a duplicate)."""
        row = self.db.execute("SELECT rank FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.db.execute(
                "INSERT INTO entries (key, rank, value) VALUES (?, ?, ?)", (key, rank, value)
            )
            return
        self.duplicates += 1
        if rank > row[0]:
            self.db.execute(
                "UPDATE entries SET rank = ?, value = ? WHERE key = ?", (rank, value, key)
            )

    def take(self, key: str) -> str | None:
        """The value under `key` (None if there is none), marking it used."""
        row = self.db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.db.execute("UPDATE entries SET used = 1 WHERE key = ?", (key,))
        value: str = row[0]
        return value

    def unused(self) -> tuple[int, str | None]:
        """How many keys were never taken, and one of them."""
        count, key = self.db.execute(
            "SELECT COUNT(*), MIN(key) FROM entries WHERE used = 0"
        ).fetchone()
        return int(count), key

    def close(self) -> None:
        """Close and remove the file."""
        self.db.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
