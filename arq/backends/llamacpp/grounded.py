"""Holds string steps (and the strings of list steps, and the string fields of the objects a
step holds) to what their context checks allow, while they are written.

`one_of("ids")` and `verbatim_in("record")` are known exactly once the run's context is:
the value is one of the ids, or a quote of the record (`arq.checks.AllowedValues`). A grammar
cannot say so, since it is built from the schema alone, but a logits processor can. While
the answer writes the value of such a step, `Grounded` pushes down every token that would
take the value off them, so a small model can still pick the wrong id or quote the wrong
line, but does not write an id that is not listed or a name the record does not hold
(unless the grammar leaves it no other token).
The check still runs; nothing is accepted because it was steered.

The processor follows the answer's JSON as it is written: the key at the object's top
level, whether a string is a key or a value, and the value's text as the model writes it
(JSON escapes included, compared with the JSON text of the choices and the source). Only
tokens with a quote can open or close a string, and a vocabulary has few of them, so those
are tried one by one; a token without one continues the value and is looked up from the
text that may follow (`TokenTable.prefixes_of`). The penalty is
finite and above the exclusion's: a token the grammar forces is still taken (the value is
then let go), and when the only grounded continuations complete a rejected value, that
value is written again and the executor's same-failure rule ends the run.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from arq.backends.llamacpp.reader import WHITESPACE, JsonReader, json_content
from arq.backends.llamacpp.tokens import TokenTable
from arq.checks import AllowedValues

__all__ = ["PENALTY", "Grounded"]

PENALTY = 1e5
_HELD = ("value", "item")  # the strings held: a step's value, or an item of its list


def _inside_escapes(content: bytes) -> frozenset[int]:
    """Offsets of `content` (JSON string text) inside an escape, where no quote can start:
    the "n" of "\\n" is not a character of the text."""
    inside: set[int] = set()
    i = 0
    while i < len(content):
        if content[i] == 0x5C:  # backslash
            length = 6 if content[i + 1 : i + 2] == b"u" else 2
            inside.update(range(i + 1, min(i + length, len(content))))
            i += length
        else:
            i += 1
    return frozenset(inside)


@functools.lru_cache(maxsize=16)
def _quote_starts(table: TokenTable, source: bytes) -> frozenset[int]:
    """The tokens that may begin a quote of `source`: the same for every value, every
    request and every repair that quotes it, so computed once."""
    inside = _inside_escapes(source)
    found: set[int] = set()
    for rest in {source[at : at + table.longest] for at in range(len(source)) if at not in inside}:
        found.update(table.prefixes_of(rest, proper=False))
    return frozenset(found)


class _Choices:
    """The value is one of `choices`."""

    def __init__(self, table: TokenTable, choices: tuple[str, ...]) -> None:
        self.table = table
        self.contents = [json_content(choice) for choice in choices]
        self._exact = set(self.contents)

    def open_ok(self, content: bytes) -> bool:
        return any(choice.startswith(content) for choice in self.contents)

    def closed_ok(self, content: bytes) -> bool:
        return content in self._exact

    def continuing(self, content: bytes) -> set[int]:
        """Tokens (without a quote) that keep `content` on the way to a choice."""
        found: set[int] = set()
        for choice in self.contents:
            if choice.startswith(content) and len(choice) > len(content):
                found.update(self.table.prefixes_of(choice[len(content) :], proper=False))
        return found


class _Quote:
    """The value is a quote of `source` with more than whitespace in it."""

    def __init__(self, table: TokenTable, source: str) -> None:
        self.table = table
        self.source = json_content(source)
        self._inside = _inside_escapes(self.source)

    def _places(self, content: bytes) -> list[int]:
        """Where in the source a quote that begins with `content` can begin."""
        found = []
        at = self.source.find(content)
        while at >= 0:
            if at not in self._inside:
                found.append(at)
            at = self.source.find(content, at + 1)
        return found

    def open_ok(self, content: bytes) -> bool:
        return not content or bool(self._places(content))

    def closed_ok(self, content: bytes) -> bool:
        return bool(content.strip(WHITESPACE)) and bool(self._places(content))

    def continuing(self, content: bytes) -> set[int]:
        """Tokens (without a quote) that keep `content` a quote of the source."""
        if not content:
            return set(_quote_starts(self.table, self.source))
        reach, found = self.table.longest, set()
        for rest in {self.source[at + len(content) :][:reach] for at in self._places(content)}:
            found.update(self.table.prefixes_of(rest, proper=False))
        return found


class _Fields:
    """The object a step holds (or each object of its list): some of its fields held."""

    def __init__(self, spaces: dict[bytes, _Choices | _Quote]) -> None:
        self.spaces = spaces


def _string_space(table: TokenTable, held: AllowedValues) -> _Choices | _Quote:
    if held.choices is not None:
        return _Choices(table, held.choices)
    return _Quote(table, held.quoted_text or "")


def _space(table: TokenTable, held: AllowedValues) -> _Choices | _Quote | _Fields:
    if held.fields is None:
        return _string_space(table, held)
    return _Fields({json_content(name): _string_space(table, g) for name, g in held.fields})


class Grounded:
    """A llama.cpp logits processor: grounded steps' values stay within their `AllowedValues`.

    `allowed` maps step names to what their values may be; the answer is everything after
    the first `start` tokens (the prompt). With `inside_object` the answer continues an
    object the prompt's prefill opened.
    """

    def __init__(
        self,
        table: TokenTable,
        allowed: Mapping[str, AllowedValues],
        start: int,
        *,
        inside_object: bool = False,
    ) -> None:
        self.table = table
        self.spaces = {json_content(step): _space(table, held) for step, held in allowed.items()}
        self.reader = JsonReader(depth=1 if inside_object else 0)
        self._seen = start
        self._quotes = set(table.with_quote)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for token in input_ids[self._seen :]:
            self.reader.feed(self.table.pieces[int(token)])
        self._seen = len(input_ids)
        reader = self.reader
        space = self._held(reader) if reader.in_string else None
        if space is not None:
            content = bytes(reader.content)
            if not space.open_ok(content):
                return scores  # off already (the grammar forced it): nothing left to hold
            allowed = space.continuing(content) - self._quotes
            allowed.update(t for t in self.table.with_quote if self._grounded_after(t))
            ids = sorted(allowed)
            keep = scores[ids].copy()
            scores -= PENALTY
            scores[ids] = keep
        elif self._near_value():  # only a token with a quote can open the value
            off = [t for t in self.table.with_quote if not self._grounded_after(t)]
            scores[off] -= PENALTY
        return scores

    def _held(self, reader: JsonReader) -> _Choices | _Quote | None:
        """What the string `reader` is in is held to, if anything."""
        space = self.spaces.get(reader.key)
        if isinstance(space, _Fields):
            return space.spaces.get(reader.field) if reader.role == "field" else None
        return space if reader.role in _HELD else None

    def _near_value(self) -> bool:
        """A grounded string is due, or the key before one is being written: a quote token
        may reach it."""
        reader = self.reader
        space = self.spaces.get(reader.key)
        if isinstance(space, _Fields):
            if not reader.in_string:
                return reader.field_awaiting and reader.field in space.spaces
            return reader.role == "field_key" and _leads_to(reader.content, space.spaces)
        if not reader.in_string:
            return (reader.awaiting or reader.in_list) and space is not None
        return reader.role == "key" and _leads_to(reader.content, self.spaces)

    def _grounded_after(self, token: int) -> bool:
        """Whether the answer stays grounded if `token` comes next."""
        before = self.reader
        after = copy.copy(before)
        after.content = bytearray(before.content)
        for byte in self.table.pieces[token]:
            space = self._held(after) if after.in_string else None
            after.feed(bytes([byte]))
            if space is None or after.in_string:
                continue
            if not space.closed_ok(bytes(after.content)):  # the value closed here
                return False
        space = self._held(after) if after.in_string else None
        return space is None or space.open_ok(bytes(after.content))


def _leads_to(written: bytearray, keys: Mapping[bytes, Any]) -> bool:
    """Whether a key begun as `written` may still become one of `keys`."""
    return any(key.startswith(bytes(written)) for key in keys)
