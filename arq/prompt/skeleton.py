"""Text rendering for prompts: the output-format skeleton and examples.

The skeleton shows the shape of the answer in step order with the questions as values,
typed compactly, instead of pasting a JSON Schema (which costs many more tokens)::

    {
      "request": "<What exactly is the customer asking for?>",
      "urgency": <integer 1 to 5: How urgent is it?>,  // 5 only for outages.
      "decision": <one of "refund", "replace": What do we do?>
    }
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from arq.errors import InvalidArgumentError
from arq.prompt.context import json_text
from arq.schema import Reasoning, Step, StepSpec, _cached, _item_id, steps

__all__ = ["example_json", "render_skeleton"]

_PAD = "  "
_SPACES = re.compile(r"\s+")
_CONSTRAINTS = ("min_length", "max_length", "pattern", "gt", "ge", "lt", "le", "multiple_of")
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
_NUMBERS: dict[Any, str] = {int: "integer", float: "number", Decimal: "number"}
_FORMATS: dict[Any, str] = {
    datetime: "ISO 8601 date-time",
    date: "date YYYY-MM-DD",
    time: "time HH:MM:SS",
    UUID: "UUID",
}


def render_skeleton(schema: type[Reasoning], names: Sequence[str] | None = None) -> str:
    """The JSON skeleton of `schema`: each step's key with its question as the value.

    `names` keeps only those steps (a repair shows the failing step and those after it).
    Computed once per schema and steps: a schema does not change once defined.
    """
    key = "skeleton" if names is None else "skeleton:" + ",".join(names)
    return _cached(schema, key, lambda: _render_skeleton(schema, names))


def _render_skeleton(schema: type[Reasoning], names: Sequence[str] | None) -> str:
    renderer = _Renderer()
    entries = []
    for step in steps(schema):
        if names is not None and step.name not in names:
            continue
        items = schema.__arq_items__.get(step.name)
        value = renderer.checklist(step, items) if items is not None else None
        if value is None:
            value = renderer.value(
                step.annotation, _line(step.question), _constraints(step.field.metadata), 1
            )
        notes = [step.instruction] if step.instruction else []
        if step.max_chunks:
            notes.append(f"at most about {step.max_chunks} tokens")
        entries.append((step.name, value, _line(step.question), notes))
    return _object(entries, 0)


def _line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _constraints(metadata: Iterable[Any]) -> dict[str, Any]:
    """Pydantic constraints (max_length, ge, ...) found in field or `Annotated` metadata."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_constraints(item.metadata))
            continue
        for name in _CONSTRAINTS:
            value = getattr(item, name, None)
            if value is not None:
                found[name] = getattr(value, "pattern", value)  # a compiled re or a str
    return found


def _entry(key: str, value: str, label: str, notes: list[str], *, last: bool, depth: int) -> str:
    # a multi-line value (an object) has no place for its label, so it goes in the comment
    notes = [label, *notes] if "\n" in value else notes
    comment = "  // " + " ".join(_sentence(n) for n in notes) if notes else ""
    comma = "" if last else ","
    head, newline, rest = value.partition("\n")
    key_text = f"{_PAD * depth}{json.dumps(key, ensure_ascii=False)}: "
    if newline:
        return f"{key_text}{head}{comment}\n{rest}{comma}"
    return f"{key_text}{head}{comma}{comment}"


def _sentence(note: str) -> str:
    note = _line(note)
    note = note[:1].upper() + note[1:]
    return note if note.endswith((".", "?", "!", ":")) else note + "."


def _object(entries: list[tuple[str, str, str, list[str]]], depth: int) -> str:
    if not entries:
        return "{}"
    lines = [
        _entry(key, value, label, notes, last=i == len(entries) - 1, depth=depth + 1)
        for i, (key, value, label, notes) in enumerate(entries)
    ]
    return "{\n" + "\n".join(lines) + "\n" + _PAD * depth + "}"


def _text(label: str | None, notes: list[str]) -> str:
    inner = label or "text"
    if notes:
        inner += f" ({', '.join(notes)})"
    return json.dumps(f"<{inner}>", ensure_ascii=False)


def _typed(kind: str, notes: list[str], label: str | None) -> str:
    head = " ".join([kind, ", ".join(notes)]) if notes else kind
    return f"<{head}: {label}>" if label else f"<{head}>"


def _length_notes(cons: Mapping[str, Any], unit: str) -> list[str]:
    low, high = cons.get("min_length"), cons.get("max_length")
    if low is not None and high is not None:
        return [f"{low} to {high} {unit}"]
    if high is not None:
        return [f"at most {high} {unit}"]
    return [f"at least {low} {unit}"] if low is not None else []


def _number_notes(cons: Mapping[str, Any]) -> list[str]:
    closed = "ge" in cons and "le" in cons
    notes = [f"{cons['ge']} to {cons['le']}"] if closed else []
    skip = ("ge", "le") if closed else ()
    notes += [f"{op} {cons[k]}" for k, op in _BOUNDS if k in cons and k not in skip]
    if "multiple_of" in cons:
        notes.append(f"multiple of {cons['multiple_of']}")
    return notes


class _Renderer:
    """Renders annotations; remembers the models being rendered to stop at recursion."""

    def __init__(self) -> None:
        self._path: list[type[BaseModel]] = []

    def value(self, tp: Any, label: str | None, cons: Mapping[str, Any], depth: int) -> str:
        """One value's placeholder; multi-line text (for objects) is indented for `depth`."""
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            return self.value(args[0], label, {**cons, **_constraints(args[1:])}, depth)
        if origin is Union or origin is types.UnionType:
            options = [a for a in args if a is not type(None)]
            text = " or ".join(self.value(a, label, cons, depth) for a in options)
            return f"{text} or null" if len(options) < len(args) else text
        if origin is Literal:
            return _typed("one of " + ", ".join(json.dumps(a) for a in args), [], label)
        if origin in (list, set, frozenset, Sequence) or tp in (list, set, frozenset):
            return self.sequence(args[0] if args else Any, label, cons, depth)
        if origin is tuple or tp is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return self.sequence(args[0], label, cons, depth)
            return "[" + ", ".join(self.value(a, label, {}, depth) for a in args) + "]"
        if origin in (dict, Mapping) or tp is dict:
            return self.mapping(args[1] if args else Any, label, depth)
        if isinstance(tp, type) and issubclass(tp, Enum):
            values = ", ".join(json.dumps(to_jsonable_python(m.value)) for m in tp)
            return _typed(f"one of {values}", [], label)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.model(tp, label, depth)
        return self.scalar(tp, label, cons)

    def scalar(self, tp: Any, label: str | None, cons: Mapping[str, Any]) -> str:
        if tp is str:
            notes = _length_notes(cons, "characters")
            if "pattern" in cons:
                notes.append(f"matching {cons['pattern']}")
            return _text(label, notes)
        if tp is bool:
            return _typed("true or false", [], label)
        if tp in _NUMBERS:
            return _typed(_NUMBERS[tp], _number_notes(cons), label)
        if tp in _FORMATS:
            return _text(label, [_FORMATS[tp]])
        if tp is type(None):
            return "null"
        kind = "any JSON value" if tp in (Any, object) else getattr(tp, "__name__", str(tp))
        return _typed(kind, [], label)

    def sequence(self, item: Any, label: str | None, cons: Mapping[str, Any], depth: int) -> str:
        counts = _length_notes(cons, "items")
        tail = f"... ({', '.join(counts)})" if counts else "..."
        inner = self.value(item, label, {}, depth + 1)
        if "\n" not in inner:
            return f"[{inner}, {tail}]"
        pad = _PAD * (depth + 1)
        return f"[\n{pad}{inner},\n{pad}{tail}\n{_PAD * depth}]"

    def mapping(self, item: Any, label: str | None, depth: int) -> str:
        inner = self.value(item, label, {}, depth + 1)
        if "\n" not in inner:
            return '{"<key>": ' + inner + ", ...}"
        pad = _PAD * (depth + 1)
        return f'{{\n{pad}"<key>": {inner},\n{pad}...\n{_PAD * depth}}}'

    def model(self, model: type[BaseModel], label: str | None, depth: int) -> str:
        if model in self._path:  # a recursive model: refer back instead of looping
            return _typed(f"{model.__name__} object as above", [], label)
        self._path.append(model)
        entries = [self.field(name, info, depth + 1) for name, info in model.model_fields.items()]
        self._path.pop()
        return _object(entries, depth)

    def field(self, name: str, info: FieldInfo, depth: int) -> tuple[str, str, str, list[str]]:
        label = _line(info.description or name)
        spec = next((m for m in info.metadata if isinstance(m, StepSpec)), None)
        notes = [spec.instruction] if spec is not None and spec.instruction else []
        value = self.value(info.annotation, label, _constraints(info.metadata), depth)
        return name, value, label, notes

    def checklist(self, step: Step, items: Sequence[Any]) -> str | None:
        """One entry per item, ids pre-filled; None if the step is not a list of models."""
        args = get_args(step.annotation)
        model = args[0] if get_origin(step.annotation) is list and args else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or not items:
            return None
        ids = [_item_id(item) for item in items]
        id_field = next(
            (n for n, f in model.model_fields.items() if _literal_ids(f.annotation) == ids), "id"
        )
        lines = []
        for n, item in enumerate(items):
            entries = []
            for name, info in model.model_fields.items():
                key, value, label, notes = self.field(name, info, 2)
                if name == id_field:
                    value = json.dumps(ids[n], ensure_ascii=False)
                elif n > 0:  # the questions are shown once, in the first entry
                    value = self.value(info.annotation, None, _constraints(info.metadata), 2)
                entries.append((key, value, label, notes))
            lines.append(self._item(entries, _item_text(item), last=n == len(items) - 1))
        return "[\n" + "\n".join(lines) + f"\n{_PAD}]"  # the step's value, at depth 1

    def _item(self, entries: list[tuple[str, str, str, list[str]]], text: str, last: bool) -> str:
        comment = f"  // {_line(text)}" if text else ""
        comma = "" if last else ","
        pad = _PAD * 2
        if any("\n" in value or notes for _, value, _, notes in entries):
            head, _, rest = _object(entries, 2).partition("\n")
            return f"{pad}{head}{comment}\n{rest}{comma}"
        pairs = ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {v}" for k, v, _, _ in entries)
        return f"{pad}{{{pairs}}}{comma}{comment}"


def _literal_ids(annotation: Any) -> list[str] | None:
    is_literal = get_origin(annotation) is Literal
    return [str(a) for a in get_args(annotation)] if is_literal else None


def _item_text(item: Any) -> str:
    if isinstance(item, tuple):
        return str(item[1]) if len(item) > 1 else ""
    text = item.get("text") if isinstance(item, Mapping) else getattr(item, "text", None)
    return "" if isinstance(item, str) or text is None else str(text)


# --- examples ----------------------------------------------------------------------------


def example_json(schema: type[Reasoning], example: BaseModel | Mapping[str, Any]) -> str:
    """An example output as JSON with the keys in step order.

    Raises:
        InvalidArgumentError: the example's keys are not exactly the schema's steps.
    """
    if isinstance(example, BaseModel):
        data = example.model_dump(mode="json")
    elif isinstance(example, Mapping):
        data = dict(example)
    else:
        raise InvalidArgumentError(
            f"an example must be a {schema.__name__} or a mapping, not {example!r}"
        )
    names = [step.name for step in steps(schema)]
    if set(data) != set(names):
        extra = [k for k in data if k not in names]
        missing = [n for n in names if n not in data]
        raise InvalidArgumentError(
            f"an example for {schema.__name__} must have exactly its steps as keys "
            f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(extra) or 'none'})"
        )
    return json_text({name: data[name] for name in names})
