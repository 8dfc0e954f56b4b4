"""Keeps a repair off the values its step already had rejected (llama.cpp logits processor).

A repair redoes its first step, and `Request.rejected` lists the JSON texts of that step's
values refused earlier in the run. A small model decoding greedily, or even at a moderate
temperature, tends to write the refused value again; a backend that sees the logits can
steer it off. While the answer's first value is still on a rejected text's path,
`Exclusion` lowers the logit of each token that continues that path by `path_penalty`,
so the value leaves the path where the model was least sure of it, and pushes the token
that would complete the text far down (`COMPLETION_PENALTY`). Both are finite: when the
grammar leaves no other token (a fixed-length pattern whose last character is forced),
the value is written again and the executor's same-failure rule ends the run, rather
than the sampler having nothing to pick. Texts are compared as bytes, so a character
split across tokens is handled.

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
        self.rejected = [text.encode() for text in rejected]
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
        raw = bytes(self._text[colon + 1 :])
        value = raw.lstrip(_WHITESPACE)
        live = [text for text in self.rejected if text.startswith(value)]
        if not live:
            self.done = True  # the value has diverged from every rejected text
            return scores
        for text in live:
            rest = text[len(value) :]
            completing = self.table.starting_with(rest)
            if not value:  # a token may carry the space before the value
                for space in (b" ", b"\n"):
                    completing += self.table.starting_with(space + rest)
            scores[self.table.prefixes_of(rest)] -= self.path_penalty
            scores[completing] -= COMPLETION_PENALTY
        return scores
