"""The grammar each request's answer is held to on the embedded model (llguidance).

The grammars are checked with llguidance itself over a byte-level vocabulary (one token per
byte, plus a few longer ones), so no model is needed: an answer the grammar takes is one
whose every token it allows, in order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

llguidance = pytest.importorskip("llguidance")

from arq.backends.llamacpp.constraint import FIRST_VALUE, request_grammar  # noqa: E402
from arq.checks import AllowedValues  # noqa: E402

LONGER = [b'{"', b'":', b' "', b'",', b"ab", b"abc", b"null"]
EOS = 256 + len(LONGER)


class _Bytes:
    """A vocabulary of every byte, a few longer tokens and an end token."""

    def __init__(self) -> None:
        self.eos_token_id = EOS
        self.bos_token_id = None
        self.special_token_ids = [EOS]
        self.tokens = [bytes([b]) for b in range(256)] + LONGER + [b"\xff<eos>"]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


TOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))


def matcher(grammar: str) -> Any:
    found = llguidance.LLMatcher(TOKENIZER, grammar, log_level=0)
    assert not found.is_error(), found.get_error()
    return found


def takes(grammar: str, text: str, *, complete: bool = True) -> bool:
    """Whether the grammar allows `text` (and, with `complete`, ends there)."""
    state = matcher(grammar)
    tokens = list(text.encode())
    if state.validate_tokens(tokens) != len(tokens):
        return False
    state.consume_tokens(tokens)
    return state.is_accepting() if complete else True


def schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def grammar(
    props: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    *,
    allowed: Mapping[str, AllowedValues] | None = None,
    rejected: Sequence[str] = (),
    continuation: bool = False,
    defs: Mapping[str, Any] | None = None,
) -> str:
    full = schema(**props)
    if defs:
        full["$defs"] = dict(defs)
    return request_grammar(
        full,
        list(keys if keys is not None else props),
        continuation=continuation,
        allowed=allowed,
        rejected=rejected,
    )


TEXT = {"type": "string"}


# --- the object: its steps in order ----------------------------------------------------------


def test_keys_come_once_each_in_step_order() -> None:
    g = grammar({"b": TEXT, "a": TEXT}, ["a", "b"])
    assert takes(g, '{"a": "x", "b": "y"}')
    assert takes(g, '{"a":"x",\n  "b": "y"}')
    assert not takes(g, '{"b": "y", "a": "x"}')
    assert not takes(g, '{"a": "x"}')
    assert not takes(g, '{"a": "x", "b": "y", "c": "z"}')


def test_a_continuation_starts_at_its_first_key() -> None:
    g = grammar({"a": TEXT, "b": TEXT}, ["b"], continuation=True)
    assert takes(g, '"b": "y"}')
    assert not takes(g, '{"b": "y"}')


def test_whitespace_between_tokens_is_bounded() -> None:
    g = grammar({"a": TEXT})
    assert takes(g, '{\n    "a": "x"\n}')
    assert not takes(g, '{"a":' + " " * 5 + '"x"}')
    assert not takes(g, "{" + "\n" * 3 + '"a": "x"}')


def test_a_key_not_in_the_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="mood"):
        grammar({"a": TEXT}, ["mood"])


def test_key_text_is_escaped() -> None:
    g = grammar({'say "hi"\\': TEXT})
    assert takes(g, '{"say \\"hi\\"\\\\": "x"}')


def test_the_first_value_is_captured() -> None:
    g = grammar({"a": {"type": "integer"}, "b": TEXT})
    state = matcher(g)
    state.consume_tokens(list(b'{"a": 12'))
    assert state.get_capture(FIRST_VALUE) is None
    state.consume_tokens(list(b', "b"'))
    assert state.get_capture(FIRST_VALUE) == b"12"


# --- values: each step's JSON Schema ---------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "good", "bad"),
    [
        ({"enum": ["reply", "escalate"]}, '"reply"', '"maybe"'),
        ({"const": "x"}, '"x"', '"y"'),
        ({"type": "integer", "minimum": 1, "maximum": 12}, "12", "13"),
        ({"type": "integer", "exclusiveMinimum": 0}, "3", "0"),
        ({"type": "number", "maximum": 2.5}, "2.5", "2.6"),
        ({"type": "boolean"}, "true", '"true"'),
        ({"type": "string", "maxLength": 3}, '"abc"', '"abcd"'),
        ({"type": "string", "minLength": 2}, '"ab"', '"a"'),
        ({"type": "string", "pattern": r"^R-\d{4}$"}, '"R-1234"', '"R-123"'),
        ({"type": "string", "format": "date"}, '"2021-03-04"', '"March 4"'),
        ({"type": "array", "items": TEXT, "maxItems": 2}, '["a", "b"]', '["a", "b", "c"]'),
        ({"type": "array", "items": TEXT, "minItems": 1}, '["a"]', "[]"),
        ({"anyOf": [TEXT, {"type": "null"}]}, "null", "1"),
        ({"type": "string"}, '"a\\nb"', '"a\nb"'),  # no raw control characters
    ],
)
def test_values_follow_their_schema(prop: dict[str, Any], good: str, bad: str) -> None:
    g = grammar({"v": prop})
    assert takes(g, f'{{"v": {good}}}')
    assert not takes(g, f'{{"v": {bad}}}')


def test_referenced_models_are_followed() -> None:
    item = {
        "type": "object",
        "properties": {"id": {"enum": ["refund", "damaged"]}, "applies": {"type": "boolean"}},
        "required": ["id", "applies"],
    }
    prop = {"type": "array", "items": {"$ref": "#/$defs/Check"}}
    g = grammar({"checks": prop}, defs={"Check": item})
    assert takes(g, '{"checks": [{"id": "refund", "applies": true}]}')
    assert not takes(g, '{"checks": [{"id": "other", "applies": true}]}')


def test_objects_take_only_the_properties_they_list() -> None:
    item = {"type": "object", "properties": {"id": TEXT}, "required": ["id"]}
    g = grammar({"v": {"type": "array", "items": {"$ref": "#/$defs/Item"}}}, defs={"Item": item})
    assert takes(g, '{"v": [{"id": "a"}]}')
    assert not takes(g, '{"v": [{"id": "a", "type": "b"}]}')
    open_item = {**item, "additionalProperties": True}
    g = grammar({"v": open_item})
    assert takes(g, '{"v": {"id": "a", "type": "b"}}')  # unless the schema allows them


def test_patterns_can_be_left_out() -> None:
    props = {"v": {"type": "string", "pattern": "^a$"}}
    g = request_grammar(schema(**props), ["v"], continuation=False, patterns=False)
    assert takes(g, '{"v": "b"}')


# --- grounding: choices and quotes -----------------------------------------------------------

SOURCE = 'Tenant: Maria Keller. Permit id: F-478. She said "hi".'


def test_a_step_held_to_choices_takes_one_of_them() -> None:
    held = {"v": AllowedValues(choices=("F-478", "G-1"))}
    g = grammar({"v": TEXT}, allowed=held)
    assert takes(g, '{"v": "G-1"}')
    assert not takes(g, '{"v": "G-2"}')
    nullable = grammar({"v": {"anyOf": [TEXT, {"type": "null"}]}}, allowed=held)
    assert takes(nullable, '{"v": null}')
    assert not takes(nullable, '{"v": "F-47"}')


def test_a_list_held_to_choices_holds_each_item() -> None:
    held = {"v": AllowedValues(choices=("a", "b"), items=True)}
    g = grammar({"v": {"type": "array", "items": TEXT, "maxItems": 2}}, allowed=held)
    assert takes(g, '{"v": ["a", "b"]}')
    assert not takes(g, '{"v": ["a", "c"]}')
    assert not takes(g, '{"v": ["a", "b", "a"]}')


def test_a_quote_is_any_part_of_its_source_and_not_blank() -> None:
    g = grammar({"v": TEXT}, allowed={"v": AllowedValues(source=SOURCE)})
    assert takes(g, '{"v": "Maria Keller"}')
    assert takes(g, '{"v": "ria Kel"}')
    assert not takes(g, '{"v": "Maria Kellerman"}')
    assert not takes(g, '{"v": " "}')
    assert not takes(g, '{"v": ""}')
    assert takes(g, '{"v": "hi"}')
    assert not takes(g, '{"v": "said \\"hi"}')  # a quote does not cross a character escaped


def test_a_quote_is_held_to_its_steps_pattern_and_length() -> None:
    named = {"type": "string", "pattern": r"^[A-Z][a-z]+ [A-Z][a-z]+$"}
    g = grammar({"v": named}, allowed={"v": AllowedValues(source=SOURCE)})
    assert takes(g, '{"v": "Maria Keller"}')
    assert not takes(g, '{"v": "Tenant: Maria"}')
    short = grammar(
        {"v": {"type": "string", "maxLength": 5}}, allowed={"v": AllowedValues(source=SOURCE)}
    )
    assert takes(short, '{"v": "Maria"}')
    assert not takes(short, '{"v": "Maria Keller"}')


def test_whole_word_quotes_start_and_end_on_words() -> None:
    held = {"v": AllowedValues(source=SOURCE, whole_words=True)}
    g = grammar({"v": TEXT}, allowed=held)
    assert takes(g, '{"v": "Maria Keller"}')
    assert not takes(g, '{"v": "ria Keller"}')


def test_the_fields_of_a_held_object_are_held() -> None:
    item = {
        "type": "object",
        "properties": {"name": TEXT, "note": TEXT},
        "required": ["name", "note"],
    }
    held = {"people": AllowedValues(fields=(("name", AllowedValues(source=SOURCE)),), items=True)}
    g = grammar({"people": {"type": "array", "items": item}}, allowed=held)
    assert takes(g, '{"people": [{"name": "Maria", "note": "anything"}]}')
    assert not takes(g, '{"people": [{"name": "Mario", "note": "anything"}]}')


# --- a repair's first value: kept off the values it had rejected -----------------------------


@pytest.mark.parametrize(
    ("prop", "rejected", "refused", "taken"),
    [
        (TEXT, '"R-773"', '"R-773"', '"R-7731"'),
        ({"type": "string", "pattern": r"^R-\d+$"}, '"R-773"', '"R-773"', '"R-774"'),
        ({"type": "integer"}, "12", "12", "123"),
        ({"type": "number"}, "2.5", "2.5", "2.25"),
        ({"type": "boolean"}, "true", "true", "false"),
        ({"enum": ["a", "b", "c"]}, '"a"', '"a"', '"b"'),
        ({"anyOf": [TEXT, {"type": "null"}]}, "null", "null", '"x"'),
    ],
)
def test_a_repair_does_not_write_a_rejected_value_again(
    prop: dict[str, Any], rejected: str, refused: str, taken: str
) -> None:
    g = grammar({"v": prop, "w": TEXT}, rejected=[rejected])
    assert not takes(g, f'{{"v": {refused}, "w": "x"}}')
    assert takes(g, f'{{"v": {taken}, "w": "x"}}')
    later = grammar({"w": TEXT, "v": prop}, rejected=[rejected])  # only the first step
    assert takes(later, f'{{"w": "x", "v": {refused}}}')


def test_a_quote_is_kept_off_its_rejected_quotes() -> None:
    held = {"v": AllowedValues(source=SOURCE)}
    g = grammar({"v": TEXT}, allowed=held, rejected=[json.dumps("Maria")])
    assert not takes(g, '{"v": "Maria"}')
    assert takes(g, '{"v": "Maria Keller"}')
