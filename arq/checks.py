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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

from pydantic import AfterValidator, ValidationInfo
from pydantic.fields import FieldInfo

from arq.errors import ArqError
from arq.shape import StringShape

__all__ = [
    "ContextError",
    "CrossCheck",
    "Grounding",
    "check",
    "covers",
    "grounding",
    "one_of",
    "verbatim_in",
]

P = ParamSpec("P")
R = TypeVar("R")

_CHECK_ATTR = "__arq_check__"
_GROUNDING_ATTR = "__arq_grounding__"


class ContextError(ArqError):
    """A check needs a context value that the run was not given."""


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


def verbatim_in(key: str, *, normalize_whitespace: bool = True) -> AfterValidator:
    """The value (a string, or each string of a list) must be quoted from `context[key]`.

    Whitespace runs are compared as one space unless `normalize_whitespace=False`.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        haystack = _as_text(_context_value(info, key, "verbatim_in"))
        quotes = value if isinstance(value, list | tuple) else [value]
        if normalize_whitespace:
            haystack = _normal(haystack)
        for quote in quotes:
            needle = _normal(str(quote)) if normalize_whitespace else str(quote)
            if not needle or needle not in haystack:
                raise ValueError(f"{str(quote)!r} is not quoted word for word from the {key}")
        return value

    setattr(validate, _GROUNDING_ATTR, ("quote", key, normalize_whitespace))
    return AfterValidator(validate)


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

    setattr(validate, _GROUNDING_ATTR, ("choice", key, False))
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
class Grounding:
    """The values a string step's context checks allow, known once the context is.

    Exactly one of the two is set: `choices`, the value is one of them (`one_of`); or
    `source`, the value is quoted from it (`verbatim_in`; with `normalize_whitespace`
    its whitespace runs are written as one space, as the check compares them). A backend
    that sees the logits (`LlamaCppBackend`) holds the value to them while it is written,
    so a small model cannot invent a name or an id; the check still runs either way.
    """

    choices: tuple[str, ...] | None = None
    source: str | None = None
    normalize_whitespace: bool = True

    def __post_init__(self) -> None:
        if (self.choices is None) == (self.source is None):
            raise ValueError("a Grounding has choices or a source, not both or neither")

    def without(self, refused: Iterable[Any]) -> Grounding | None:
        """These choices less the `refused` values; None if none is left. A source is kept
        as it is: its quotes were too many to list, and the backend steers off refused ones."""
        if self.choices is None:
            return self
        gone = {str(value) for value in refused}
        left = tuple(choice for choice in self.choices if choice not in gone)
        return replace(self, choices=left) if left else None

    @property
    def quoted_text(self) -> str | None:
        """The source as a quote of it may be written: whitespace runs as one space."""
        if self.source is None:
            return None
        return _quotable(self.source, self.normalize_whitespace)


def _quotable(source: str, normalize_whitespace: bool) -> str:
    return _SPACES.sub(" ", source) if normalize_whitespace else source


def grounding(
    fields: Mapping[str, FieldInfo],
    context: Mapping[str, Any] | None,
    properties: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Grounding]:
    """The `Grounding` of each field of type `str` held by `one_of` or `verbatim_in`.

    Fields whose check reads a key the context lacks are left out (validation reports the
    missing key), and so are fields no value could pass (no choices). A field with both
    checks is held to its choices that are quoted from the source. With the fields' JSON
    Schema `properties`, a field's `pattern` and lengths narrow it further: choices that
    do not fit are dropped, and a source becomes the list of its quotes that fit, when
    they are few enough to list (`arq.shape`).
    """
    found: dict[str, Grounding] = {}
    if not context:
        return found
    for name, info in fields.items():
        if info.annotation is not str:
            continue  # lists, unions and the like: only the check holds them
        choices: Sequence[str] | None = None
        quote: tuple[str, bool] | None = None
        for item in info.metadata:
            marked = getattr(getattr(item, "func", None), _GROUNDING_ATTR, None)
            if marked is None or marked[1] not in context:
                continue
            kind, key, normalize = marked
            if kind == "choice":
                allowed = _as_choices(context[key])
                choices = allowed if choices is None else [c for c in choices if c in allowed]
            elif quote is None:
                quote = (_as_text(context[key]), normalize)
        if choices is None and quote is None:
            continue
        shape = StringShape.of((properties or {}).get(name))
        if choices is not None:
            if quote is not None:
                text = _normal(quote[0]) if quote[1] else quote[0]
                needles = ((_normal(c) if quote[1] else c, c) for c in choices)
                choices = [c for needle, c in needles if needle and needle in text]
            if shape is not None:
                choices = shape.choices(choices)
        elif quote is not None and shape is not None:
            choices = shape.quotes(_quotable(*quote))  # None: too many to list, the source is kept
        if choices is not None:
            if choices:  # none left: no value can pass, and the check says why
                found[name] = Grounding(choices=tuple(dict.fromkeys(choices)))
        elif quote is not None:
            found[name] = Grounding(source=quote[0], normalize_whitespace=quote[1])
    return found
