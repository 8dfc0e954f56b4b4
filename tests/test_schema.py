"""Reasoning schemas: definition rules, the ordered step view, strategies and checklists."""

from __future__ import annotations

import gc
import weakref
from typing import Any, Literal, get_args

import pytest
from pydantic import BaseModel, Field, ValidationError

from arq.checks import check
from arq.errors import SchemaError
from arq.jsonschema import json_schema
from arq.schema import Reasoning, answer, checklist, cot, cross_checks, direct, query, steps
from tests.schemas import GuidelineCheck, SupportReply


def test_steps_follow_field_order_with_questions_and_instructions() -> None:
    view = steps(SupportReply)
    assert [s.name for s in view] == [
        "request",
        "order_id",
        "applicable",
        "checks",
        "decision",
        "answer",
    ]
    assert view[0].question == "What exactly is the customer asking for in the last message?"
    assert view[0].instruction is None
    assert view[3].instruction == "Never promise a refund before the order status is known."
    assert [s.is_answer for s in view] == [False, False, False, False, True, True]
    assert view[1].required is False
    assert view[5].max_chunks == 120
    assert view[3].annotation == list[GuidelineCheck]


def test_max_tokens_is_not_a_pydantic_constraint() -> None:
    # a 400-character answer passes although its step budget is 120 tokens
    info = SupportReply.model_fields["answer"]
    assert not any(getattr(m, "max_tokens", None) == 120 for m in info.metadata[:-1])
    reply = SupportReply.model_validate(
        {
            "request": "r",
            "applicable": [],
            "checks": [],
            "decision": "reply",
            "answer": "x" * 400,
        }
    )
    assert len(reply.answer) == 400


def test_constraints_are_enforced_by_pydantic() -> None:
    class Scored(Reasoning):
        """Score it."""

        note: str = query("Notes?", min_length=2, max_length=5, pattern="^[a-z]+$")
        score: int = answer("Score?", ge=0, le=10)

    with pytest.raises(ValidationError) as caught:
        Scored(note="TOO LONG", score=11)
    kinds = {e["type"] for e in caught.value.errors()}
    assert kinds == {"string_too_long", "less_than_equal"}
    assert Scored(note="ok", score=3).score == 3


def test_step_without_question_is_refused_naming_the_field() -> None:
    with pytest.raises(SchemaError, match=r"Bad\.thinking has no question") as caught:

        class Bad(Reasoning):
            thinking: str
            result: str = answer("The result.")

    assert caught.value.field == "thinking"
    assert caught.value.schema == "Bad"


def test_plain_field_description_counts_as_question() -> None:
    class Plain(Reasoning):
        """Task."""

        notes: str = Field(description="What do you notice?")
        result: str = answer("The result.")

    assert steps(Plain)[0].question == "What do you notice?"
    assert steps(Plain)[0].is_answer is False


def test_schema_without_answer_is_refused() -> None:
    with pytest.raises(SchemaError, match="NoAnswer has no answer step"):

        class NoAnswer(Reasoning):
            notes: str = query("What do you notice?")


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_question_is_refused(text: str) -> None:
    with pytest.raises(SchemaError, match="non-empty question"):
        query(text)


def test_non_positive_step_budget_is_refused() -> None:
    with pytest.raises(SchemaError, match="max_chunks=0"):
        answer("x", max_chunks=0)


def test_alias_is_refused() -> None:
    with pytest.raises(SchemaError, match="aliases are not supported") as caught:

        class Aliased(Reasoning):
            result: str = Field(description="The result.", alias="out")

    assert caught.value.field == "result"


def test_unknown_step_in_cross_check_is_refused() -> None:
    with pytest.raises(SchemaError, match="reads unknown steps"):

        class BadCheck(Reasoning):
            result: str = answer("The result.")

            @check("result", "nothing")
            def compare(result: str, nothing: str) -> None:
                pass


def test_unknown_repair_target_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"repairs unknown step 'elsewhere'"):

        class BadRepair(Reasoning):
            result: str = answer("The result.")

            @check("result", repair="elsewhere")
            def compare(result: str) -> None:
                pass


def test_steps_of_non_schema_is_schema_error() -> None:
    with pytest.raises(SchemaError, match=r"subclass of arq\.Reasoning"):
        steps(GuidelineCheck)  # type: ignore[arg-type]


def test_cross_checks_are_collected_and_inherited() -> None:
    class Child(SupportReply):
        """Child schema."""

        @check("decision", "answer")
        def escalation_is_announced(decision: str, answer: str) -> None:
            pass

    names = [c.name for c in cross_checks(Child)]
    assert names == ["every_applicable_checked", "escalation_is_announced"]
    assert cross_checks(SupportReply)[0].steps == ("applicable", "checks")
    assert cross_checks(SupportReply)[0].wants_context is False


def test_nested_and_list_of_models_work() -> None:
    reply = SupportReply.model_validate(
        {
            "request": "refund",
            "applicable": ["g1"],
            "checks": [{"id": "g1", "condition": "c", "applies": True, "compliant": True}],
            "decision": "reply",
            "answer": "ok",
        }
    )
    assert reply.checks[0].id == "g1"
    assert reply.order_id is None


def test_direct_keeps_answer_steps_only() -> None:
    baseline = direct(SupportReply)
    assert [s.name for s in steps(baseline)] == ["decision", "answer"]
    assert baseline.__doc__ == SupportReply.__doc__
    assert steps(baseline)[1].max_chunks == 120
    assert direct(SupportReply) is baseline


def test_cot_is_one_reasoning_step_then_answers() -> None:
    baseline = cot(SupportReply)
    view = steps(baseline)
    assert [s.name for s in view] == ["reasoning", "decision", "answer"]
    assert view[0].is_answer is False
    assert view[0].annotation is str
    with pytest.raises(ValidationError):
        baseline.model_validate({"reasoning": "r", "decision": "maybe", "answer": "a"})


def test_cot_refuses_answer_named_reasoning() -> None:
    class Clash(Reasoning):
        reasoning: str = answer("The reasoning as the answer.")

    with pytest.raises(SchemaError, match="clashes with cot"):
        cot(Clash)


def test_checklist_constrains_ids_and_keeps_step_order() -> None:
    items = [("g1", "Greet the customer."), {"id": "g2", "text": "No refunds."}]
    narrowed = checklist(SupportReply, "checks", items)
    assert [s.name for s in steps(narrowed)] == [s.name for s in steps(SupportReply)]
    item_type = get_args(narrowed.model_fields["checks"].annotation)[0]
    assert get_args(item_type.model_fields["id"].annotation) == ("g1", "g2")
    assert narrowed.__arq_items__ == {"checks": items}
    assert SupportReply.__arq_items__ == {}
    names = [c.name for c in cross_checks(narrowed)]
    assert names == ["every_applicable_checked", "checks_cover_every_item_once"]
    good = {"id": "g1", "condition": "c", "applies": True, "compliant": True}
    with pytest.raises(ValidationError, match="Input should be 'g1' or 'g2'"):
        item_type.model_validate({**good, "id": "g3"})
    assert item_type.model_validate(good).id == "g1"


def test_checklist_fixes_the_list_length_in_the_json_schema() -> None:
    narrowed = checklist(SupportReply, "checks", ["g1", "g2", "g3"])
    for dialect in ("json-schema", "openai-strict"):
        prop = json_schema(narrowed, dialect)["properties"]["checks"]
        assert (prop["minItems"], prop["maxItems"]) == (3, 3)
    item_type = get_args(narrowed.model_fields["checks"].annotation)[0]
    entry = {"id": "g1", "condition": "c", "applies": True, "compliant": True}
    output = {"request": "r", "applicable": [], "checks": [entry], "decision": "reply"}
    with pytest.raises(ValidationError, match="at least 3 items"):
        narrowed.model_validate({**output, "answer": "a"})
    assert item_type.model_validate(entry).id == "g1"


def test_checklist_coverage_check_reports_missing_and_repeated() -> None:
    narrowed = checklist(SupportReply, "checks", ["g1", "g2", "g3"])
    coverage = cross_checks(narrowed)[-1]
    item_type = get_args(narrowed.model_fields["checks"].annotation)[0]

    def entry(item_id: str) -> Any:
        return item_type(id=item_id, condition="c", applies=True, compliant=True)

    with pytest.raises(ValueError, match="missing g3; repeated g1"):
        coverage.run({"checks": [entry("g1"), entry("g1"), entry("g2")]}, None)
    coverage.run({"checks": [entry("g2"), entry("g1"), entry("g3")]}, None)


@pytest.mark.parametrize(
    ("field", "items", "message"),
    [
        ("checks", [], "no items given"),
        ("checks", ["a", "a"], "must be unique"),
        ("nowhere", ["a"], "has no step 'nowhere'"),
        ("applicable", ["a"], r"must be declared as list\[SomeModel\]"),
    ],
)
def test_checklist_bad_input(field: str, items: list[str], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        checklist(SupportReply, field, items)


def test_checklist_item_without_id_field() -> None:
    class Entry(BaseModel):
        name: str = Field(description="Name.")

    class Listing(Reasoning):
        entries: list[Entry] = query("Entries?")
        result: str = answer("Result.")

    with pytest.raises(SchemaError, match="has no 'id' field"):
        checklist(Listing, "entries", ["a"])


def test_dynamic_schemas_are_not_kept_alive_by_caches() -> None:
    narrowed = checklist(SupportReply, "checks", ["g1"])
    steps(narrowed)
    direct(narrowed)
    ref = weakref.ref(narrowed)
    del narrowed
    gc.collect()
    assert ref() is None


def test_literal_answer_type_is_kept() -> None:
    assert steps(SupportReply)[4].annotation == Literal["reply", "escalate"]
