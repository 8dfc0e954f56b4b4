"""The context lines a repair turn quotes for its failing step."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

import arq
from arq.repair import MAX_LINE, evidence, repair_request
from arq.validation import StepChecker

RECORD = "\n".join(
    [
        "Signed on: 2021/03/04",
        "Returned on: 2019/08/22",
        "Tenant: Maria Keller",
        "Opened on: 2020.01.02",
    ]
)


def test_the_line_sharing_the_rarest_words_is_quoted() -> None:
    query = "The date it was returned, as YYYY-MM-DD: that is not the date on the record's line"
    assert evidence({"record": RECORD}, query) == ["Returned on: 2019/08/22"]


def test_a_lone_letter_is_not_a_word_that_chooses_a_line() -> None:
    record = "Lot: S-769\nReturned on: 2019/08/22\nTenant: Maria Keller"
    query = "The date it was returned: that is not the date on the record's line"
    assert evidence({"record": record}, query) == ["Returned on: 2019/08/22"]
    assert evidence({"record": "Unit 7 of 9\nFloor: 3"}, "unit 7") == ["Unit 7 of 9"]


def test_words_common_to_every_line_do_not_choose_one() -> None:
    context = {"a": "the cat\nthe dog"}
    assert evidence(context, "the") == ["the cat", "the dog"]  # a tie: both, in order
    assert evidence(context, "the", limit=1) == ["the cat"]
    assert evidence(context, "dog the") == ["the dog"]


def test_words_of_the_refused_value_are_left_out() -> None:
    query = "'Maria Keller' is not the signed name"
    both = ["Signed on: 2021/03/04", "Tenant: Maria Keller"]  # the name's line scores best
    assert evidence({"record": RECORD}, query) == both
    assert evidence({"record": RECORD}, query, leave_out=['"Maria Keller"']) == [
        "Signed on: 2021/03/04"
    ]


def test_nothing_is_quoted_without_a_context_or_a_shared_word() -> None:
    assert evidence(None, "returned") == []
    assert evidence({}, "returned") == []
    assert evidence({"record": RECORD}, "weight in kg") == []
    assert evidence({"record": RECORD}, "returned", limit=0) == []


def test_every_context_value_is_searched_and_long_lines_are_cut() -> None:
    context = {"ids": ["A-1", "B-2"], "notes": "x " * 200 + "returned"}
    assert evidence(context, "b 2") == ['"B-2"']  # a list is rendered as JSON, one item a line
    (line,) = evidence(context, "returned")
    assert len(line) == MAX_LINE
    assert line.endswith("…")


def _on_returned_line(value: str, info: object) -> str:
    raise ValueError("that is not the date on the record's 'Returned on' line")


class Form(arq.Reasoning):
    tenant: str = arq.query("The tenant's name.")
    returned_on: Annotated[str, AfterValidator(_on_returned_line)] = arq.answer(
        "The date it was returned, as YYYY-MM-DD."
    )


def test_a_repair_turn_quotes_the_lines_its_step_needs() -> None:
    builder = arq.PromptBuilder()
    context = {"record": RECORD}
    request = builder.build(Form, context)
    checker = StepChecker(Form, context=context)
    checker.accept("tenant", "Maria Keller")
    try:
        checker.accept("returned_on", "2021-03-04")
    except arq.StepError as error:
        failure = error
    repair = repair_request(
        builder, request, accepted={"tenant": "Maria Keller"}, failure=failure, context=context
    )
    turn = repair.messages[-1]["content"]
    assert 'From the input, for "returned_on":\nReturned on: 2019/08/22\n' in turn
    # the refused value's words ("2021", "03", "04") do not pull in the line it came from
    assert "Signed on" not in turn.split("From the input")[1]
    without = repair_request(builder, request, accepted={"tenant": "Maria Keller"}, failure=failure)
    assert "From the input" not in without.messages[-1]["content"]
