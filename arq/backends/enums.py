"""A request's grounded choices as enums in the JSON Schema sent to a server.

A server that enforces the schema it is sent (strict `json_schema`, a forced tool, or
`json_object` with a schema) then holds a grounded step to its choices too.
"""

from __future__ import annotations

import copy
from typing import Any

from arq.checks import AllowedValues
from arq.jsonschema import MAX_ENUM_VALUES, enum_values
from arq.prompt import Request

__all__ = ["MAX_ENUM_CHARS", "with_choices"]

MAX_ENUM_CHARS = 7_500  # characters of the choices sent (OpenAI allows 15,000 in a large enum)


def with_choices(schema: dict[str, Any], request: Request) -> dict[str, Any]:
    """`schema` with each grounded step that has a list of choices (`one_of`, or the
    quotes that fit a pattern) narrowed to them (an `enum`), so a server that enforces the
    schema holds the value to them. As many values as the schema's own enums leave under
    OpenAI's `MAX_ENUM_VALUES` and at most `MAX_ENUM_CHARS` characters in all, steps in
    order, a step whose list does not fit skipped (OpenAI refuses larger enums); those, and
    quotes of a whole source, are left to the check."""
    properties = schema.get("properties", {})
    choices: dict[str, AllowedValues] = {}
    values, chars = MAX_ENUM_VALUES - enum_values(schema), MAX_ENUM_CHARS
    for step, held in request.allowed.items():
        if held.choices is None or step not in properties:
            continue
        size = sum(len(choice) for choice in held.choices)
        if len(held.choices) <= values and size <= chars:
            choices[step] = held
            values, chars = values - len(held.choices), chars - size
    if not choices:
        return schema
    narrowed = copy.deepcopy(schema)
    for step, held in choices.items():
        _string_part(narrowed["properties"][step], items=held.items)["enum"] = list(
            held.choices or ()
        )
    return narrowed


def _string_part(prop: dict[str, Any], *, items: bool) -> dict[str, Any]:
    """Where a step's strings are in its JSON Schema: the property, a list's `items`, or
    the string branch of an `anyOf` with null (so null stays allowed)."""
    target: dict[str, Any] = prop["items"] if items else prop
    for branch in target.get("anyOf", ()):
        if branch.get("type") == "string":
            string: dict[str, Any] = branch
            return string
    return target
