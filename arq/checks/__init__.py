"""Checks that hold steps to the run's context, and cross-step checks.

Two kinds, both one line to write:

* field checks, as `Annotated` metadata, run when their step completes and read the run's
  context (the mapping passed to `build`/`run`) through Pydantic's validation context::

      order_id: Annotated[str, arq.verbatim_in("conversation")] = arq.query("Which order?")

* cross-step checks, declared on the schema with `@arq.check(...)`, run as soon as every
  step they read is complete::

      @arq.check("applicable", "checks")
      def every_applicable_checked(applicable: list[str], checks: list[Check]) -> None:
          ...  # raise ValueError("...") to reject

A failed check becomes a precise repair turn, so the message should say what is wrong in
terms the model can act on.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, ParamSpec, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ValidationInfo
from pydantic.fields import FieldInfo

from arq.checks.dates import dates_in
from arq.checks.shape import StringShape, cuts_word
from arq.errors import ContextError

__all__ = [
    "CrossCheck",
    "AllowedValues",
    "check",
    "covers",
    "date_in",
    "allowed_values",
    "one_of",
    "quoted",
    "verbatim_in",
]

P = ParamSpec("P")
R = TypeVar("R")

_CHECK_ATTR = "__arq_check__"
_GROUNDING_ATTR = "__arq_grounding__"


@dataclass(frozen=True)
class _Held:
    """What a context check allows, marked on its validator for `allowed_values()`: one of the
    choices `choices(context[key])` (`one_of`, `date_in`), or a quote of `context[key]`
    (`verbatim_in`)."""

    key: str
    choices: Callable[[Any], list[str]] | None = None
    normalize_whitespace: bool = True
    whole_words: bool = False
    dates: bool = False  # the choices are ISO dates (`date_in`)


@dataclass(frozen=True)
class CrossCheck:
    """A check over several steps; `repair` is the step to redo when it fails."""

    name: str
    steps: tuple[str, ...]
    repair: str | None
    function: Callable[..., object]
    wants_context: bool

    def run(self, values: Mapping[str, Any], context: Mapping[str, Any] | None) -> None:
        """Call the check with the step values it reads (and the context, if it asks)."""
        kwargs = {name: values[name] for name in self.steps}
        if self.wants_context:
            kwargs["context"] = context if context is not None else {}
        self.function(**kwargs)


def check(*steps: str, repair: str | None = None) -> Callable[[Callable[P, R]], staticmethod[P, R]]:
    """Declare a cross-step check inside a `Reasoning` class body.

    The function takes the named steps as keyword arguments (and `context`, if it declares
    a parameter of that name) and raises `ValueError` or `AssertionError` to reject. It
    runs as soon as every named step is complete. When it fails, the step named by
    `repair` is repaired, by default the latest step it reads.
    """

    def decorate(function: Callable[P, R]) -> staticmethod[P, R]:
        parameters = inspect.signature(function).parameters
        spec = CrossCheck(
            name=function.__name__,
            steps=tuple(steps),
            repair=repair,
            function=function,
            wants_context="context" in parameters,
        )
        setattr(function, _CHECK_ATTR, spec)
        return staticmethod(function)

    return decorate


def declared_checks(namespace: Mapping[str, Any]) -> list[CrossCheck]:
    """The cross-step checks found in one class namespace, in definition order."""
    found = []
    for value in namespace.values():
        function = value.__func__ if isinstance(value, staticmethod) else value
        spec = getattr(function, _CHECK_ATTR, None)
        if isinstance(spec, CrossCheck):
            found.append(spec)
    return found


# --- grounding helpers -------------------------------------------------------------------

_SPACES = re.compile(r"\s+")
_SHOWN_DATES = 12  # dates listed in a failed date_in's message


def _context_value(info: ValidationInfo, key: str, helper: str) -> Any:
    context = info.context
    if not isinstance(context, Mapping) or key not in context:
        raise ContextError(
            f"{helper}({key!r}) needs the run's context to have a {key!r} value; "
            f"pass context={{{key!r}: ...}} to build/run"
        )
    return context[key]


def _as_text(value: Any) -> str:
    """Flatten a context value (text, messages, lists, mappings) into searchable text."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if "content" in value:
            return _as_text(value["content"])
        return "\n".join(_as_text(v) for v in value.values())
    if isinstance(value, Iterable):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def _as_choices(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, Iterable):
        return [_choice_id(v) for v in value]
    return [str(value)]


def _choice_id(value: Any) -> str:
    if isinstance(value, Mapping) and "id" in value:
        return str(value["id"])
    return str(getattr(value, "id", value))


def _normal(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def verbatim_in(
    key: str, *, normalize_whitespace: bool = True, whole_words: bool = False
) -> AfterValidator:
    """The value (a string, or each string of a list) must be quoted from `context[key]`.

    Whitespace runs are compared as one space unless `normalize_whitespace=False`. With
    `whole_words` the quote must not cut a word: it starts and ends where the source has
    no letter, digit or underscore on both sides ("Lea Holm", not "Lea Hol").
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        haystack = _as_text(_context_value(info, key, "verbatim_in"))
        quotes = value if isinstance(value, list | tuple) else [value]
        if normalize_whitespace:
            haystack = _normal(haystack)
        for quote in quotes:
            needle = _normal(str(quote)) if normalize_whitespace else str(quote)
            if not quoted(needle, haystack, whole_words=whole_words):
                words = " (whole words)" if whole_words else ""
                raise ValueError(
                    f"{str(quote)!r} is not quoted word for word from the {key}{words}"
                )
        return value

    held = _Held(key, normalize_whitespace=normalize_whitespace, whole_words=whole_words)
    setattr(validate, _GROUNDING_ATTR, held)
    return AfterValidator(validate)


def quoted(needle: str, haystack: str, *, whole_words: bool = False) -> bool:
    """Whether `needle` (not empty) appears in `haystack`; with `whole_words`, somewhere it
    starts and ends at a word boundary."""
    if not needle:
        return False
    at = haystack.find(needle)
    while at >= 0 and whole_words:
        if not cuts_word(haystack, at) and not cuts_word(haystack, at + len(needle)):
            return True
        at = haystack.find(needle, at + 1)
    return at >= 0


def one_of(key: str) -> AfterValidator:
    """The value (or each item of a list) must be one of `context[key]`.

    A context list of mappings or objects with an `id` is matched on the ids.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        choices = _as_choices(_context_value(info, key, "one_of"))
        picked = value if isinstance(value, list | tuple) else [value]
        for item in picked:
            if str(item) not in choices:
                raise ValueError(f"{item!r} is not one of the {key}: {', '.join(choices)}")
        return value

    setattr(validate, _GROUNDING_ATTR, _Held(key, choices=_as_choices))
    return AfterValidator(validate)


def date_in(key: str, *, day_first: bool | None = None) -> AfterValidator:
    """The value must be a date written in `context[key]`, given in ISO form (YYYY-MM-DD).

    The context may write it in any common form (2021/03/04, 4 March 2021, ...; see
    `arq.checks.dates`). A numeric date with the year last (04/03/2021) reads as day first when
    `day_first`, month first when False, and either way when None. A `date` value is
    compared in ISO form too.
    """

    def written(value: Any) -> list[str]:
        return dates_in(_as_text(value), day_first=day_first)

    def validate(value: Any, info: ValidationInfo) -> Any:
        dates = written(_context_value(info, key, "date_in"))
        if str(value) not in dates:
            shown = ", ".join(dates[:_SHOWN_DATES]) + (", ..." if len(dates) > _SHOWN_DATES else "")
            raise ValueError(
                f"{str(value)!r} is not a date written in the {key}, as YYYY-MM-DD"
                + (f" (its dates: {shown})" if dates else " (it gives no date)")
            )
        return value

    setattr(validate, _GROUNDING_ATTR, _Held(key, choices=written, dates=True))
    return AfterValidator(validate)


def covers(key: str, *, id_field: str = "id") -> AfterValidator:
    """The list must name every id of `context[key]` exactly once, and no other id.

    Items may be ids or objects with an `id_field` attribute.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        expected = _as_choices(_context_value(info, key, "covers"))
        got = [_item_id(item, id_field) for item in value]
        problem = coverage_problem(expected, got)
        if problem:
            raise ValueError(f"{problem} (the {key})")
        return value

    return AfterValidator(validate)


def _item_id(item: Any, id_field: str) -> str:
    if isinstance(item, Mapping):
        return str(item.get(id_field))
    return str(getattr(item, id_field, item))


def coverage_problem(expected: Sequence[str], got: Sequence[str]) -> str | None:
    """Describe how `got` fails to name each of `expected` exactly once, or None."""
    seen: dict[str, int] = {}
    for item in got:
        seen[item] = seen.get(item, 0) + 1
    missing = [e for e in expected if e not in seen]
    repeated = [g for g, n in seen.items() if n > 1]
    unknown = [g for g in seen if g not in set(expected)]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if repeated:
        parts.append("repeated " + ", ".join(repeated))
    if unknown:
        parts.append("unknown " + ", ".join(unknown))
    if not parts:
        return None
    return "every id must appear exactly once: " + "; ".join(parts)


# --- grounding: what a step's context checks allow, for backends that steer decoding -----


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
            raise ValueError("a AllowedValues has choices, a source or fields: exactly one")

    def without(self, refused: Iterable[Any]) -> AllowedValues | None:
        """These choices less the `refused` values; None if none is left. A source is kept
        as it is: its quotes were too many to list, and the backend steers off refused ones."""
        if self.choices is None:
            return self  # a source, or an object's fields: refused values are not theirs
        gone = {str(value) for value in refused}
        left = tuple(choice for choice in self.choices if choice not in gone)
        return replace(self, choices=left) if left else None

    def mentioned_in(self, lines: Sequence[str]) -> AllowedValues:
        """These choices less those `lines` do not mention, if they mention any (a value
        quoted whole-word, or for dates a date the lines write in any form); otherwise, and
        for a source or a list, unchanged (a list may need choices the lines do not mention).
        A repair narrows its step to the lines its evidence quotes."""
        if self.choices is None or self.items or not lines:
            return self
        text = "\n".join(lines)
        if self.dates:
            written = set(dates_in(text))
            kept = tuple(choice for choice in self.choices if choice in written)
        else:
            kept = tuple(c for c in self.choices if quoted(_normal(c), text, whole_words=True))
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
        items = get_origin(info.annotation) is list
        model = _model_of(info.annotation)
        if model is not None:
            inner = allowed_values(model.model_fields, context)
            nested = tuple((key, g) for key, g in inner.items() if g.fields is None)  # one level
            if nested:
                found[name] = AllowedValues(fields=nested, items=items)
            continue
        metadata = _string_metadata(info)
        if metadata is None:
            continue  # other types and unions: only the check holds them
        choices: Sequence[str] | None = None
        quote: _Held | None = None
        dates = False
        for item in metadata:
            held = getattr(getattr(item, "func", None), _GROUNDING_ATTR, None)
            if not isinstance(held, _Held) or held.key not in context:
                continue
            if held.choices is not None:
                dates = dates or held.dates
                allowed = held.choices(context[held.key])
                choices = allowed if choices is None else [c for c in choices if c in allowed]
            elif quote is None:
                quote = held
        if choices is None and quote is None:
            continue
        schema = (properties or {}).get(name)
        shape = StringShape.of(_string_schema(schema.get("items") if items and schema else schema))
        source = None if quote is None else _as_text(context[quote.key])
        if choices is not None:
            if quote is not None and source is not None:
                text = _normal(source) if quote.normalize_whitespace else source
                choices = [c for c in choices if _quotes(c, text, quote)]
            if shape is not None:
                choices = shape.choices(choices)
        elif quote is not None and source is not None and shape is not None:
            text = _quotable(source, quote.normalize_whitespace)
            listed = shape.quotes(text, whole_words=quote.whole_words)
            choices = listed  # None: too many to list, the source is kept
        if choices is not None:
            if choices:  # none left: no value can pass, and the check says why
                found[name] = AllowedValues(
                    choices=tuple(dict.fromkeys(choices)), dates=dates, items=items
                )
        elif quote is not None and source is not None:
            found[name] = AllowedValues(
                source=source,
                normalize_whitespace=quote.normalize_whitespace,
                whole_words=quote.whole_words,
                items=items,
            )
    return found


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


def _quotes(choice: str, text: str, held: _Held) -> bool:
    """Whether a choice passes `held`'s quote check against `text` (as the check reads it)."""
    needle = _normal(choice) if held.normalize_whitespace else choice
    return quoted(needle, text, whole_words=held.whole_words)
