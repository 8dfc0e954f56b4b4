"""The context lines a failing step needs, quoted again in its repair turn.

A step that failed a check often failed because the model looked at the wrong part of the
input: the date of another line, the name of another role. The repair turn re-states the
step's question and the check's message; quoting the lines of the context that share the
most words with them puts what the step needs next to where the model writes it again
(the ARQ idea of re-stating what matters just in time, applied to the input).

Lines are scored by the words they share with the query, each word weighted by how rare
it is among the lines (inverse document frequency), so "on" or "the" count for little and
a label such as "Returned" for much. Words of the refused value are left out of the
query: they would point back at the line the wrong value came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from arq.context import context_text

__all__ = ["evidence"]

_WORD = re.compile(r"[^\W_]+")
MAX_LINE = 200  # characters quoted of one line


def _words(text: str) -> set[str]:
    """The words of `text`, lowercased; a lone letter (the "s" of "record's", the "S" of
    an id like "S-769") says nothing about which line is meant, a lone digit may."""
    return {word.lower() for word in _WORD.findall(text) if len(word) > 1 or word.isdigit()}


def _lines(context: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for value in context.values():
        found.extend(line.strip() for line in context_text(value).splitlines())
    return list(dict.fromkeys(line for line in found if line))


def evidence(
    context: Mapping[str, Any] | None,
    query: str,
    *,
    leave_out: Iterable[str] = (),
    limit: int = 2,
) -> list[str]:
    """Up to `limit` lines of `context` that share the most (rare) words with `query`.

    Words of `leave_out` (the refused value) do not count. A line is kept only if it scores
    at least half the best line's score; lines come in context order, each cut to
    `MAX_LINE` characters.
    """
    if not context or limit < 1:
        return []
    lines = _lines(context)
    wanted = _words(query) - set().union(*(_words(text) for text in leave_out))
    if not lines or not wanted:
        return []
    words = [_words(line) for line in lines]
    counts: dict[str, int] = {}
    for found in words:
        for word in found & wanted:
            counts[word] = counts.get(word, 0) + 1
    weight = {word: math.log((len(lines) + 1) / count) for word, count in counts.items()}
    scores = [sum(weight[word] for word in found & wanted) for found in words]
    best = max(scores)
    if best <= 0:
        return []
    ranked = sorted(range(len(lines)), key=lambda i: -scores[i])
    chosen = sorted(i for i in ranked[:limit] if scores[i] >= best / 2)
    return [_cut(lines[i]) for i in chosen]


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
