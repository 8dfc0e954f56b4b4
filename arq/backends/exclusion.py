"""Keeps a repair off the values its step already had rejected (llama.cpp logits processor).

A repair redoes its first step, and `Request.rejected` lists the JSON texts of that step's
values refused earlier in the run. A small model decoding greedily, or even at a moderate
temperature, tends to write the refused value again; a backend that sees the logits can
steer it off. While the answer's first value is still on a rejected text's path,
`Exclusion` lowers each token that continues the path by `path_penalty` (once, however
many rejected texts share it), so the value tends to leave the path where the model was
least sure of it. A token that would complete a rejected text is pushed far down
(`COMPLETION_PENALTY`); for a string that means completing its content, so a longer
string starting with it ("Smith" -> "Smithson") is kept off too. Both are finite: when
the grammar leaves no other token, the value is written again and the executor's
same-failure rule ends the run, rather than the sampler having nothing to pick. Texts
are compared as bytes, so a character split across tokens is handled.

Numbers have no closing delimiter in their own text, so for them the completion mask is
a little wider than exact: after "9", a rejected 90 also pushes down 900-909.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

__all__ = ["Exclusion", "TokenTable"]

COMPLETION_PENALTY = 1e4
PATH_PENALTY = 2.0
_WHITESPACE = b" \t\n\r"
_AFTER_ALL = b"\xff"  # never in UTF-8: sorts after every text with the same prefix


class TokenTable:
    """Every token's bytes, and the ids sorted by them, for prefix lookups."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self._order = sorted(range(len(self.pieces)), key=self.pieces.__getitem__)
        self._sorted = [self.pieces[i] for i in self._order]

    def starting_with(self, prefix: bytes) -> list[int]:
        """Ids of the tokens whose bytes start with `prefix` (not empty)."""
        low = bisect_left(self._sorted, prefix)
        high = bisect_left(self._sorted, prefix + _AFTER_ALL, lo=low)
        return self._order[low:high]

    def prefixes_of(self, text: bytes) -> list[int]:
        """Ids of the tokens whose bytes are a proper, non-empty prefix of `text`."""
        found = []
        for end in range(1, len(text)):
            i = bisect_left(self._sorted, text[:end])
            while i < len(self._sorted) and self._sorted[i] == text[:end]:
                found.append(self._order[i])
                i += 1
        return found


class Exclusion:
    """A llama.cpp logits processor: the answer's first value is none of `rejected`.

    The answer is everything after the first `start` tokens (the prompt). Its first value
    starts after the first colon (the key before it is a step name, which has none).
    Once the value has left every rejected text's path, the processor does nothing.
    """

    def __init__(
        self,
        table: TokenTable,
        rejected: Sequence[str],
        start: int,
        *,
        path_penalty: float = PATH_PENALTY,
    ) -> None:
        self.table = table
        self.path_penalty = path_penalty
        self.rejected = [_unclosed(text.encode()) for text in rejected]
        self.start = start
        self._text = bytearray()
        self._seen = start
        self.done = not self.rejected

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.done:
            return scores
        for token in input_ids[self._seen :]:
            self._text += self.table.pieces[int(token)]
        self._seen = len(input_ids)
        colon = self._text.find(b":")
        if colon < 0:
            return scores  # still writing the key
        value = bytes(self._text[colon + 1 :]).lstrip(_WHITESPACE)
        live = [text for text in self.rejected if text.startswith(value)]
        if not live:
            self.done = True  # the value has diverged from every rejected text
            return scores
        on_path: set[int] = set()
        completing: set[int] = set()
        for text in live:
            rest = text[len(value) :]
            on_path.update(self.table.prefixes_of(rest))
            completing.update(self.table.starting_with(rest) if rest else range(len(scores)))
            if not value:  # a token may carry the space before the value
                for space in (b" ", b"\n"):
                    completing.update(self.table.starting_with(space + rest))
        # each token lowered once, however many rejected texts share it: a prefix they all
        # share ("20" of a year) is likely right, and stacked penalties would push it away
        scores[list(on_path - completing)] -= self.path_penalty
        scores[list(completing)] -= COMPLETION_PENALTY
        return scores


def _unclosed(text: bytes) -> bytes:
    """A rejected string without its closing quote: its content may not be completed, so
    neither the value nor a longer one starting with it ("Smith" -> "Smithson") is written."""
    if len(text) >= 2 and text.startswith(b'"') and text.endswith(b'"'):
        return text[:-1]
    return text
