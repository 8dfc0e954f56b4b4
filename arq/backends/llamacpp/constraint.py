"""One llguidance grammar per request: the answer's JSON, its steps in order, its values held.

`request_grammar` writes a Lark grammar (llguidance's dialect) for the answer to a request:

- the object's keys are the request's steps, each once and in step order (a repair's
  continuation starts at its first key: the prefill holds ``{`` and the kept steps);
- each value follows its step's JSON Schema (`%json`, llguidance's JSON Schema compiler:
  types, `Literal` and enum values, patterns, string lengths, integer and number bounds,
  list lengths, nested objects);
- a step held to choices by its context checks (`one_of`, `date_in`, or the few quotes of
  a source that fit the step's type) takes one of them: its string becomes an enum;
- a step held to quotes of a source (`verbatim_in`) writes a substring of the source
  (llguidance's `substring` lexeme), intersected with the step's pattern and lengths, and
  never blank;
- the first step of a repair is kept off the values it already had rejected, for a value a
  single lexeme holds (a string, number, integer or boolean, with or without null): the
  lexeme is intersected with the negation of the rejected JSON texts; an enum loses them.

What a grammar cannot say is left to the step's checks, which run on every step either way.
A pattern llguidance cannot compile (a look-around) is dropped from the grammar and left to
validation likewise.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.checks import AllowedValues

__all__ = ["FIRST_VALUE", "WHITESPACE", "request_grammar"]

FIRST_VALUE = "first_value"
"""The capture name of the answer's first value (its end ends the first step)."""

WHITESPACE = r"(?: |\n{1,2}[ \t]{0,20})"
"""Whitespace allowed between tokens of the answer: a space, or a line break and indent
(bounded, so a model cannot run on in whitespace until its token limit)."""

# a JSON string character: anything but a quote, a backslash or a control character, or an
# escape
_CHAR = r'(?:[^"\\\x00-\x1F]|\\(?:["\\\/bfnrt]|u[0-9a-fA-F]{4}))'
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1F]')
_SCALARS = {
    "integer": r"-?(?:0|[1-9][0-9]{0,15})",
    "number": r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][-+]?[0-9]{1,3})?",
    "boolean": r"true|false",
}


def request_grammar(
    schema: Mapping[str, Any],
    keys: Sequence[str],
    *,
    continuation: bool,
    allowed: Mapping[str, AllowedValues] | None = None,
    rejected: Sequence[str] = (),
    patterns: bool = True,
) -> str:
    """The Lark grammar of an answer to a request with this `schema` (its output schema),
    writing exactly `keys` in order. With `continuation` the answer continues an object its
    prefill opened. `allowed` holds steps to their context's values; `rejected` lists JSON
    texts the first step's value must not be. `patterns=False` leaves every `pattern` out.

    Raises:
        ValueError: a key is not one of the schema's properties.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    missing = [key for key in keys if key not in properties]
    if missing:
        raise ValueError(f"keys not in the schema's properties: {', '.join(missing)}")
    writer = _Writer(defs=schema.get("$defs", {}), patterns=patterns)
    pairs = []
    for index, key in enumerate(keys):
        refused = tuple(rejected) if index == 0 else ()
        value = writer.value(properties[key], (allowed or {}).get(key), refused)
        if index == 0:
            value = writer.rule(value, capture=FIRST_VALUE)
        pairs.append(f'{_literal(json.dumps(key))} WS? ":" WS? {value}')
    body = ' WS? "," WS? '.join(pairs)
    start = f'WS? {body} WS? "}}"' if continuation else f'"{{" WS? {body} WS? "}}"'
    return "\n".join([f"start: {start}", f"WS: /{WHITESPACE}/", *writer.lines])


@dataclass
class _Writer:
    """Accumulates the rules and terminals of one grammar."""

    defs: Mapping[str, Any]
    patterns: bool
    lines: list[str] = field(default_factory=list)

    def rule(self, body: str, *, capture: str | None = None) -> str:
        name = f"r{len(self.lines)}"
        attribute = f"[capture={json.dumps(capture)}]" if capture else ""
        self.lines.append(f"{name}{attribute}: {body}")
        return name

    def terminal(self, body: str) -> str:
        name = f"T{len(self.lines)}"
        self.lines.append(f"{name}: {body}")
        return name

    def json(self, schema: Mapping[str, Any]) -> str:
        """A value held by llguidance's JSON Schema compiler."""
        inline = dict(schema)
        if self.defs and "$ref" in json.dumps(schema):
            inline["$defs"] = self.defs
        inline["x-guidance"] = {"whitespace_pattern": WHITESPACE, "lenient": True}
        inline = _closed(inline)
        if not self.patterns:
            inline = _without_patterns(inline)
        return self.rule(f"%json {json.dumps(inline)}")

    def value(
        self, schema: Mapping[str, Any], held: AllowedValues | None, rejected: Sequence[str]
    ) -> str:
        """A value of `schema`, held to `held` and kept off `rejected`."""
        schema = self._resolved(schema)
        if held is not None and held.fields is not None:
            return self._held_fields(schema, held)
        if held is not None and held.items:
            return self._list(schema, lambda item: self.value(item, _one(held), ()))
        if held is not None and held.choices is not None:
            schema = _with_choices(schema, held.choices)
        elif held is not None:
            return self._quote_value(schema, held, rejected)
        if rejected:
            return self._excluding(schema, rejected)
        return self.json(schema)

    def _resolved(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            found = self.defs.get(ref.split("/")[-1])
            if isinstance(found, Mapping):
                return found
        return schema

    def _list(self, schema: Mapping[str, Any], item: Any) -> str:
        """A JSON list whose items are written by `item(items_schema)`, its lengths kept."""
        one = item(self._resolved(schema.get("items", {})))
        low = max(int(schema.get("minItems", 0)), 0)
        high = schema.get("maxItems")
        more = f'(WS? "," WS? {one})'
        if high is not None and int(high) <= 64:
            if int(high) < max(low, 1):
                return self.rule('"[" WS? "]"')
            more += f"{{{max(low - 1, 0)},{int(high) - 1}}}"
        else:
            more += f"{{{max(low - 1, 0)},}}"
        items = f"{one} {more}"
        if low == 0:
            items = f"({items})?"
        return self.rule(f'"[" WS? {items} WS? "]"')

    def _held_fields(self, schema: Mapping[str, Any], held: AllowedValues) -> str:
        """An object (or a list of them) whose string fields are held."""
        if held.items:
            inner = AllowedValues(fields=held.fields)
            return self._list(schema, lambda item: self._held_fields(item, inner))
        fields = dict(held.fields or ())
        properties: Mapping[str, Any] = schema.get("properties", {})
        if not properties:
            return self.json(schema)
        pairs = [
            f'{_literal(json.dumps(name))} WS? ":" WS? ' + self.value(sub, fields.get(name), ())
            for name, sub in properties.items()
        ]
        return self.rule('"{" WS? ' + ' WS? "," WS? '.join(pairs) + ' WS? "}"')

    def _quote_value(
        self, schema: Mapping[str, Any], held: AllowedValues, rejected: Sequence[str]
    ) -> str:
        """A string quoted from `held`'s source (or null, where the schema allows it)."""
        string, nullable = _string_branch(schema)
        segments = [s for s in _NEEDS_ESCAPE.split(held.quoted_text or "") if s.strip()]
        if not segments:
            return self.json(schema)  # nothing to quote: the check reports it
        kind = "substring_words" if held.whole_words else "substring_chars"
        parts = [self.terminal(f"%regex {json.dumps({kind: s})}") for s in segments]
        content = "(" + " | ".join(parts) + r") & /.*\S.*/"
        for extra in self._string_limits(string):
            content += f" & /{extra}/"
        quote = f'"\\"" ({content}) "\\""'
        if rejected:
            quote = f"({quote}) & ~({_alternatives(rejected)})"
        body = self.terminal(quote)
        return self.rule(f'{body} | "null"' if nullable else body)

    def _string_limits(self, schema: Mapping[str, Any]) -> list[str]:
        """Regexes over a string's JSON text (inside its quotes) for its lengths and pattern."""
        found = []
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low is not None or high is not None:
            found.append(f"{_CHAR}{{{int(low or 0)},{'' if high is None else int(high)}}}")
        pattern = schema.get("pattern")
        if self.patterns and isinstance(pattern, str):
            found.append(_full_match(pattern))
        return found

    def _excluding(self, schema: Mapping[str, Any], rejected: Sequence[str]) -> str:
        """A value of `schema` that is none of the `rejected` JSON texts, where one lexeme
        holds it; otherwise the schema alone (the repair's check refuses them again)."""
        if "enum" in schema:
            kept = [v for v in schema["enum"] if json.dumps(v) not in set(rejected)]
            return self.json({**schema, "enum": kept} if kept else schema)
        branch, nullable = _string_branch(schema)
        kind = branch.get("type")
        if kind == "string" and "enum" not in branch and "format" not in branch:
            limits = "".join(f" & /{extra}/" for extra in self._string_limits(branch))
            lexeme = f'"\\"" (/{_CHAR}*/{limits}) "\\""'
        elif kind in _SCALARS:
            lexeme = f"/{_SCALARS[kind]}/"
        else:
            return self.json(schema)
        if nullable:
            lexeme = f'({lexeme}) | "null"'
        return self.rule(self.terminal(f"({lexeme}) & ~({_alternatives(rejected)})"))


def _one(held: AllowedValues) -> AllowedValues:
    """What each item of a held list is held to."""
    return AllowedValues(
        choices=held.choices,
        source=held.source,
        normalize_whitespace=held.normalize_whitespace,
        whole_words=held.whole_words,
        dates=held.dates,
    )


def _string_branch(schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The schema of a value's non-null branch, and whether null is allowed too."""
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        if len(kept) == 1 and len(kept) < len(branches):
            return kept[0], True
    return schema, False


def _with_choices(schema: Mapping[str, Any], choices: Sequence[str]) -> dict[str, Any]:
    """`schema` with its string (or its non-null branch) held to `choices`."""
    branch, nullable = _string_branch(schema)
    listed: dict[str, Any] = {"enum": list(choices)}
    if "description" in branch:
        listed["description"] = branch["description"]
    if nullable:
        return {"anyOf": [listed, {"type": "null"}]}
    return listed


def _closed(node: Any) -> Any:
    """`node` with every object that does not say otherwise closed to properties it does
    not list (JSON Schema allows any by default; a model given the room writes them)."""
    if isinstance(node, list):
        return [_closed(v) for v in node]
    if not isinstance(node, dict):
        return node
    found = {k: _closed(v) for k, v in node.items()}
    if ("properties" in found or found.get("type") == "object") and (
        "additionalProperties" not in found
    ):
        found["additionalProperties"] = False
    return found


def _without_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_patterns(v) for k, v in node.items() if k != "pattern"}
    if isinstance(node, list):
        return [_without_patterns(v) for v in node]
    return node


def _full_match(pattern: str) -> str:
    """A JSON Schema `pattern` (a search, anchored only by ^ and $) as a regex that must
    match a whole string, as llguidance's regexes do."""
    body = copy.copy(pattern)
    start = body.startswith("^")
    end = body.endswith("$") and not body.endswith("\\$")
    body = body[1 if start else 0 : len(body) - 1 if end else len(body)]
    body = body.replace("/", "\\/")
    return f"{'' if start else '.*'}(?:{body}){'' if end else '.*'}"


def _literal(text: str) -> str:
    """`text` as a Lark string literal."""
    return json.dumps(text)


def _alternatives(texts: Sequence[str]) -> str:
    return " | ".join(_literal(text) for text in dict.fromkeys(texts))
