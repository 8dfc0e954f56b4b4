"""A string step's pattern and lengths narrow what grounding holds it to (`arq.checks.shape`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

import arq
from arq.checks import AllowedValues, allowed_values
from arq.checks.shape import MAX_QUOTES, MAX_TRIES, StringShape
from arq.prompt import PromptBuilder
from arq.repair import repair_request

NAME = r"^[A-Z][a-z]+ [A-Z][a-z]+$"
RECORD = "Signed on: 2021/03/04\nTenant: Ann Lee\nClerk: Bo Ek"


def test_a_shape_is_read_from_a_property_schema() -> None:
    assert StringShape.of(None) is None
    assert StringShape.of({"type": "string"}) is None  # nothing to narrow by
    assert StringShape.of({"pattern": "(("}) is None  # does not compile: left to the check
    shape = StringShape.of({"pattern": "^A", "minLength": 2, "maxLength": 3})
    assert shape is not None
    assert [shape.fits(v) for v in ("A", "Ab", "Abc", "Abcd", "bA")] == [
        False, True, True, False, False,
    ]  # fmt: skip


def test_a_pattern_is_a_search_as_pydantic_checks_it() -> None:
    shape = StringShape.of({"pattern": "[0-9]"})
    assert shape is not None
    assert shape.fits("a1b")
    assert not shape.fits("ab")
    anchored = StringShape.of({"pattern": "^[0-9]+$"})
    assert anchored is not None
    assert not anchored.fits("12\n")  # `$` is the very end


def test_quotes_that_fit_are_listed_in_order_of_first_appearance() -> None:
    shape = StringShape.of({"pattern": NAME})
    assert shape is not None
    text = "Signed on: 2021 Ann Lee, Bo Ek; Ann Lee"
    # every quote the check would pass, prefixes included; "Signed on" never fits
    assert shape.quotes(text) == ("Ann Le", "Ann Lee", "Bo Ek")
    assert shape.quotes("nobody here") == ()


def test_blank_and_padded_quotes_are_left_out_when_the_bare_quote_fits() -> None:
    short = StringShape.of({"maxLength": 3})
    assert short is not None
    assert short.quotes("a  b") == ("a", "b")
    spaced = StringShape.of({"pattern": "^ [a-z]$"})  # only a padded value fits: it is kept
    assert spaced is not None
    assert spaced.quotes("a b") == (" b",)


def test_a_pattern_python_reads_otherwise_is_searched_without_a_bound() -> None:
    # a POSIX class: pydantic-core reads [[:alpha:]] as one letter, Python as a nested set
    shape = StringShape.of({"pattern": "^[[:alpha:]]{3}$"})
    assert shape is not None
    assert shape.quotes("xyz 12 abc") == ("xyz", "abc")


def test_lengths_alone_narrow_the_quotes() -> None:
    shape = StringShape.of({"minLength": 5})
    assert shape is not None
    assert shape.quotes("abcdef") == ("abcde", "abcdef", "bcdef")


def test_too_many_quotes_or_too_costly_a_search_gives_none() -> None:
    short = StringShape.of({"maxLength": 3})
    assert short is not None
    assert short.quotes("abcdef")[:4] == ("a", "ab", "abc", "b")  # type: ignore[index]
    assert short.quotes("".join(chr(0x4E00 + i) for i in range(MAX_QUOTES))) is None
    unbounded = StringShape.of({"pattern": "x"})
    assert unbounded is not None
    assert unbounded.quotes("x" * (int(MAX_TRIES**0.5) + 2)) is None


class Form(arq.Reasoning):
    """Fill in the form."""

    tenant: Annotated[str, Field(pattern=NAME), arq.verbatim_in("record")] = arq.query("Tenant?")
    code: Annotated[str, Field(pattern=r"^[A-Z]-\d$"), arq.one_of("codes")] = arq.query("Code?")
    note: Annotated[str, arq.verbatim_in("record")] = arq.answer("A note.")


CONTEXT = {"record": RECORD, "codes": ["A-1", "b-2", "C-33", "D-4"]}
# the record's whitespace runs are one space, as the check compares them: a quote may
# run across a line end ("Lee Clerk")
TENANTS = ("Ann Le", "Ann Lee", "Lee Cl", "Lee Cle", "Lee Cler", "Lee Clerk", "Bo Ek")


def test_grounding_keeps_only_the_values_the_pattern_allows() -> None:
    properties = arq.json_schema(Form)["properties"]
    found = allowed_values(Form.model_fields, CONTEXT, properties)
    assert found == {
        "tenant": AllowedValues(choices=TENANTS),
        "code": AllowedValues(choices=("A-1", "D-4")),
        "note": AllowedValues(source=RECORD),  # no pattern: any quote
    }
    assert allowed_values(Form.model_fields, CONTEXT)["tenant"] == AllowedValues(source=RECORD)
    # nothing in the record fits: no value can pass, nothing is held
    assert "tenant" not in allowed_values(Form.model_fields, {"record": "none"}, properties)


class Exact(arq.Reasoning):
    """Quote and pick exactly."""

    line: Annotated[
        str,
        Field(pattern=r"^[A-Z][a-z]+\n[A-Z][a-z]+$"),
        arq.verbatim_in("record", normalize_whitespace=False),
    ] = arq.query("Which lines?")
    code: Annotated[
        str, Field(pattern=r"^[A-Z]-\d$"), arq.one_of("codes"), arq.verbatim_in("record")
    ] = arq.answer("Which code?")


def test_an_exact_quote_keeps_line_ends_and_both_checks_and_a_pattern_combine() -> None:
    context = {"record": "Ann Lee\nBo Ek took A-1", "codes": ["A-1", "B-2", "C-33"]}
    found = allowed_values(Exact.model_fields, context, arq.json_schema(Exact)["properties"])
    assert found == {
        "line": AllowedValues(choices=("Lee\nBo",)),  # the line end kept
        "code": AllowedValues(choices=("A-1",)),  # quoted from the record and fitting
    }


def test_requests_hold_a_patterned_quote_to_its_fitting_quotes_and_repairs_drop_refused() -> None:
    request = PromptBuilder().build(Form, CONTEXT)
    assert request.allowed["tenant"] == AllowedValues(choices=TENANTS)
    repair = repair_request(
        PromptBuilder(), request, accepted={}, failure=None, rejected=['"Bo Ek"']
    )
    assert repair.allowed["tenant"] == AllowedValues(choices=TENANTS[:-1])
