"""GBNF grammars for an answer's JSON, from the request's JSON Schema (for llama.cpp).

Values reuse llama-cpp-python's JSON Schema converter, with three repairs: the answer's
keys come in step order (the converter moves optional properties last), strings take no
raw control characters (JSON forbids them), and regex shorthands such as \\d are spelled
as classes (the converter copies them as literals, which llama.cpp cannot parse). An
integer with both bounds is held to as many digits as its bounds have, since the
converter ignores bounds and an unbounded integer can run on until the token limit.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["bounded_integer_rule", "json_grammar"]

# The converter lets raw control characters into strings, which JSON forbids.
_STRICT_CHAR = r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def json_grammar(schema: dict[str, Any], keys: Sequence[str], *, continuation: bool) -> str:
    """GBNF for a JSON object with exactly `keys`, in that order, valid for `schema`.

    Values reuse the rules of llama.cpp's JSON Schema converter; the root rule is written
    here because the converter moves optional properties after required ones, while a
    reasoning schema needs every step, in step order. With `continuation` the grammar
    starts at the first key (the prefill already holds ``{`` and the kept steps).
    """
    converter_type = _converter_type()

    def converter_for() -> Any:
        return converter_type(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    converter = converter_for()
    portable = copy.deepcopy(schema)
    _portable_patterns(portable, converter_for)
    resolved = converter.resolve_refs(portable, "schema")
    properties: dict[str, Any] = resolved.get("properties", {})
    missing = [key for key in keys if key not in properties]
    if missing:
        raise ValueError(f"keys not in the schema's properties: {', '.join(missing)}")
    pairs = []
    for key in keys:  # the key's JSON text as a GBNF literal: quotes and backslashes escaped
        literal = json.dumps(key).replace("\\", "\\\\").replace('"', '\\"')
        pairs.append(f'"{literal}" space ":" space {converter.visit(properties[key], key)}')
    body = ' "," space '.join(pairs)
    root = f'space {body} "}}"' if continuation else f'"{{" space {body} "}}"'
    rules = [f"root ::= {root}"]
    for line in str(converter.format_grammar()).splitlines():
        name = line.split(" ::= ", 1)[0]
        rules.append(f"char ::= {_STRICT_CHAR}" if name == "char" else line)
    return "\n".join(rules)


# The converter of llama-cpp-python 0.3.36 copies class escapes such as \d into the grammar
# as literals, which llama.cpp cannot parse (and then crashes): spell them as classes.
_CLASSES = {"d": "0-9", "w": "A-Za-z0-9_", "s": r" \t\n\r"}
_GBNF_ESCAPE = re.compile(r'\\(?![\\"nrt\[\]\-^]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})')


def _spelled(pattern: str) -> str | None:
    r"""`pattern` with class shorthands spelled out, "(?:" as "(", and escaped punctuation
    as one-character classes; None for what cannot be spelled (e.g. \D inside [...])."""
    out: list[str] = []
    in_class, i = False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            e = pattern[i + 1]
            i += 2
            if e.lower() in _CLASSES:
                if in_class and e.isupper():
                    return None
                body = _CLASSES[e.lower()]
                out.append(body if in_class else f"[{'^' if e.isupper() else ''}{body}]")
            elif e.isalnum() or e in "\\]^-":
                out.append("\\" + e)  # \n, \t, \\ and the like: the converter keeps them
            else:
                out.append(e if in_class else f"[{e}]")  # \. is the class [.]
            continue
        if not in_class and pattern.startswith("(?:", i):
            out.append("(")
            i += 3
            continue
        in_class = (c == "[") if not in_class else (c != "]")
        out.append(c)
        i += 1
    return "".join(out)


def _portable_pattern(pattern: str, converter_for: Callable[[], Any]) -> str | None:
    """`pattern` as the converter can turn it into GBNF, or None if it cannot.

    A pattern that cannot be expressed is left to validation: the step is still checked
    when it completes, only the grammar does not enforce it while sampling.
    """
    rewritten = _spelled(pattern)
    if rewritten is None:
        return None
    try:
        converter = converter_for()
        converter.visit({"type": "string", "pattern": rewritten}, "probe")
        grammar = str(converter.format_grammar())
    except Exception:  # the converter asserts on syntax it does not support
        return None
    return None if _GBNF_ESCAPE.search(grammar) else rewritten


def _portable_patterns(node: Any, converter_for: Callable[[], Any]) -> None:
    """Rewrite (or drop) every `pattern` in a schema, in place."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            portable = _portable_pattern(pattern, converter_for)
            if portable is None:
                del node["pattern"]
            else:
                node["pattern"] = portable
        for value in node.values():
            _portable_patterns(value, converter_for)
    elif isinstance(node, list):
        for value in node:
            _portable_patterns(value, converter_for)


@functools.cache
def _converter_type() -> type:
    """llama-cpp-python's converter, made to bound integers (imported on first use)."""
    base: type = importlib.import_module("llama_cpp.llama_grammar").SchemaConverter

    class BoundedIntegers(base):  # type: ignore[misc]
        def visit(self, schema: dict[str, Any], name: str) -> str:
            rule = bounded_integer_rule(schema)
            if rule is None:
                return str(super().visit(schema, name))
            return str(self._add_rule("bounded-integer", rule))

    return BoundedIntegers


def bounded_integer_rule(schema: Any) -> str | None:
    """GBNF for an integer schema with both bounds: at most as many digits as the bounds
    have (the exact range is left to validation), a sign only if the lower bound is
    negative. None for any other schema."""
    if not isinstance(schema, dict) or schema.get("type") != "integer":
        return None
    if "enum" in schema or "const" in schema:
        return None  # the converter lists the values themselves
    low = _bound(schema, "minimum", "exclusiveMinimum", math.ceil, +1)
    high = _bound(schema, "maximum", "exclusiveMaximum", math.floor, -1)
    if low is None or high is None or low > high:
        return None  # unbounded, or no integer fits: the check says so
    digits = len(str(max(abs(low), abs(high))))
    if digits > 15:
        return None  # the converter's own limit is 16 digits
    more = f" [0-9]{{0,{digits - 1}}}" if digits > 1 else ""
    sign = '"-"? ' if low < 0 else ""
    return f'{sign}("0" | [1-9]{more}) space'


def _bound(
    schema: dict[str, Any],
    inclusive: str,
    exclusive: str,
    to_int: Callable[[float], int],
    step: int,
) -> int | None:
    """The tightest integer bound the schema gives on one side, or None."""
    found = []
    for key, offset in ((inclusive, 0), (exclusive, step)):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            bound = to_int(value)
            found.append(bound + offset if bound == value else bound)
    if not found:
        return None
    return max(found) if step > 0 else min(found)
