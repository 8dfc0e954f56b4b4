"""Step checks that read the run's context: `verbatim_in`, `one_of`, `date_in`, `covers`.

Each is `Annotated` metadata that runs when its step completes and reads the run's context
(the mapping passed to `build`/`run`) through Pydantic's validation context::

    order_id: Annotated[str, arq.verbatim_in("conversation")] = arq.query("Which order?")

Each marks the context key it reads, so the keys a schema needs are known before a run
(`context_keys`). `verbatim_in`, `one_of` and `date_in` also mark what they allow (a
`ContextRule`), which `arq.checks.allowed` reads so a backend can hold a value to it while
decoding.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import AfterValidator, BaseModel, ValidationInfo
from pydantic.fields import FieldInfo

from arq.checks.dates import dates_in
from arq.checks.shape import cuts_word
from arq.errors import ContextError

__all__ = [
    "ContextRule",
    "as_choices",
    "as_text",
    "collapse_spaces",
    "context_keys",
    "coverage_problem",
    "covers",
    "date_in",
    "one_of",
    "quoted",
    "rule_of",
    "verbatim_in",
]

_RULE_ATTR = "__arq_grounding__"
_KEY_ATTR = "__arq_context_key__"
_SPACES = re.compile(r"\s+")
_SHOWN_DATES = 12  # dates listed in a failed date_in's message


@dataclass(frozen=True)
class ContextRule:
    """What a context check allows, marked on its validator: one of the choices
    `choices(context[key])` (`one_of`, `date_in`), or a quote of `context[key]`
    (`verbatim_in`)."""

    key: str
    choices: Callable[[Any], list[str]] | None = None
    normalize_whitespace: bool = True
    whole_words: bool = False
    dates: bool = False  # the choices are ISO dates (`date_in`)

    def admits_quote(self, choice: str, text: str) -> bool:
        """Whether `choice` passes this quote check against `text` (as the check reads it)."""
        needle = collapse_spaces(choice) if self.normalize_whitespace else choice
        return quoted(needle, text, whole_words=self.whole_words)


def rule_of(metadata: Any) -> ContextRule | None:
    """The `ContextRule` of a field's metadata item, if it is a context check that has one."""
    rule = getattr(getattr(metadata, "func", None), _RULE_ATTR, None)
    return rule if isinstance(rule, ContextRule) else None


def _marked(
    validate: Callable[[Any, ValidationInfo], Any], key: str, rule: ContextRule | None = None
) -> AfterValidator:
    setattr(validate, _KEY_ATTR, key)
    if rule is not None:
        setattr(validate, _RULE_ATTR, rule)
    return AfterValidator(validate)


def context_keys(fields: Mapping[str, FieldInfo]) -> dict[str, list[str]]:
    """The context keys the checks of `fields` read, each with the fields that read it.

    A field's checks are found anywhere in its type: on the field, inside `list[...]`,
    unions and `Annotated[...]`, and on the fields of the models it holds, at any depth.
    """
    needed: dict[str, list[str]] = {}
    for name, info in fields.items():
        for key in _keys_in([*info.metadata, info.annotation]):
            readers = needed.setdefault(key, [])
            if name not in readers:
                readers.append(name)
    return needed


def _keys_in(items: list[Any]) -> list[str]:
    """The context keys marked in type annotations and field metadata, in reading order."""
    found: list[str] = []
    queue, seen = deque(items), set[type]()
    while queue:
        item = queue.popleft()
        key = getattr(getattr(item, "func", None), _KEY_ATTR, None)
        if isinstance(key, str):
            found.append(key)
        elif isinstance(item, type) and issubclass(item, BaseModel):
            if item not in seen:  # a recursive model is read once
                seen.add(item)
                for info in item.model_fields.values():
                    queue.extend([*info.metadata, info.annotation])
        else:
            queue.extend(get_args(item))  # Annotated[T, ...] gives T and its metadata
    return found


def _context_value(info: ValidationInfo, key: str, helper: str) -> Any:
    context = info.context
    if not isinstance(context, Mapping) or key not in context:
        raise ContextError(
            f"{helper}({key!r}) needs the run's context to have a {key!r} value; "
            f"pass context={{{key!r}: ...}} to build/run"
        )
    return context[key]


def as_text(value: Any) -> str:
    """Flatten a context value (text, messages, lists, mappings) into searchable text."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if "content" in value:
            return as_text(value["content"])
        return "\n".join(as_text(v) for v in value.values())
    if isinstance(value, Iterable):
        return "\n".join(as_text(v) for v in value)
    return str(value)


def as_choices(value: Any) -> list[str]:
    """A context value as the ids it offers: a mapping's keys, a list's items (or their ids)."""
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


def collapse_spaces(text: str) -> str:
    """`text` with each whitespace run as one space and none at either end."""
    return _SPACES.sub(" ", text).strip()


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


def verbatim_in(
    key: str, *, normalize_whitespace: bool = True, whole_words: bool = False
) -> AfterValidator:
    """The value (a string, or each string of a list) must be quoted from `context[key]`.

    Whitespace runs are compared as one space unless `normalize_whitespace=False`. With
    `whole_words` the quote must not cut a word: it starts and ends where the source has
    no letter, digit or underscore on both sides ("Lea Holm", not "Lea Hol").
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        haystack = as_text(_context_value(info, key, "verbatim_in"))
        quotes = value if isinstance(value, list | tuple) else [value]
        if normalize_whitespace:
            haystack = collapse_spaces(haystack)
        for quote in quotes:
            needle = collapse_spaces(str(quote)) if normalize_whitespace else str(quote)
            if not quoted(needle, haystack, whole_words=whole_words):
                words = " (whole words)" if whole_words else ""
                raise ValueError(
                    f"{str(quote)!r} is not quoted word for word from the {key}{words}"
                )
        return value

    rule = ContextRule(key, normalize_whitespace=normalize_whitespace, whole_words=whole_words)
    return _marked(validate, key, rule)


def one_of(key: str) -> AfterValidator:
    """The value (or each item of a list) must be one of `context[key]`.

    A context list of mappings or objects with an `id` is matched on the ids.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        choices = as_choices(_context_value(info, key, "one_of"))
        picked = value if isinstance(value, list | tuple) else [value]
        for item in picked:
            if str(item) not in choices:
                raise ValueError(f"{item!r} is not one of the {key}: {', '.join(choices)}")
        return value

    return _marked(validate, key, ContextRule(key, choices=as_choices))


def date_in(key: str, *, day_first: bool | None = None) -> AfterValidator:
    """The value must be a date written in `context[key]`, given in ISO form (YYYY-MM-DD).

    The context may write it in any common form (2021/03/04, 4 March 2021, ...; see
    `arq.checks.dates`). A numeric date with the year last (04/03/2021) reads as day first when
    `day_first`, month first when False, and either way when None. A `date` value is
    compared in ISO form too.
    """

    def written(value: Any) -> list[str]:
        return dates_in(as_text(value), day_first=day_first)

    def validate(value: Any, info: ValidationInfo) -> Any:
        dates = written(_context_value(info, key, "date_in"))
        if str(value) not in dates:
            shown = ", ".join(dates[:_SHOWN_DATES]) + (", ..." if len(dates) > _SHOWN_DATES else "")
            raise ValueError(
                f"{str(value)!r} is not a date written in the {key}, as YYYY-MM-DD"
                + (f" (its dates: {shown})" if dates else " (it gives no date)")
            )
        return value

    return _marked(validate, key, ContextRule(key, choices=written, dates=True))


def covers(key: str, *, id_field: str = "id") -> AfterValidator:
    """The list must name every id of `context[key]` exactly once, and no other id.

    Items may be ids or objects with an `id_field` attribute. The ids are read from the
    context when the step completes, so one schema serves whatever items a run brings.

    `arq.checklist(schema, field, items)` asks the same when the items are known before the
    run: it narrows the step in the schema itself (the ids become an enum, the list's length
    is fixed), so a backend that enforces the schema never writes an unknown id or a wrong
    number of entries, and a cross-step check rejects a repeat. Use `checklist` when the
    items are known as the schema is built, `covers` when they arrive with the run's
    context. Both judge the list with `coverage_problem`.
    """

    def validate(value: Any, info: ValidationInfo) -> Any:
        expected = as_choices(_context_value(info, key, "covers"))
        got = [_item_id(item, id_field) for item in value]
        problem = coverage_problem(expected, got)
        if problem:
            raise ValueError(f"{problem} (the {key})")
        return value

    return _marked(validate, key)


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
