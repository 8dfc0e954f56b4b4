"""What a string step's JSON Schema allows (`pattern`, `minLength`, `maxLength`), for grounding.

A grounded step (`arq.one_of`, `arq.date_in`, `arq.verbatim_in`) is held to its context's
values while the model writes it; the step's type may allow fewer of them. `StringShape`
drops the choices the step's type refuses, and lists the quotes of a source that fit it
when they are few enough to find, so that a repair can narrow them like any choices; a
source whose quotes are too many is kept whole, and the embedded model's grammar holds a
quote of it to the step's pattern and lengths itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic_core import SchemaError, SchemaValidator, core_schema

__all__ = ["MAX_QUOTES", "StringShape", "cuts_word"]

MAX_QUOTES = 256  # more fitting quotes than this: the source is kept as a whole
MAX_TRIES = 60_000  # (start, length) pairs tried at most; past it, the source is kept
MAX_CACHED = 10_000  # characters of a source whose quotes are cached


class StringShape:
    """The JSON Schema constraints of a string, checked by pydantic-core as a model's
    `pattern` and lengths are by default (its regex engine: `pattern` is a search,
    matching anywhere unless anchored, and `$` is the very end; lengths count characters).
    """

    def __init__(self, pattern: str | None, min_length: int = 0, max_length: int | None = None):
        self.pattern = pattern
        self.min_length = min_length
        self.max_length = max_length
        self._validator = SchemaValidator(
            core_schema.str_schema(pattern=pattern, min_length=min_length, max_length=max_length)
        )

    @classmethod
    def of(cls, schema: Mapping[str, Any] | None) -> StringShape | None:
        """The shape a property's JSON Schema gives, or None when it constrains nothing
        (no pattern or lengths) or its pattern does not compile."""
        if not schema:
            return None
        pattern = schema.get("pattern")
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if pattern is None and not low and high is None:
            return None
        return _shape(pattern, int(low), None if high is None else int(high))

    def fits(self, value: str) -> bool:
        return self._validator.isinstance_python(value)

    def choices(self, values: Iterable[str]) -> list[str]:
        return [value for value in values if self.fits(value)]

    def quotes(self, text: str, *, whole_words: bool = False) -> tuple[str, ...] | None:
        """Every distinct quote of `text` that fits, in order of first appearance; None
        when they are too many to list or too costly to find. Blank quotes are left out,
        and so is a quote padded with whitespace when the quote without it fits. With
        `whole_words`, only quotes that start and end at a word boundary (no letter, digit
        or underscore on both sides)."""
        low, high = self._widths(len(text))
        if (len(text) + 1) * max(high - low + 1, 0) > MAX_TRIES:
            return None
        if len(text) > MAX_CACHED:  # not worth keeping alive in the cache
            return _find_quotes(self, text, low, high, whole_words)
        return _cached_quotes(self.pattern, self.min_length, self.max_length, text, whole_words)

    def _widths(self, longest: int) -> tuple[int, int]:
        """The lengths a fitting value can have, within `longest`: its length bounds (a
        constrained decoder holds a quote to a pattern itself, so a source whose quotes are
        too many to try is kept whole)."""
        high = longest if self.max_length is None else min(self.max_length, longest)
        return self.min_length, high


def _find_quotes(
    shape: StringShape, text: str, low: int, high: int, whole_words: bool
) -> tuple[str, ...] | None:
    found: dict[str, None] = {}
    edge = [not (whole_words and cuts_word(text, at)) for at in range(len(text) + 1)]
    for start in range(len(text)):
        if not edge[start]:
            continue
        for end in range(start + max(low, 1), min(start + high, len(text)) + 1):
            if not edge[end]:
                continue
            quote = text[start:end]
            if quote in found or not shape.fits(quote):
                continue
            bare = quote.strip()
            if not bare or (bare != quote and shape.fits(bare)):
                continue  # blank, or the same quote padded: the bare one is listed
            found[quote] = None
            if len(found) > MAX_QUOTES:
                return None
    return tuple(found)


def cuts_word(text: str, at: int) -> bool:
    """Whether a quote starting or ending at `at` would cut a word of `text`."""
    return 0 < at < len(text) and _word(text[at - 1]) and _word(text[at])


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


@functools.lru_cache(maxsize=64)
def _cached_quotes(
    pattern: str | None, low: int, high: int | None, text: str, whole_words: bool
) -> tuple[str, ...] | None:
    """Cached: every run of a schema over the same source asks again."""
    shape = _shape(pattern, low, high)
    assert shape is not None  # built from a shape that exists
    return _find_quotes(shape, text, *shape._widths(len(text)), whole_words)


@functools.lru_cache(maxsize=256)
def _shape(pattern: str | None, low: int, high: int | None) -> StringShape | None:
    try:
        return StringShape(pattern, low, high)
    except (SchemaError, TypeError, ValueError):
        return None  # the step's own validation reports a bad pattern
