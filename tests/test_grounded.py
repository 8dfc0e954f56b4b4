"""Grounded decoding: string steps held to their context checks, on a toy vocabulary."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

import arq
from arq.backends.llamacpp.grounded import PENALTY, Grounded
from arq.backends.llamacpp.tokens import TokenTable
from arq.checks import AllowedValues, allowed_values
from arq.prompt import PromptBuilder
from arq.repair import repair_request

np = pytest.importorskip("numpy")

PIECES = [
    b"{", b'{"', b"who", b"code", b'":', b" ", b' "', b'"', b'",', b'"}', b"}", b",",
    b"Ann", b"Bo", b" Bo", b"Bob", b"Lee", b" Lee", b"Zed", b"Ann Lee", b'Ann Lee"',
    b"A", b"B", b"-", b"1", b"2", b"A-1", b'"A-1"', b' "A', b' "Z', b"\\", b'\\"', b"x",
    b"met", b" met", b"  Bob", b'": "A', b'": "B', b':",', b":", b"[", b"]", b'"x"', b" ",
    b"n", b"\\n",
]  # fmt: skip
ID = {piece: i for i, piece in enumerate(PIECES)}
PROMPT = [ID[b"x"], ID[b"x"]]  # whatever the prompt holds is not the answer
HELD = {
    "who": AllowedValues(source="Ann Lee met\n  Bob"),
    "code": AllowedValues(choices=("A-1", "B-2")),
}


def allowed_after(
    *answer: bytes, held: dict[str, AllowedValues] = HELD, inside: bool = False
) -> set[bytes]:
    """The tokens left unpenalized after `answer`, every logit starting at 0."""
    processor = Grounded(TokenTable(PIECES), held, start=len(PROMPT), inside_object=inside)
    ids = np.array(PROMPT + [ID[piece] for piece in answer])
    out = processor(ids, np.zeros(len(PIECES), dtype=np.float32))
    assert set(np.unique(out)) <= {0.0, -PENALTY}
    return {piece for i, piece in enumerate(PIECES) if out[i] == 0}


EVERY = set(PIECES)


def test_nothing_is_held_outside_a_grounded_value() -> None:
    assert allowed_after() == EVERY  # before the object
    assert allowed_after(b'{"', b"who", b'":', b' "', b"Ann", b'",') == EVERY


def test_a_quote_continues_only_with_what_follows_in_the_source() -> None:
    found = allowed_after(b'{"', b"who", b'":', b' "', b"Ann")
    assert {b" Lee", b'"', b'",', b'"}'} <= found  # on in the source, or the quote ends
    assert not found & {b" Bo", b"Zed", b"Bob", b"Lee", b"\\"}


def test_whitespace_runs_of_the_source_are_one_space() -> None:
    assert HELD["who"].quoted_text == "Ann Lee met Bob"
    found = allowed_after(b'{"', b"who", b'":', b' "', b"met")
    assert b" Bo" in found
    assert b"  Bob" not in found


def test_an_empty_quote_cannot_end_and_the_first_token_is_any_part_of_the_source() -> None:
    found = allowed_after(b'{"', b"who", b'":', b' "')
    assert {b"Ann", b"Ann Lee", b'Ann Lee"', b"Bob", b"Bo", b" Lee", b"Lee", b"A", b"B"} <= found
    assert not found & {b'"', b'",', b"Zed", b"\\"}


def test_choices_continue_only_along_a_listed_value() -> None:
    start = (b'{"', b"who", b'":', b' "', b"Bob", b'",', b'"', b"code", b'":', b' "')
    assert allowed_after(*start) & {b"A", b"A-1", b'"A-1"', b"B", b"Zed", b'"'} == {
        b"A",
        b"A-1",
        b"B",
    }
    found = allowed_after(*start, b"A-1")
    assert found & {b'"', b'",', b'"}', b"1", b"-"} == {b'"', b'",', b'"}'}


def test_a_token_that_opens_the_value_is_held_too() -> None:
    before = (b'{"', b"who", b'":', b' "', b"Bob", b'",', b'"', b"code", b'":')
    found = allowed_after(*before)
    assert b' "A' in found
    assert b' "Z' not in found
    assert b'"A-1"' in found
    assert b"Zed" in found  # no quote: not a string, the grammar rules it out


def test_a_token_that_closes_the_key_and_opens_the_value_is_held() -> None:
    found = allowed_after(b'{"', b"code", held={"code": AllowedValues(choices=("B-2",))})
    assert {b'":', b'": "B'} <= found
    assert b'": "A' not in found


def test_a_continued_object_starts_inside_it() -> None:
    found = allowed_after(b'"', b"code", b'":', b' "', held=HELD, inside=True)
    assert b"A" in found
    assert b"Zed" not in found
    # without inside_object the same text is a key at the wrong depth: not held
    assert allowed_after(b'"', b"code", b'":', b' "') == EVERY


def test_escapes_are_compared_as_written() -> None:
    held = {"who": AllowedValues(source='say "hi"')}
    found = allowed_after(b'{"', b"who", b'":', b' "', held=held)
    assert b'\\"' in found
    assert b"Zed" not in found


def test_an_unknown_value_is_not_held_once_it_is_off() -> None:
    # the grammar can force a token the processor pushed down; it then lets go
    assert allowed_after(b'{"', b"who", b'":', b' "', b"Zed") == EVERY


class Form(arq.Reasoning):
    who: Annotated[str, arq.verbatim_in("notes")] = arq.query("Who?")
    code: Annotated[str, arq.one_of("codes")] = arq.query("Which code?")
    both: Annotated[str, arq.one_of("codes"), arq.verbatim_in("notes")] = arq.query("Both?")
    many: Annotated[list[str], arq.one_of("codes")] = arq.query("Which codes?")
    maybe: Annotated[str, arq.one_of("codes")] | None = arq.query("A code, if any?")
    either: Annotated[str, arq.one_of("codes")] | int = arq.query("A code or a number?")
    plain: str = arq.answer("Anything.")


def test_grounding_follows_the_checks_and_the_context() -> None:
    context = {"notes": "Ann Lee took B-2", "codes": ["A-1", "B-2", "A-1"]}
    found = allowed_values(Form.model_fields, context)
    assert found == {
        "who": AllowedValues(source="Ann Lee took B-2"),
        "code": AllowedValues(choices=("A-1", "B-2")),
        "both": AllowedValues(choices=("B-2",)),  # the choices quoted from the notes
        "maybe": AllowedValues(choices=("A-1", "B-2")),  # its string; null is the grammar's
        "many": AllowedValues(choices=("A-1", "B-2"), items=True),  # each of its strings
    }
    assert allowed_values(Form.model_fields, {"codes": ["A-1"]}) == {
        "code": AllowedValues(choices=("A-1",)),
        "both": AllowedValues(choices=("A-1",)),
        "maybe": AllowedValues(choices=("A-1",)),
        "many": AllowedValues(choices=("A-1",), items=True),
    }
    assert allowed_values(Form.model_fields, None) == {}
    # no choice is quoted from the notes, or there is none: nothing can pass, nothing held
    assert allowed_values(Form.model_fields, {"notes": "nobody", "codes": ["A-1", ""]}) == {
        "who": AllowedValues(source="nobody"),
        "code": AllowedValues(choices=("A-1", "")),
        "maybe": AllowedValues(choices=("A-1", "")),
        "many": AllowedValues(choices=("A-1", ""), items=True),
    }
    assert allowed_values(Form.model_fields, {"codes": []}) == {}


def test_a_grounding_has_choices_or_a_source() -> None:
    with pytest.raises(ValueError, match="choices, a source or fields"):
        AllowedValues()
    with pytest.raises(ValueError, match="choices, a source or fields"):
        AllowedValues(choices=("a",), source="a")
    assert AllowedValues(choices=("a", "b")).without(["a"]) == AllowedValues(choices=("b",))
    assert AllowedValues(choices=("a",)).without(["a"]) is None
    assert AllowedValues(source="a b").without(["a"]) == AllowedValues(source="a b")


def test_requests_carry_the_grounding_and_repairs_drop_refused_choices() -> None:
    context = {"notes": "Ann Lee took B-2", "codes": ["A-1", "B-2"]}
    request = PromptBuilder().build(Form, context)
    assert set(request.allowed) == {"who", "code", "both", "maybe", "many"}
    assert "allowed" not in request.to_dict()  # it follows from the schema and context
    repair = repair_request(
        PromptBuilder(),
        request,
        accepted={"who": "Ann Lee"},
        failure=None,
        prefill=True,
        rejected=['"A-1"'],
    )
    assert repair.allowed == {
        "code": AllowedValues(choices=("B-2",)),
        "both": AllowedValues(choices=("B-2",)),
        "maybe": AllowedValues(choices=("A-1", "B-2")),  # "A-1" was rejected for "code" alone
        "many": AllowedValues(choices=("A-1", "B-2"), items=True),
    }
    every = repair_request(
        PromptBuilder(),
        request,
        accepted={"who": "Ann Lee"},
        failure=None,
        rejected=['"A-1"', '"B-2"'],
    )
    assert "code" not in every.allowed  # nothing left to offer: only the check holds it


def test_an_optional_string_is_held_once_it_opens_and_null_stays_open() -> None:
    class Maybe(arq.Reasoning):
        code: Annotated[str, Field(pattern=r"^[A-Z]-[0-9]$"), arq.one_of("codes")] | None = (
            arq.answer("Which code?")
        )

    context = {"codes": ["A-1", "B-2", "C-33"]}
    request = PromptBuilder().build(Maybe, context)
    # the string branch's pattern narrows the choices, as for a plain string step
    assert request.allowed == {"code": AllowedValues(choices=("A-1", "B-2"))}
    held = dict(request.allowed)
    assert b"n" in allowed_after(b'{"', b"code", b'":', b" ", held=held)  # null is no string
    assert allowed_after(b'{"', b"code", b'":', b' "', held=held) >= {b"A", b"B", b"A-1"}
    assert b"Zed" not in allowed_after(b'{"', b"code", b'":', b' "', held=held)


def test_a_token_between_the_key_and_the_colon_cannot_open_the_value_off_its_choices() -> None:
    found = allowed_after(b'{"', b"code", b'"')
    assert b":" in found
    assert b':",' not in found  # it would open the value with "," already written


def test_strings_below_the_top_level_are_not_held() -> None:
    held = {"who": AllowedValues(choices=("B-2",))}
    # a key "who" inside a nested object, and a string in a list inside a list
    assert (
        allowed_after(b'{"', b"code", b'":', b"{", b'"', b"who", b'":', b' "', held=held) == EVERY
    )
    assert allowed_after(b'{"', b"who", b'":', b"[", b"[", b'"', held=held) == EVERY
    # back at the top level, the next grounded value is held again
    after = (b'{"', b"code", b'":', b"[", b'"x"', b"]", b",", b'"', b"who", b'":', b' "')
    assert b"Zed" not in allowed_after(*after, held=held)


def test_each_string_of_a_list_step_is_held() -> None:
    held = {"code": AllowedValues(choices=("A-1", "B-2"), items=True)}
    start = (b'{"', b"code", b'":', b" ", b"[")
    assert allowed_after(*start, b'"', held=held) == {b"A", b"B", b"A-1"}
    # an item may open only on the way to a choice; another may follow a closed one
    assert b' "Z' not in allowed_after(*start, held=held)
    assert b'"A-1"' in allowed_after(*start, held=held)
    assert b'"x"' not in allowed_after(*start, b'"A-1"', b",", held=held)
    assert allowed_after(*start, b'"A-1"', b",", b' "', held=held) == {b"A", b"B", b"A-1"}
    # after the list, the next step is free again
    assert allowed_after(*start, b'"A-1"', b"]", b",", b'"', b"who", b'":', held=held) == EVERY


CODE_FIELD = (("code", AllowedValues(choices=("A-1", "B-2"))),)


@pytest.mark.parametrize("items", [True, False], ids=["list of objects", "object"])
def test_a_held_field_of_a_steps_objects_is_held(items: bool) -> None:
    held = {"who": AllowedValues(fields=CODE_FIELD, items=items)}
    start = (b'{"', b"who", b'":') + ((b"[",) if items else ())
    assert allowed_after(*start, b'{"', b"code", b'":', b' "', held=held) == {b"A", b"B", b"A-1"}
    assert b' "Z' not in allowed_after(*start, b'{"', b"code", b'":', held=held)
    assert b' "A' in allowed_after(*start, b'{"', b"code", b'":', held=held)
    # another field, the step's own value, and anything deeper are not held
    assert allowed_after(*start, b'{"', b"who", b'":', b' "', held=held) == EVERY
    assert allowed_after(*start, b'{"', b"code", b'":', b"[", b'"', held=held) == EVERY


def test_the_next_object_of_a_list_is_held_again() -> None:
    held = {"who": AllowedValues(fields=CODE_FIELD, items=True)}
    first = (b'{"', b"who", b'":', b"[", b'{"', b"code", b'":', b' "', b"A-1", b'"}', b",")
    assert allowed_after(*first, b'{"', b"code", b'":', b' "', held=held) == {b"A", b"B", b"A-1"}
    assert allowed_after(*first, b'{"', b"code", b'":', b' "', b"B", held=held) == {b"-"}


class Argument(arq.Reasoning):
    name: str = arq.query("Which argument?")
    value: Annotated[str, arq.verbatim_in("notes")] | None = arq.answer("Its value?")
    deeper: Form = arq.answer("More?")


class WithObjects(arq.Reasoning):
    arguments: list[Argument] = arq.query("Which arguments?")
    main: Argument = arq.query("The main one?")
    loose: list[dict[str, str]] = arq.answer("Anything.")


def test_grounding_reaches_one_level_into_objects() -> None:
    found = allowed_values(WithObjects.model_fields, {"notes": "Ann Lee", "codes": ["A-1"]})
    value = (("value", AllowedValues(source="Ann Lee")),)  # not the deeper object's fields
    assert found == {
        "arguments": AllowedValues(fields=value, items=True),
        "main": AllowedValues(fields=value),
    }
    assert allowed_values(WithObjects.model_fields, {"codes": ["A-1"]}) == {}


class Thread(BaseModel):
    quote: Annotated[str, arq.verbatim_in("notes")]
    replies: list[Thread] = []


class Threads(arq.Reasoning):
    thread: Thread = arq.answer("Which thread?")


def test_grounding_of_a_recursive_model_stops_one_level_in() -> None:
    found = allowed_values(Threads.model_fields, {"notes": "Ann Lee"})
    assert found == {"thread": AllowedValues(fields=(("quote", AllowedValues(source="Ann Lee")),))}


def test_an_evidence_line_does_not_narrow_a_list() -> None:
    listed = AllowedValues(choices=("A-1", "B-2"), items=True)
    assert listed.mentioned_in(["only A-1 here"]) == listed
    single = AllowedValues(choices=("A-1", "B-2"))
    assert single.mentioned_in(["only A-1 here"]) == AllowedValues(choices=("A-1",))


def test_escaped_quotes_in_an_earlier_value_do_not_end_it() -> None:
    answer = (b'{"', b"code", b'":', b' "', b'\\"', b'",', b'"', b"who", b'":', b' "')
    found = allowed_after(*answer)
    assert b"Ann" in found
    assert b"Zed" not in found


def test_a_quote_is_neither_blank_nor_begun_inside_an_escape() -> None:
    held = {"who": AllowedValues(source="a\nb c", normalize_whitespace=False)}
    found = allowed_after(b'{"', b"who", b'":', b' "', held=held)
    assert b"\\n" in found  # the newline, written as JSON writes it
    assert b"n" not in found  # the "n" of "\\n" is not a character of the source
    found = allowed_after(
        b'{"', b"who", b'":', b' "', b" ", held={"who": AllowedValues(source="Ann Lee")}
    )
    assert b'"' not in found  # a quote of only a space fails verbatim_in
    assert b"Lee" in found
