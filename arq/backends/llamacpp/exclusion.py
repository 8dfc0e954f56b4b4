"""Keeps a repair off the values its step already had rejected (llama.cpp logits processor).

A repair redoes its first step, and `Request.rejected` lists the JSON texts of that step's
values refused earlier in the run, as the model wrote them (`arq.repair` decides which;
this processor only enforces the list). A small model decoding
greedily, or even at a moderate temperature, tends to write the refused value again; a
backend that sees the logits can steer it off. While the answer's first value is still on
a rejected text's path, `Exclusion` lowers each token that continues the path by
`path_penalty` (once, however many rejected texts share it), so the value tends to leave
the path where the model was least sure of it. A token that would complete a rejected
text is pushed far down (`COMPLETION_PENALTY`): for a string, the one writing its closing
quote; for a number, the one ending it there. A longer value that starts with a rejected
one stays open ("R-773" rejected, "R-7731" allowed). Both penalties are finite: when the
grammar leaves no other token (a fixed-length pattern whose closing quote is forced), the
value is written again and the executor's same-failure rule ends the run, rather than the
sampler having nothing to pick. Texts are compared as bytes, so a character split across
tokens is handled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arq.backends.llamacpp.reader import WHITESPACE
from arq.backends.llamacpp.tokens import NUMBER_BYTES, TokenTable

__all__ = ["Exclusion"]

COMPLETION_PENALTY = 1e4
PATH_PENALTY = 2.0


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
        value = bytes(self._text[colon + 1 :]).lstrip(WHITESPACE)
        live = [text for text in self.rejected if text.startswith(value)]
        if not live:
            self.done = True  # the value has diverged from every rejected text
            return scores
        on_path: set[int] = set()
        completing: set[int] = set()
        for text in live:
            rest = text[len(value) :]
            on_path.update(self.table.prefixes_of(rest))
            string = text.startswith(b'"')
            if not string:  # reaching a rejected number is still on its path: it may go on
                on_path.update(
                    t for t in self.table.starting_with(rest) if self.table.pieces[t] == rest
                )
            completing.update(self._completing(rest, string))
            if not value:  # a token may carry the space before the value
                for space in (b" ", b"\n"):
                    completing.update(self._completing(space + rest, string))
        # each token lowered once, however many rejected texts share it: a prefix they all
        # share ("20" of a year) is likely right, and stacked penalties would push it away
        scores[list(on_path - completing)] -= self.path_penalty
        scores[list(completing)] -= COMPLETION_PENALTY
        return scores

    def _completing(self, rest: bytes, string: bool) -> list[int]:
        """Tokens that would end the value with exactly the rejected text."""
        if not rest:  # written out: a number may still not end; a string has ended
            return [] if string else self.table.ending_a_number()
        if string:  # the rest ends with the closing quote
            return self.table.starting_with(rest)
        after = len(rest)  # a token that is the rest exactly leaves the number open
        return [
            token
            for token in self.table.starting_with(rest)
            if self.table.pieces[token][after : after + 1] not in NUMBER_BYTES | {b""}
        ]
