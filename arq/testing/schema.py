"""Replies made from the JSON Schema a request asks for, so tests need not script text.

```python
server.responder = SchemaResponder(tokens_per_second=50)   # or: server.responder = schema_reply
```

`schema_instance` builds a minimal valid instance, keeping property order: strings are
"example" (or fit their format and length), numbers their minimum or 0, booleans true,
enums their first value, arrays `minItems` items (at least one), `anyOf` the first non-null
option; local `$ref`s (`$defs`, `definitions`) are resolved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from arq.errors import InvalidArgumentError
from arq.testing.replies import ReceivedRequest, Reply, forced_tool

__all__ = ["SchemaResponder", "request_schema", "schema_instance", "schema_reply"]


def request_schema(body: Any) -> Mapping[str, Any]:
    """The JSON Schema a chat request asks for: its response format or its forced tool.

    Raises:
        InvalidArgumentError: The request names no schema.
    """
    body = body if isinstance(body, dict) else {}
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema" and "schema" in (fmt.get("json_schema") or {}):
        return dict(fmt["json_schema"]["schema"])
    if isinstance(fmt.get("schema"), dict):
        return dict(fmt["schema"])
    name = forced_tool(body, None)
    for tool in body.get("tools") or []:
        function = (tool.get("function") if isinstance(tool, dict) else None) or {}
        if name is not None and function.get("name") == name:
            return dict(function.get("parameters") or {"type": "object"})
    raise InvalidArgumentError("the request has no response_format schema and forces no tool")


def schema_instance(schema: Mapping[str, Any]) -> Any:
    """A minimal instance of a JSON Schema, properties in declared order.

    Raises:
        InvalidArgumentError: The schema is recursive beyond any finite instance, or a `$ref` is
            not a local JSON pointer.
    """
    return _instance(schema, schema, 0)


def _instance(node: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    # `depth` counts the $refs followed: only they can make a schema recurse.
    if depth > 32:
        raise InvalidArgumentError(
            "schema is recursive with no finite instance (no null, no empty array)"
        )
    # Past a few levels prefer null and empty arrays, so recursive schemas terminate.
    deep = depth > 3
    if "$ref" in node:
        return _instance(_resolve(node["$ref"], root), root, depth + 1)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        if options := node.get(key):
            chosen = [o for o in options if deep and o.get("type") == "null"] or [
                o for o in options if o.get("type") != "null"
            ]
            return _instance(chosen[0], root, depth) if chosen else None
    if all_of := node.get("allOf"):
        merged: dict[str, Any] = {}
        for part in all_of:
            merged |= _resolve(part["$ref"], root) if "$ref" in part else part
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _instance(merged | rest, root, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in node):
        props = node.get("properties", {})
        return {name: _instance(sub, root, depth) for name, sub in props.items()}
    if kind == "array":
        if prefix := node.get("prefixItems"):
            return [_instance(sub, root, depth) for sub in prefix]
        count = int(node.get("minItems", 0))
        count = min(count if deep else max(count, 1), int(node.get("maxItems", 1 << 30)))
        return [_instance(node.get("items", {}), root, depth) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(node, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(node)


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        raise InvalidArgumentError(f"only local $ref pointers are supported, not {ref!r}")
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return dict(target)


def _number(node: Mapping[str, Any], kind: str) -> int | float:
    if "minimum" in node:
        value = node["minimum"]
    elif "exclusiveMinimum" in node:
        value = node["exclusiveMinimum"] + (1 if kind == "integer" else 0.5)
    elif "maximum" in node and node["maximum"] < 0:
        value = node["maximum"]
    else:
        value = 0
    return int(value) if kind == "integer" else value


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(node: Mapping[str, Any]) -> str:
    text = _FORMATS.get(node.get("format", ""), "example")
    text = text.ljust(int(node.get("minLength", 0)), "x")
    return text[: int(node.get("maxLength", len(text)))]


def schema_reply(request: ReceivedRequest, **options: Any) -> Reply:
    """A reply holding a minimal valid instance of the schema the request asks for.

    Use it as `server.responder` to run a test end to end without scripting text;
    `options` go to `Reply` (e.g. `tokens_per_second=50`).
    """
    return Reply(json.dumps(schema_instance(request_schema(request.body))), **options)


class SchemaResponder:
    """A responder answering every request with `schema_reply(request, **options)`."""

    def __init__(self, **options: Any) -> None:
        """Keep the `Reply` options, e.g. `tokens_per_second` or `chunk_chars`."""
        self.options = options

    def __call__(self, request: ReceivedRequest) -> Reply:
        """Answer `request` with a schema-made reply."""
        return schema_reply(request, **self.options)
