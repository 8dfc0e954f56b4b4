"""`arq.date_in`, whole-word quotes (`verbatim_in(..., whole_words=True)`), and repairs
narrowed to what their evidence lines mention."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import pytest
from pydantic import AfterValidator, Field, ValidationError

import arq
from arq.checks import AllowedValues, allowed_values, quoted
from arq.checks.dates import dates_in
from arq.checks.shape import StringShape
from arq.prompt import PromptBuilder, Request
from arq.repair import repair_request
from arq.validation import StepChecker

RECORD = "\n".join(
    [
        "Signed on: 2021/03/04",
        "Returned on: 2019.08.22",
        "Tenant: Maria Keller",
        "Landlord: Lea Holm",
        "Opened on: 4 March 2020",
    ]
)
NAME = r"^[A-Z][a-z]+ [A-Z][a-z]+$"

# --- dates_in --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("2021-03-04, 2021/3/4 and 2021.03.04", ["2021-03-04"]),
        ("March 4, 2021 / mar 4 2021 / 4th of March, 2021 / 4 Mar. 2021", ["2021-03-04"]),
        ("on 2019/08/22 then September 1st, 2020", ["2019-08-22", "2020-09-01"]),
        ("31/12/2020", ["2020-12-31"]),  # only one reading names a real day
        ("2021-02-30, 13/13/2020, 12/03/21, 12345-01-01, 2021-01-011", []),
    ],
)
def test_dates_are_read_in_every_common_form(text: str, found: list[str]) -> None:
    assert dates_in(text) == found


def test_a_numeric_date_with_the_year_last_reads_as_asked() -> None:
    assert dates_in("04/03/2021") == ["2021-04-03", "2021-03-04"]
    assert dates_in("04/03/2021", day_first=True) == ["2021-03-04"]
    assert dates_in("04/03/2021", day_first=False) == ["2021-04-03"]


# --- date_in ---------------------------------------------------------------------------


class Dated(arq.Reasoning):
    signed_on: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$"), arq.date_in("record")] = (
        arq.answer("The date it was signed, as YYYY-MM-DD.")
    )


class TypedDate(arq.Reasoning):
    opened_on: Annotated[date, arq.date_in("record")] = arq.answer("When was it opened?")


def test_date_in_accepts_a_date_the_context_writes_in_iso_form() -> None:
    context = {"record": RECORD}
    assert Dated.model_validate({"signed_on": "2019-08-22"}, context=context)
    assert TypedDate.model_validate({"opened_on": "2020-03-04"}, context=context)
    with pytest.raises(ValidationError, match=r"not a date written in the record.*2021-03-04"):
        Dated.model_validate({"signed_on": "2021-03-05"}, context=context)
    with pytest.raises(ValidationError, match="it gives no date"):
        Dated.model_validate({"signed_on": "2021-03-04"}, context={"record": "no dates"})
    with pytest.raises(arq.ContextError, match="date_in"):
        Dated.model_validate({"signed_on": "2021-03-04"}, context={})


def test_date_in_grounds_a_step_to_the_contexts_dates() -> None:
    request = PromptBuilder().build(Dated, {"record": RECORD})
    assert request.allowed == {
        "signed_on": AllowedValues(choices=("2021-03-04", "2019-08-22", "2020-03-04"), dates=True)
    }
    assert "signed_on" not in PromptBuilder().build(TypedDate, {"record": RECORD}).allowed


# --- whole words -----------------------------------------------------------------------


def test_quoted_whole_words_may_not_cut_a_word() -> None:
    text = "Landlord: Lea Holm; Lea Hol is not here"
    assert quoted("Lea Hol", text)
    assert quoted("Lea Hol", text, whole_words=True)  # its second place is whole
    assert not quoted("Lea Hol", "Landlord: Lea Holm", whole_words=True)
    assert not quoted("ndlord", text, whole_words=True)
    assert quoted(": Lea", text, whole_words=True)  # punctuation is no word
    assert not quoted("", text)


class Named(arq.Reasoning):
    landlord: Annotated[str, Field(pattern=NAME), arq.verbatim_in("record", whole_words=True)] = (
        arq.answer("The landlord's name, copied from the record.")
    )


def test_verbatim_in_whole_words_refuses_a_cut_name() -> None:
    context = {"record": RECORD}
    assert Named.model_validate({"landlord": "Lea Holm"}, context=context)
    with pytest.raises(ValidationError, match=r"not quoted word for word .*\(whole words\)"):
        Named.model_validate({"landlord": "Lea Hol"}, context=context)


def test_whole_word_grounding_lists_only_whole_quotes() -> None:
    shape = StringShape(NAME)
    assert shape.quotes("Landlord: Lea Holm", whole_words=True) == ("Lea Holm",)
    assert "Lea Hol" in (shape.quotes("Landlord: Lea Holm") or ())
    found = allowed_values(
        Named.model_fields, {"record": RECORD}, arq.json_schema(Named)["properties"]
    )
    # across a line end: "Keller Landlord" is whole words, as the check (whitespace
    # normalised) allows it
    assert found == {
        "landlord": AllowedValues(
            choices=("Maria Keller", "Keller Landlord", "Lea Holm", "Holm Opened")
        )
    }


# --- repairs narrowed to their evidence --------------------------------------------------


def _on_landlord_line(value: str) -> str:
    if value != "Lea Holm":
        raise ValueError("that is not the name on the record's 'Landlord' line")
    return value


def _on_signed_line(value: str) -> str:
    if value != "2021-03-04":
        raise ValueError("that is not the date on the record's 'Signed on' line")
    return value


class Form(arq.Reasoning):
    landlord: Annotated[
        str, Field(pattern=NAME), arq.verbatim_in("record"), AfterValidator(_on_landlord_line)
    ] = arq.query("The landlord's name, copied from the record.")
    signed_on: Annotated[str, arq.date_in("record"), AfterValidator(_on_signed_line)] = arq.answer(
        "The date it was signed, as YYYY-MM-DD."
    )


def failed_repair(step: str, value: str, accepted: dict[str, str]) -> Request:
    context = {"record": RECORD}
    request = PromptBuilder().build(Form, context)
    checker = StepChecker(Form, context=context)
    for name, kept in accepted.items():
        checker.accept(name, kept)
    with pytest.raises(arq.StepError) as failure:
        checker.accept(step, value)
    return repair_request(
        PromptBuilder(),
        request,
        accepted=accepted,
        failure=failure.value,
        context=context,
        prefill=True,
    )


def test_a_repair_holds_its_step_to_what_its_evidence_lines_mention() -> None:
    repair = failed_repair("landlord", "Maria Keller", {})
    assert "Landlord: Lea Holm" in repair.messages[-1]["content"]
    assert repair.allowed["landlord"] == AllowedValues(choices=("Lea Holm",))
    assert repair.allowed["signed_on"].choices == ("2021-03-04", "2019-08-22", "2020-03-04")
    dated = failed_repair("signed_on", "2020-03-04", {"landlord": "Lea Holm"})
    # the line writes 2021/03/04: the date is found in it by reading its dates
    assert dated.allowed["signed_on"] == AllowedValues(choices=("2021-03-04",), dates=True)


def test_lines_that_mention_no_choice_leave_the_choices_as_they_were() -> None:
    held = AllowedValues(choices=("A-1", "B-2"))
    assert held.mentioned_in(["Route: north"]) == held
    assert held.mentioned_in([]) == held
    assert held.mentioned_in(["Depot id: B-2", "B-22"]) == AllowedValues(choices=("B-2",))
    assert held.mentioned_in(["AB-2"]) == held  # whole words: "B-2" is not in "AB-2"
    source = AllowedValues(source=RECORD)
    assert source.mentioned_in(["Route: north"]) == source  # not a line of the source


def test_a_repair_quotes_from_the_source_lines_its_evidence_quotes() -> None:
    source = AllowedValues(source=RECORD, whole_words=True)
    line = next(line for line in RECORD.splitlines() if line.strip())
    narrowed = source.mentioned_in([line, "Route: north"])
    assert narrowed == AllowedValues(source=line, whole_words=True)
    assert narrowed.quoted_text is not None
    assert narrowed.quoted_text in (source.quoted_text or "")
