"""The model's tokens as bytes, sorted for prefix lookups, for the logits processors."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["NUMBER_BYTES", "TokenTable"]

NUMBER_BYTES = {bytes([c]) for c in b"0123456789.eE+-"}  # what may continue a JSON number
_AFTER_ALL = b"\xff"  # never in UTF-8: sorts after every text with the same prefix


class TokenTable:
    """Every token's bytes, and the ids sorted by them, for prefix lookups."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self._order = sorted(range(len(self.pieces)), key=self.pieces.__getitem__)
        self._sorted = [self.pieces[i] for i in self._order]
        self._enders: list[int] | None = None
        self.longest = max((len(piece) for piece in self.pieces), default=0)
        self.with_quote = [i for i, piece in enumerate(self.pieces) if b'"' in piece]

    def starting_with(self, prefix: bytes) -> list[int]:
        """Ids of the tokens whose bytes start with `prefix` (not empty)."""
        low = bisect_left(self._sorted, prefix)
        high = bisect_left(self._sorted, prefix + _AFTER_ALL, lo=low)
        return self._order[low:high]

    def ending_a_number(self) -> list[int]:
        """Ids of the tokens whose first byte cannot continue a JSON number."""
        if self._enders is None:
            self._enders = [i for i, p in enumerate(self.pieces) if p and p[:1] not in NUMBER_BYTES]
        return self._enders

    def prefixes_of(self, text: bytes, *, proper: bool = True) -> list[int]:
        """Ids of the tokens whose bytes are a non-empty prefix of `text` (a proper one
        unless `proper` is False)."""
        found = []
        for end in range(1, len(text) + (not proper)):
            prefix = text[:end]
            i = bisect_left(self._sorted, prefix)
            while i < len(self._sorted) and self._sorted[i] == prefix:
                found.append(self._order[i])
                i += 1
            if i == len(self._sorted) or not self._sorted[i].startswith(prefix):
                break  # no token starts with this prefix: none is a longer prefix of text
        return found
