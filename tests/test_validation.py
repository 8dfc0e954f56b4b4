"""Step validation: each step alone, with its validators, earlier steps and the context."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arq.checks import check, covers, one_of, verbatim_in
from arq.errors import NO_VALUE, ContextError, SchemaError, StepError
from arq.schema import Reasoning, answer, query
from arq.validation import StepChecker, feedback, validate_output
from tests.schemas import SupportReply

CONTEXT = {"conversation": "Hi, my order A-1234 never arrived. I want a refund."}

GOOD: dict[str, Any] = {
    "request": "a refund for a lost order",
    "order_id": "A-1234",
    "applicable": ["g1"],
    "checks": [{"id": "g1", "condition": "refunds", "applies": True, "compliant": True}],
    "decision": "reply",
    "answer": "Let me check the status of order A-1234 first.",
}


def test_good_output_validates_step_by_step() -> None:
    checker = StepChecker(SupportReply, context=CONTEXT)
    for name, value in GOOD.items():
        checker.accept(name, value)
    reply = checker.finish()
    assert isinstance(reply, SupportReply)
    assert reply.checks[0].compliant is True
    assert reply.model_dump() == {**GOOD, "checks": GOOD["checks"]}


def test_type_error_names_the_step_and_keeps_earlier_steps() -> None:
    checker = StepChecker(SupportReply, context=CONTEXT)
    checker.accept("request", "refund")
    with pytest.raises(StepError) as caught:
        checker.accept("applicable", "g1")
    error = caught.value
    assert error.step == "applicable"
    assert error.errors[0]["type"] == "list_type"
    assert error.errors[0]["loc"] == ("applicable",)
    assert checker.accepted == {"request": "refund"}
    assert "Which guideline ids apply to this request?" in error.feedback


def test_nested_error_location_is_reported_inside_the_step() -> None:
    checker = StepChecker(SupportReply, context=CONTEXT)
    bad = [{"id": "g1", "condition": "c", "applies": "perhaps", "compliant": True}]
    with pytest.raises(StepError) as caught:
        checker.accept("checks", bad)
    assert caught.value.errors[0]["loc"] == ("checks", 0, "applies")
    assert "- checks[0].applies: Input should be a valid boolean" in caught.value.feedback
    assert "Instruction: Never promise a refund" in caught.value.feedback


def test_grounding_check_reads_the_context() -> None:
    checker = StepChecker(SupportReply, context=CONTEXT)
    with pytest.raises(StepError, match="not quoted word for word from the conversation"):
        checker.accept("order_id", "A-9999")
    assert checker.accept("order_id", "A-1234") == "A-1234"
    assert checker.accept("order_id", None) is None


def test_missing_context_value_is_a_clear_developer_error() -> None:
    checker = StepChecker(SupportReply, context={})
    with pytest.raises(ContextError, match=r"needs the run's context to have a 'conversation'"):
        checker.accept("order_id", "A-1234")


class Counted(Reasoning):
    """Count things."""

    things: list[str] = query("Which things?")
    count: int = query("How many things?")
    summary: str = answer("Summary.")
    calls: ClassVar[list[str]] = []  # validator calls, reset per test

    @field_validator("count")
    @classmethod
    def count_matches(cls, value: int, info: ValidationInfo) -> int:
        cls.calls.append(f"count sees {sorted(info.data)} ctx={info.context}")
        if value != len(info.data["things"]):
            raise ValueError(f"count {value} but {len(info.data['things'])} things listed")
        return value

    @field_validator("summary")
    @classmethod
    def shout(cls, value: str) -> str:
        return value.upper()


def test_field_validator_sees_earlier_steps_and_context_and_runs_once() -> None:
    Counted.calls.clear()
    checker = StepChecker(Counted, context={"k": 1})
    checker.accept("things", ["a", "b"])
    with pytest.raises(StepError, match="count 3 but 2 things listed"):
        checker.accept("count", 3)
    checker.accept("count", 2)
    assert checker.accept("summary", "done") == "DONE"
    assert checker.finish().summary == "DONE"
    # once per accept, and the validator saw only the earlier step
    assert Counted.calls == ["count sees ['things'] ctx={'k': 1}"] * 2


class WithModelValidator(Reasoning):
    """Whole-object rule."""

    low: int = query("Low?")
    high: int = answer("High?")

    @model_validator(mode="after")
    def ordered(self) -> WithModelValidator:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


def test_model_validators_run_at_finish_only() -> None:
    checker = StepChecker(WithModelValidator)
    checker.accept("low", 5)  # the model validator would fail on a partial object
    checker.accept("high", 1)
    with pytest.raises(StepError, match="low must not exceed high") as caught:
        checker.finish()
    assert caught.value.step == "high"
    assert caught.value.value is NO_VALUE  # a whole-object rule refuses no step's value alone
    ok = StepChecker(WithModelValidator, accepted={"low": 1, "high": 5}).finish()
    assert (ok.low, ok.high) == (1, 5)


def test_missing_required_step_fails_at_finish() -> None:
    checker = StepChecker(SupportReply, context=CONTEXT)
    checker.accept("request", "r")
    assert checker.missing() == ["applicable", "checks", "decision", "answer"]
    with pytest.raises(StepError) as caught:
        checker.finish()
    assert caught.value.step == "applicable"
    assert caught.value.errors[0]["type"] == "missing"


def test_cross_step_check_runs_when_inputs_complete_and_repairs_latest() -> None:
    checker = StepChecker(SupportReply, context=CONTEXT)
    checker.accept("applicable", ["g1", "g2"])
    only_g1 = [{"id": "g1", "condition": "c", "applies": True, "compliant": True}]
    with pytest.raises(StepError, match="no check for applicable guideline") as caught:
        checker.accept("checks", only_g1)
    assert caught.value.step == "checks"
    assert caught.value.check == "every_applicable_checked"
    assert "checks" not in checker.accepted
    assert "applicable" in checker.accepted


class RepairTarget(Reasoning):
    """Plan then act."""

    plan: str = query("What is the plan?")
    action: str = answer("What do you do?")

    @check("plan", "action", repair="plan")
    def action_follows_plan(plan: str, action: str, context: dict[str, Any]) -> None:
        if action not in plan:
            raise ValueError(f"the action is not in the plan (limit {context['limit']})")


def test_cross_step_check_can_name_the_step_to_repair_and_read_context() -> None:
    checker = StepChecker(RepairTarget, context={"limit": 3})
    checker.accept("plan", "call")
    with pytest.raises(StepError, match=r"not in the plan \(limit 3\)") as caught:
        checker.accept("action", "write")
    assert caught.value.step == "plan"
    assert "What is the plan?" in caught.value.feedback


def test_an_error_keeps_the_text_the_model_wrote_for_the_step_it_refuses() -> None:
    with pytest.raises(StepError) as caught:
        StepChecker(SupportReply, context=CONTEXT).accept("order_id", "A-9", written='"A-9"')
    assert (caught.value.value, caught.value.written) == ("A-9", '"A-9"')
    checker = StepChecker(SupportReply, context=CONTEXT)
    checker.accept("applicable", ["g1", "g2"])
    with pytest.raises(StepError) as caught:
        checker.accept("checks", [], written="[ ]")  # the check refuses the step just written
    assert caught.value.written == "[ ]"
    planned = StepChecker(RepairTarget, context={"limit": 3})
    planned.accept("plan", "call", written='"call"')
    with pytest.raises(StepError) as caught:
        planned.accept("action", "write", written='"write"')
    assert (caught.value.step, caught.value.written) == ("plan", None)  # not plan's text


def test_signature_is_the_step_error_kinds_and_value_not_the_wording() -> None:
    def failure(value: str) -> StepError:
        with pytest.raises(StepError) as caught:
            StepChecker(SupportReply, context=CONTEXT).accept("order_id", value)
        return caught.value

    first, again, other = failure("A-0001"), failure("A-0001"), failure("A-0002")
    assert first.value == "A-0001"
    assert first.signature() == again.signature()
    assert str(first) != str(other)
    assert first.signature() != other.signature()  # a new value is progress, not a repeat
    reworded = StepError("reworded", step="order_id", errors=first.errors, feedback="")
    reworded.value = "A-0001"
    assert reworded.signature() == first.signature()
    assert StepError("x", step="s", errors=[], feedback="").value is NO_VALUE


def test_validate_output_checks_a_recorded_output() -> None:
    assert validate_output(SupportReply, GOOD, context=CONTEXT).order_id == "A-1234"
    with pytest.raises(StepError) as caught:
        validate_output(SupportReply, {**GOOD, "decision": "maybe"}, context=CONTEXT)
    assert caught.value.step == "decision"
    with pytest.raises(StepError, match="Unknown step"):
        validate_output(SupportReply, {**GOOD, "extra": 1}, context=CONTEXT)


class Item(BaseModel):
    id: str = Field(description="Item id.")


class Grounded(Reasoning):
    """AllowedValues helpers."""

    quotes: Annotated[list[str], verbatim_in("facts")] = query("Which facts support it?")
    tool: Annotated[str, one_of("tools")] = query("Which tool?")
    covered: Annotated[list[Item], covers("guidelines")] = query("Each guideline?")
    strict_quote: Annotated[str, verbatim_in("facts", normalize_whitespace=False)] = answer("Q")


FACTS = {
    "facts": ["The store opens at  9am.", "Returns take 14 days."],
    "tools": [{"id": "lookup_order"}, {"id": "refund"}],
    "guidelines": [{"id": "g1", "text": "x"}, {"id": "g2", "text": "y"}],
}


@pytest.mark.parametrize(
    ("step", "value", "message"),
    [
        ("quotes", ["The store opens at 9am."], None),
        ("quotes", ["Returns take 30 days."], "'Returns take 30 days.' is not quoted"),
        ("quotes", [""], "is not quoted"),
        ("tool", "refund", None),
        ("tool", "delete", "'delete' is not one of the tools: lookup_order, refund"),
        ("covered", [{"id": "g2"}, {"id": "g1"}], None),
        ("covered", [{"id": "g1"}], "missing g2"),
        ("covered", [{"id": "g1"}, {"id": "g2"}, {"id": "g1"}], "repeated g1"),
        ("covered", [{"id": "g1"}, {"id": "g2"}, {"id": "g9"}], "unknown g9"),
        ("strict_quote", "Returns take 14 days.", None),
        ("strict_quote", "The store opens at 9am.", "is not quoted"),
    ],
)
def test_grounding_helpers(step: str, value: Any, message: str | None) -> None:
    checker = StepChecker(Grounded, context=FACTS)
    if message is None:
        checker.accept(step, value)
        assert step in checker.accepted
    else:
        with pytest.raises(StepError, match=message):
            checker.accept(step, value)


def test_config_of_the_schema_applies_to_single_steps() -> None:
    class Stripped(Reasoning):
        model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")
        result: str = answer("Result.")

    assert StepChecker(Stripped).accept("result", "  padded  ") == "padded"


def test_recursive_schema_validates_its_steps() -> None:
    class Node(Reasoning):
        """Tree."""

        label: str = query("Label?")
        children: list[Node] | None = answer("Children?", default=None)

    value = [{"label": "leaf", "children": None}]
    accepted = StepChecker(Node, accepted={"label": "root"}).accept("children", value)
    assert accepted[0].label == "leaf"


def test_unknown_step_name_is_a_developer_error() -> None:
    with pytest.raises(SchemaError, match="has no step 'nope'"):
        StepChecker(SupportReply).accept("nope", 1)


def test_feedback_text_is_written_for_the_model() -> None:
    from arq.schema import steps

    step = steps(SupportReply)[3]
    text = feedback(step, [{"loc": ("checks", 1, "id"), "msg": "unknown id"}])
    assert text == (
        'The value of "checks" was rejected:\n'
        "- checks[1].id: unknown id\n"
        "Question: For each applicable guideline: is the draft compliant?\n"
        "Instruction: Never promise a refund before the order status is known.\n"
        'Answer "checks" again, fixing exactly this.'
    )
