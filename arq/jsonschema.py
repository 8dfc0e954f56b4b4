"""JSON Schema of a reasoning schema, for a provider's structured-output mode, and its lint.

```python
arq.jsonschema.json_schema(Reply)                          # OpenAI strict mode (default)
arq.jsonschema.json_schema(Reply, dialect="json-schema")   # plain JSON Schema
arq.jsonschema.lint(Reply)                                 # portability findings
```

Properties, `required` and every nested model keep field order: the model writes steps in
the order of the schema's keys. Each step's description is its question, followed by its
instruction when it has one.

The strict dialect follows OpenAI's "Structured Outputs > Supported schemas" guide
(platform.openai.com/docs/guides/structured-outputs, read 2026): every object sets
`additionalProperties: false` and lists every property in `required`; the root is an object;
`$defs` and recursion through `$ref` are allowed but a `$ref` takes no sibling keywords (the
API answers "$ref cannot have keywords {'description'}"); `anyOf` is supported, `oneOf` and
`allOf` are not; `default` and `examples` are rejected ("'default' is not permitted").
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from arq.errors import InvalidArgumentError
from arq.schema import Reasoning, _cached, _require_schema, steps

__all__ = ["Dialect", "Finding", "enum_values", "json_schema", "lint"]

Dialect = Literal["openai-strict", "json-schema"]
Severity = Literal["error", "warning", "info"]
Node = dict[str, Any]

# OpenAI's documented limits ("Objects have limitations on nesting depth and size",
# "Limitations on total string size", "Limitations on enum size"; raised in 2025 from
# 100 properties / 5 levels / 15,000 characters / 500 enum values).
MAX_PROPERTIES = 5000  # object properties in the whole schema
MAX_DEPTH = 10  # levels of object nesting, the root object being level 1
MAX_ENUM_VALUES = 1000  # across all enums (OpenAIBackend's narrowed choices included)
MAX_TEXT = 120_000  # characters of property names, definition names, enum and const values
LARGE_ENUM = 250  # a single string enum with more values than this ...
MAX_LARGE_ENUM_TEXT = 15_000  # ... may hold at most this many characters

# Keywords kept in the strict dialect: those the guide lists as supported. prefixItems,
# patternProperties and allOf cannot be dropped without changing the shape, so they stay
# for the API to reject and `lint` reports them as errors.
_STRICT_KEYWORDS = frozenset(
    {
        "$ref", "$defs", "type", "description", "properties", "required",
        "additionalProperties", "items", "anyOf", "enum", "const",
        "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minItems", "maxItems",
        "prefixItems", "patternProperties", "allOf",
    }
)  # fmt: skip
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
# Constraints strict mode does not accept (minLength/maxLength are only listed as
# unsupported for fine-tuned models and are absent from the supported list, so they go too).
_CONSTRAINTS = frozenset(
    {
        "minLength", "maxLength", "uniqueItems", "minProperties", "maxProperties", "not",
        "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
        "contains", "minContains", "maxContains", "propertyNames",
        "unevaluatedItems", "unevaluatedProperties",
    }
)  # fmt: skip
# Dropped without a finding: noise, or reported as part of another finding.
_QUIET = frozenset({"title", "default", "oneOf", "discriminator"})
_SINGLE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")
_VALUES = frozenset(
    {"items", "prefixItems", "anyOf", "oneOf", "allOf", "additionalProperties", "patternProperties"}
)
# Keywords that give a value a type; a node with none of them is `Any`.
_TYPED = frozenset({"type", "enum", "const", "anyOf", "oneOf", "allOf", "properties", "items"})


@dataclass(frozen=True)
class Finding:
    """One portability problem of a schema; `path` names the field (`$` is the root)."""

    severity: Severity
    path: str
    message: str
    fix: str
    code: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message} Fix: {self.fix} [{self.code}]"


def json_schema(
    schema: type[Reasoning],
    dialect: Dialect = "openai-strict",
    *,
    steps: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON Schema of a reasoning schema, in step order.

    Args:
        schema: the reasoning schema.
        dialect: `"openai-strict"` for OpenAI Structured Outputs with `strict: true`, or
            `"json-schema"` for plain JSON Schema (2020-12, as Pydantic emits it).
        steps: only these steps (a repair asks for the failing step and those after it);
            they keep the schema's order, and definitions no kept step uses are dropped.

    Returns:
        A fresh dict (computed once per class, dialect and steps, copied on each call), so
        callers may change it.
    """
    if dialect not in get_args(Dialect):
        raise InvalidArgumentError(f"unknown dialect {dialect!r}; use one of {get_args(Dialect)}")
    schema = _require_schema(schema)
    built = _cached(schema, f"json_schema:{dialect}", lambda: _build(schema, dialect))
    if steps is not None:
        names = tuple(steps)
        key = f"json_schema:{dialect}:{','.join(names)}"
        full = built
        built = _cached(schema, key, lambda: _restrict(schema, full, names))
    fresh: dict[str, Any] = _copy(built)
    return fresh


def _restrict(schema: type[Reasoning], doc: Node, names: tuple[str, ...]) -> Node:
    """`doc` with only the properties `names`, and the definitions they still reach."""
    unknown = [n for n in names if n not in doc["properties"]]
    if unknown:
        raise InvalidArgumentError(f"{schema.__name__} has no step {', '.join(map(repr, unknown))}")
    wanted = set(names)
    out = {k: v for k, v in doc.items() if k not in ("properties", "required", "$defs")}
    out["properties"] = {k: v for k, v in doc["properties"].items() if k in wanted}
    if "required" in doc:
        out["required"] = [k for k in doc["required"] if k in wanted]
    defs: Node = doc.get("$defs", {})
    reached: set[str] = set()
    pending = [out]
    while pending:  # follow $refs from the kept properties through the definitions
        node = pending.pop()
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in reached and name in defs:
                reached.add(name)
                pending.append(defs[name])
        pending.extend(child for _, _, child in _children(node))
    if reached:
        out["$defs"] = {k: v for k, v in defs.items() if k in reached}
    restricted: Node = _copy(out)
    return restricted


def lint(schema: type[Reasoning], *, dialect: Dialect = "openai-strict") -> list[Finding]:
    """Portability findings of a schema, errors first, then warnings, then infos.

    With `"openai-strict"`, strict-mode rules and limits are checked; with `"json-schema"`
    only the findings that concern every provider (key order, recursion) are given.
    """
    if dialect not in get_args(Dialect):
        raise InvalidArgumentError(f"unknown dialect {dialect!r}; use one of {get_args(Dialect)}")
    schema = _require_schema(schema)
    return list(_cached(schema, f"lint:{dialect}", lambda: _lint(schema, dialect == "json-schema")))


# --- building ------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    """Deep copy of JSON data, several times faster than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _children(node: Node) -> Iterator[tuple[str, str, Node]]:
    """The subschemas of a node as (keyword, key or index, subschema); never enum/const data."""
    for keyword, value in node.items():
        if keyword in _SINGLE and isinstance(value, dict):
            yield keyword, "", value
        elif keyword in _LISTS and isinstance(value, list):
            yield from ((keyword, str(i), c) for i, c in enumerate(value) if isinstance(c, dict))
        elif keyword in _MAPS and isinstance(value, dict):
            yield from ((keyword, k, c) for k, c in value.items() if isinstance(c, dict))


def _build(schema: type[Reasoning], dialect: Dialect) -> Node:
    # Work on a copy: Pydantic's result must never be changed (it may be shared or cached).
    doc = _hoist_root(_copy(schema.model_json_schema()))
    _drop_titles(doc)
    if schema.__doc__:
        doc["description"] = inspect.cleandoc(schema.__doc__)
    else:
        doc.pop("description", None)
    properties = doc["properties"]
    for step in steps(schema):
        text = step.question
        if step.instruction:
            text = f"{text} Instruction: {step.instruction}"
        if step.name in properties:  # absent only under a validation_alias
            properties[step.name]["description"] = text
    if dialect == "openai-strict":
        doc = _Strict(doc).visit(doc, ())
    if "$defs" in doc:  # definitions after the steps, where a reader expects them
        doc["$defs"] = doc.pop("$defs")
    return doc


def _hoist_root(doc: Node) -> Node:
    """A recursive root comes as `{"$ref": "#/$defs/Root"}`: make the root the object itself."""
    ref = doc.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return doc
    defs: Node = doc.get("$defs", {})
    name = ref.removeprefix("#/$defs/")
    root: Node = defs.pop(name)

    def rewrite(node: Node) -> None:
        if node.get("$ref") == ref:
            node["$ref"] = "#"
        for _, _, child in _children(node):
            rewrite(child)

    rewrite(root)
    for other in defs.values():
        rewrite(other)
    return {**root, "$defs": defs} if defs else root


def _drop_titles(node: Node) -> None:
    node.pop("title", None)  # Pydantic's auto titles only repeat the names
    for _, _, child in _children(node):
        _drop_titles(child)


def _resolve(doc: Node, ref: str) -> Node | None:
    if ref == "#":
        return {k: v for k, v in doc.items() if k != "$defs"}
    if not ref.startswith("#/"):
        return None
    target: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target if isinstance(target, dict) else None


def _is_object(node: Node) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def _accepts_null(node: Node) -> bool:
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if None in (node.get("enum") or ()) or ("const" in node and node["const"] is None):
        return True
    return any(_accepts_null(b) for b in node.get("anyOf") or node.get("oneOf") or ())


class _Strict:
    """Rewrites a (copied) plain schema into OpenAI's strict subset, in place."""

    def __init__(self, doc: Node) -> None:
        self.pristine = _copy(doc)  # refs resolve here, unaffected by the rewrite under way

    def visit(self, node: Node, inlining: tuple[str, ...]) -> Node:
        if "oneOf" in node and "anyOf" not in node:
            node["anyOf"] = node.pop("oneOf")  # discriminated unions; same choices
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            del node["allOf"]
            node = {**all_of[0], **node}
        ref = node.get("$ref")
        if isinstance(ref, str) and any(k not in ("$ref", "title", "default") for k in node):
            # A $ref takes no siblings in strict mode, and the sibling description is the
            # step's question: inline the definition there (as OpenAI's own SDK does).
            target = _resolve(self.pristine, ref)
            if target is not None and ref not in inlining:
                merged = {**_copy(target), **{k: v for k, v in node.items() if k != "$ref"}}
                return self.visit(merged, (*inlining, ref))
            node = {"$ref": ref}  # a definition inlined inside itself: keep the bare ref
        for key in [k for k in node if k not in _STRICT_KEYWORDS]:
            del node[key]
        if node.get("format") not in _STRICT_FORMATS:
            node.pop("format", None)
        if _is_object(node):
            if isinstance(node.get("properties"), dict):
                # Every property is required; optional ones that accept null stay nullable.
                node["required"] = list(node["properties"])
            node.setdefault("additionalProperties", False)
        for keyword, key, child in list(_children(node)):
            new = self.visit(child, inlining)
            if keyword in _SINGLE:
                node[keyword] = new
            else:
                node[keyword][int(key) if keyword in _LISTS else key] = new
        return node


# --- lint ----------------------------------------------------------------------------------

_NEVER = "so the provider will not enforce it; arq's step validation still does."
# code -> (severity, suggested fix)
_RULES: dict[str, tuple[Severity, str]] = {
    "strict-too-many-properties": ("error", "Split the task into smaller schemas."),
    "strict-too-many-enum-values": ("error", "Offer only this request's candidate values."),
    "strict-too-much-text": ("error", "Shorten names and ids, or offer fewer enum values."),
    "strict-enum-too-long": ("error", "Offer fewer or shorter values in this enum."),
    "strict-too-deep": ("error", "Flatten the nested models."),
    "strict-untyped": ("error", "Annotate the field with a concrete type instead of Any."),
    "strict-open-object": ("error", "Use a model with named fields, or a list of pairs."),
    "strict-tuple": ("error", "Use a model with named fields instead of a tuple."),
    "strict-pattern-properties": ("error", "Use a model with named fields."),
    "strict-all-of": ("error", "Merge the combined schemas into one model."),
    "strict-unsupported-keyword": ("warning", "None needed; or say it in the instruction."),
    "strict-unsupported-format": ("warning", "Use a supported format or a pattern."),
    "strict-optional-not-nullable": (
        "warning",
        "Declare it `X | None = None` if the model may skip it, or drop the default.",
    ),
    "strict-dropped-keyword": ("info", "Say it in the question or instruction if it matters."),
    "strict-optional-nullable": ("info", "None needed; drop the default if it is mandatory."),
    "recursive-schema": ("info", "Unroll the recursion to a fixed depth for such providers."),
    "key-order": (
        "info",
        "Use a provider that keeps key order, or a property-ordering hint where the provider "
        "has one (e.g. Gemini's propertyOrdering).",
    ),
}
_RANK = {"error": 0, "warning": 1, "info": 2}


def _finding(code: str, path: str, message: str) -> Finding:
    severity, fix = _RULES[code]
    return Finding(severity, path, message, fix, code)


def _lint(schema: type[Reasoning], portable_only: bool) -> tuple[Finding, ...]:
    found: list[Finding] = []
    if not portable_only:
        found += _limit_findings(json_schema(schema, "openai-strict"))
    walker = _Walker(json_schema(schema, "json-schema"), portable_only)
    walker.walk(walker.doc, "$", 0, ("#",))
    found += walker.found
    message = (
        "Steps are written in the order of the schema's keys. OpenAI keeps that order, but "
        "providers that sort keys alphabetically lose it, and the model answers out of order."
    )
    found.append(_finding("key-order", "$", message))
    return tuple(sorted(dict.fromkeys(found), key=lambda f: _RANK[f.severity]))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def enum_values(doc: Node) -> int:
    """Enum values in a schema as sent, as counted against `MAX_ENUM_VALUES`."""
    count, stack = 0, [doc]
    while stack:
        node = stack.pop()
        if isinstance(node.get("enum"), list):
            count += len(node["enum"])
        stack.extend(child for _, _, child in _children(node))
    return count


def _limit_findings(doc: Node) -> list[Finding]:
    """Whole-schema limits, counted over the schema as sent (inlined copies count again)."""
    properties = text = 0
    stack = [doc]
    while stack:
        node = stack.pop()
        names = node.get("properties")
        if isinstance(names, dict):
            properties += len(names)
            text += sum(len(name) for name in names)
        text += sum(len(name) for name in node.get("$defs") or ())
        if isinstance(node.get("enum"), list):
            text += sum(len(_text(v)) for v in node["enum"])
        if "const" in node:
            text += len(_text(node["const"]))
        stack.extend(child for _, _, child in _children(node))
    found = []
    for count, limit, what, code in (
        (properties, MAX_PROPERTIES, "object properties", "strict-too-many-properties"),
        (enum_values(doc), MAX_ENUM_VALUES, "enum values", "strict-too-many-enum-values"),
        (text, MAX_TEXT, "characters of names, enum and const values", "strict-too-much-text"),
    ):
        if count > limit:
            message = f"The schema has {count} {what}; OpenAI strict mode allows {limit}."
            found.append(_finding(code, "$", message))
    return found


class _Walker:
    """Walks the plain schema by field path, following refs, and collects findings."""

    def __init__(self, doc: Node, portable_only: bool) -> None:
        self.doc = doc
        self.portable_only = portable_only
        self.found: list[Finding] = []

    def add(self, code: str, path: str, message: str) -> None:
        if not (self.portable_only and code.startswith("strict-")):
            self.found.append(_finding(code, path, message))

    def walk(self, node: Node, path: str, level: int, refs: tuple[str, ...]) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in refs:
                message = (
                    "Recursive: fine in OpenAI strict mode, but not for providers without $ref."
                )
                self.add("recursive-schema", path, message)
                return
            target = _resolve(self.doc, ref)
            if target is not None:
                self.walk(target, path, level, (*refs, ref))
        elif not _TYPED & node.keys():
            self.add("strict-untyped", path, "The value has no type (Any); strict mode needs one.")
        self.keywords(node, path)
        if _is_object(node):
            level += 1
            if level > MAX_DEPTH:
                message = f"Objects nest deeper than {MAX_DEPTH} levels, the strict-mode limit."
                self.add("strict-too-deep", path, message)
                return
            self.properties(node, path, level, refs)
        for keyword, _, child in _children(node):
            # Only where values live: properties are walked above, definitions through refs,
            # and not/if/allOf parts are constraints, already reported at this node.
            if keyword not in _VALUES or (keyword == "allOf" and len(node["allOf"]) > 1):
                continue
            sub = f"{path}[]" if keyword in ("items", "prefixItems") else path
            if keyword in ("additionalProperties", "patternProperties"):
                sub = f"{path}.*"
            self.walk(child, sub, level, refs)

    def properties(self, node: Node, path: str, level: int, refs: tuple[str, ...]) -> None:
        if node.get("additionalProperties", False) is not False or "properties" not in node:
            message = "An open mapping (dict): strict mode needs every object's keys listed."
            self.add("strict-open-object", path, message)
        required = set(node.get("required") or ())
        for name, child in (node.get("properties") or {}).items():
            sub = name if path == "$" else f"{path}.{name}"
            if name in required:
                pass
            elif _accepts_null(child):
                message = "Optional: strict mode makes it required but nullable (null = skipped)."
                self.add("strict-optional-nullable", sub, message)
            else:
                message = (
                    "Has a default but does not accept null: strict mode makes it required, "
                    "so the model always writes a value and the default is never used."
                )
                self.add("strict-optional-not-nullable", sub, message)
            self.walk(child, sub, level, refs)

    def keywords(self, node: Node, path: str) -> None:
        for key in node:
            if key in _CONSTRAINTS:
                message = f"`{key}` is not supported by strict mode: arq leaves it out, {_NEVER}"
                self.add("strict-unsupported-keyword", path, message)
            elif key not in _STRICT_KEYWORDS and key not in _QUIET:
                message = f"`{key}` is not accepted by strict mode and is left out there."
                self.add("strict-dropped-keyword", path, message)
        fmt = node.get("format")
        if fmt is not None and fmt not in _STRICT_FORMATS:
            message = f"Format `{fmt}` is not supported by strict mode: arq leaves it out, {_NEVER}"
            self.add("strict-unsupported-format", path, message)
        if "prefixItems" in node:
            self.add("strict-tuple", path, "Tuples (prefixItems) are rejected by strict mode.")
        if "patternProperties" in node:
            self.add(
                "strict-pattern-properties", path, "patternProperties is rejected by strict mode."
            )
        if len(node.get("allOf") or ()) > 1:
            self.add("strict-all-of", path, "allOf is rejected by strict mode.")
        values = node.get("enum")
        if isinstance(values, list) and len(values) > LARGE_ENUM:
            size = sum(len(v) for v in values if isinstance(v, str))
            if size > MAX_LARGE_ENUM_TEXT:
                message = (
                    f"{len(values)} enum values hold {size} characters; strict mode allows "
                    f"{MAX_LARGE_ENUM_TEXT} when an enum has more than {LARGE_ENUM} values."
                )
                self.add("strict-enum-too-long", path, message)
