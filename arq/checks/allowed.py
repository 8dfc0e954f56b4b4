"""Grounding: what a step's context checks allow, as data a backend can enforce while decoding.

`allowed_values()` reads the `ContextRule` each context check marks on its validator
(`one_of`, `date_in`, `verbatim_in`) and, once the run's context is known, gives each held
step its `AllowedValues`: the choices it may take, or the source it must quote. A backend
that sees the logits holds the value to them while it is written; the check still runs.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from arq.checks.context import ContextRule, as_text, collapse_spaces, quoted, rule_of
from arq.checks.dates import dates_in
from arq.checks.shape import StringShape
from arq.errors import InvalidArgumentError

__all__ = ["AllowedValues", "allowed_values"]

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class AllowedValues:
    """The values a string step's context checks allow, known once the context is.

    Exactly one of three is set: `choices`, the value is one of them (`one_of`,
    `date_in`, or the quotes of a source that fit the step's shape); `source`, the
    value is quoted from it (`verbatim_in`; with `normalize_whitespace` its whitespace
    runs are written as one space, as the check compares them; `whole_words` is the
    check's, which the backend does not enforce on a source); or `fields`, for a step
    that holds an object (or a list of them, with `items`): the `AllowedValues` of each of
    its string fields held so. A backend that sees the logits (`LlamaCppBackend`) holds
    the value to them while it is written, so a small model cannot invent a name or an
    id; the check still runs either way.
    """

    choices: tuple[str, ...] | None = None
    source: str | None = None
    normalize_whitespace: bool = True
    whole_words: bool = False
    dates: bool = False  # the choices are ISO dates read from the context (`date_in`)
    items: bool = False  # the step is a list, and each of its strings is held
    fields: tuple[tuple[str, AllowedValues], ...] | None = None

    def __post_init__(self) -> None:
        if sum(part is not None for part in (self.choices, self.source, self.fields)) != 1:
            raise InvalidArgumentError(
                "an AllowedValues has choices, a source or fields: exactly one"
            )

    def without(self, refused: Iterable[Any]) -> AllowedValues | None:
        """These choices less the `refused` values; None if none is left. A source is kept
        as it is: its quotes were too many to list, and the backend steers off refused ones."""
        if self.choices is None:
            return self  # a source, or an object's fields: refused values are not theirs
        gone = {str(value) for value in refused}
        left = tuple(choice for choice in self.choices if choice not in gone)
        return replace(self, choices=left) if left else None

    def mentioned_in(self, lines: Sequence[str]) -> AllowedValues:
        """What a repair holds its step to, given the lines its evidence quotes: these
        choices less those `lines` do not mention, if they mention any (a value quoted
        whole-word, or for dates a date the lines write in any form); a source cut down to
        those of `lines` it holds, if it holds any (a quote of them is a quote of it);
        otherwise, and for a list or an object's fields, unchanged (a list may need values
        the lines do not mention)."""
        if self.items or self.fields is not None or not lines:
            return self
        if self.source is not None:
            found = [line for line in lines if line.strip() and line in self.source]
            return replace(self, source="\n".join(found)) if found else self
        assert self.choices is not None
        text = "\n".join(lines)
        if self.dates:
            written = set(dates_in(text))
            kept = tuple(choice for choice in self.choices if choice in written)
        else:
            kept = tuple(
                c for c in self.choices if quoted(collapse_spaces(c), text, whole_words=True)
            )
        return replace(self, choices=kept) if kept else self

    @property
    def quoted_text(self) -> str | None:
        """The source as a quote of it may be written: whitespace runs as one space."""
        if self.source is None:
            return None
        return _quotable(self.source, self.normalize_whitespace)


def _quotable(source: str, normalize_whitespace: bool) -> str:
    return _SPACES.sub(" ", source) if normalize_whitespace else source


def allowed_values(
    fields: Mapping[str, FieldInfo],
    context: Mapping[str, Any] | None,
    properties: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, AllowedValues]:
    """The `AllowedValues` of each field of type `str`, `str | None` or `list[str]` held by
    `one_of`, `date_in` or `verbatim_in` (for a list, each of its strings), and of each
    field of type `Model` or `list[Model]` whose model has such fields (one level deep).

    Fields whose check reads a key the context lacks are left out (validation reports the
    missing key), and so are fields no value could pass (no choices). A field with both
    checks is held to its choices that are quoted from the source. With the fields' JSON
    Schema `properties`, a field's `pattern` and lengths narrow it further: choices that
    do not fit are dropped, and a source becomes the list of its quotes that fit, when
    they are few enough to list (`arq.checks.shape`).
    """
    found: dict[str, AllowedValues] = {}
    if not context:
        return found
    for name, info in fields.items():
        allowed = _field_allowed(info, context, (properties or {}).get(name))
        if allowed is not None:
            found[name] = allowed
    return found


def _field_allowed(
    info: FieldInfo, context: Mapping[str, Any], schema: Mapping[str, Any] | None
) -> AllowedValues | None:
    """One field's `AllowedValues` (`schema` is its JSON Schema property, if known)."""
    items = get_origin(info.annotation) is list
    model = _model_of(info.annotation)
    if model is not None:  # one level deep: the model's string fields (a model may recur)
        inner = ((key, _string_allowed(f, context, None)) for key, f in model.model_fields.items())
        nested = tuple((key, g) for key, g in inner if g is not None)
        return AllowedValues(fields=nested, items=items) if nested else None
    return _string_allowed(info, context, schema)


def _string_allowed(
    info: FieldInfo, context: Mapping[str, Any], schema: Mapping[str, Any] | None
) -> AllowedValues | None:
    """A string field's `AllowedValues`, or a list of strings'; None for other types."""
    items = get_origin(info.annotation) is list
    metadata = _string_metadata(info)
    if metadata is None:
        return None  # other types and unions: only the check holds them
    rules = [rule for rule in map(rule_of, metadata) if rule is not None and rule.key in context]
    offered = [rule.choices(context[rule.key]) for rule in rules if rule.choices is not None]
    dates = any(rule.dates for rule in rules if rule.choices is not None)
    quote = next((rule for rule in rules if rule.choices is None), None)
    shape = StringShape.of(_string_schema(schema.get("items") if items and schema else schema))
    if offered:
        choices = _held_to_choices(offered, quote, context, shape)
        return _listed(choices, dates=dates, items=items)
    if quote is not None:
        return _held_to_source(quote, context, shape, items)
    return None


def _held_to_choices(
    offered: Sequence[list[str]],
    quote: ContextRule | None,
    context: Mapping[str, Any],
    shape: StringShape | None,
) -> list[str]:
    """The choices every list in `offered` has that `quote` (if any) and `shape` pass."""
    choices = offered[0]
    for allowed in offered[1:]:
        choices = [c for c in choices if c in allowed]
    if quote is not None:
        source = as_text(context[quote.key])
        text = collapse_spaces(source) if quote.normalize_whitespace else source
        choices = [c for c in choices if quote.admits_quote(c, text)]
    if shape is not None:
        choices = shape.choices(choices)
    return choices


def _held_to_source(
    quote: ContextRule, context: Mapping[str, Any], shape: StringShape | None, items: bool
) -> AllowedValues | None:
    """A quote of the source, or the few quotes of it that fit `shape`."""
    source = as_text(context[quote.key])
    if shape is not None:
        text = _quotable(source, quote.normalize_whitespace)
        listed = shape.quotes(text, whole_words=quote.whole_words)
        if listed is not None:  # None: too many to list, the source is kept
            return _listed(listed, dates=False, items=items)
    return AllowedValues(
        source=source,
        normalize_whitespace=quote.normalize_whitespace,
        whole_words=quote.whole_words,
        items=items,
    )


def _listed(choices: Sequence[str], *, dates: bool, items: bool) -> AllowedValues | None:
    """The choices, each once; None when none is left: no value can pass, the check says why."""
    if not choices:
        return None
    return AllowedValues(choices=tuple(dict.fromkeys(choices)), dates=dates, items=items)


def _string_metadata(info: FieldInfo) -> list[Any] | None:
    """The metadata of a `str` field, of a `str | None` field's string (null is not
    grounded: a logits processor only holds strings) or of a `list[str]` field's items;
    None for any other type."""
    if info.annotation is str:
        return list(info.metadata)
    origin = get_origin(info.annotation)
    if origin is list:
        options = list(get_args(info.annotation))
    elif origin in (Union, types.UnionType):
        options = [arg for arg in get_args(info.annotation) if arg is not type(None)]
    else:
        return None
    if len(options) != 1:
        return None
    (inner,) = options
    if inner is str:
        return list(info.metadata)
    if get_origin(inner) is Annotated and get_args(inner)[0] is str:
        return [*get_args(inner)[1:], *info.metadata]
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field of type `Model` or `list[Model]` holds, else None."""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation) or (None,)
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _string_schema(schema: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A property's JSON Schema, or the string branch of its `anyOf` with null."""
    for branch in (schema or {}).get("anyOf", ()):
        if isinstance(branch, Mapping) and branch.get("type") == "string":
            return branch
    return schema
