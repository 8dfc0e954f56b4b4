"""The repair policy on its own: which step to redo, when to stop, what the plan holds."""

from __future__ import annotations

from typing import Annotated

import pytest

import arq
from arq.checks import AllowedValues
from arq.errors import OutputParseError, StepError
from arq.repair import Repairs, plan_repair
from arq.validation import StepChecker


class Pick(arq.Reasoning):
    """Pick a colour."""

    first: str = arq.query("The first word.")
    colour: Annotated[str, arq.one_of("colours")] = arq.query("Which colour is named?")
    last: str = arq.answer("The last word.")


CONTEXT = {"colours": ["red", "green", "blue"], "note": "The sky is blue today."}


def _refused(value: str, written: str | None = None) -> StepError:
    checker = StepChecker(Pick, context=CONTEXT)
    checker.accept("first", "a")
    with pytest.raises(StepError) as caught:
        checker.accept("colour", value, written=written)
    return caught.value


def test_the_same_failure_twice_stops_the_run_and_a_new_value_does_not() -> None:
    repairs = Repairs(Pick, CONTEXT, max_repairs=5)
    assert repairs.record(_refused("pink", '"pink"'), "colour") is None
    assert repairs.record(_refused("grey", '"grey"'), "colour") is None
    assert repairs.rejected == {"colour": ['"pink"', '"grey"']}
    stop = repairs.record(_refused("pink"), "colour")
    assert stop is not None
    assert stop.startswith("step 'colour' failed twice the same way")


def test_the_budget_stops_the_run_once_spent() -> None:
    repairs = Repairs(Pick, CONTEXT, max_repairs=1)
    assert repairs.record(_refused("pink"), "colour") is None
    stop = repairs.record(_refused("grey"), "colour")
    assert stop is not None
    assert stop.startswith("1 repairs did not lead to a valid output")


def test_redoing_a_step_forgets_what_later_steps_had_rejected() -> None:
    repairs = Repairs(Pick, CONTEXT, max_repairs=5)
    repairs.record(_refused("pink"), "colour")
    unreadable = OutputParseError("bad JSON", problem="invalid_json", position=3)
    assert repairs.step_to_redo(unreadable, accepted={"first"}) == "colour"
    repairs.record(unreadable, "first")
    assert repairs.rejected == {}
    assert repairs.seen == {("first", "invalid_json")}


def test_a_suffix_plan_shows_the_kept_steps_as_an_earlier_answer() -> None:
    error = _refused("pink")
    plan = plan_repair(Pick, ("first", "colour", "last"), accepted={"first": "a"}, failure=error)
    assert (plan.step.name, plan.kept, plan.remaining) == ("colour", ("first",), ("colour", "last"))
    assert (plan.prefill, plan.earlier_answer) == ("", '{"first": "a"}')
    assert plan.failure == error.feedback


def test_a_prefill_plan_continues_the_kept_json() -> None:
    plan = plan_repair(
        Pick, ("first", "colour", "last"), accepted={"first": "a"}, failure=None, prefill=True
    )
    assert (plan.prefill, plan.earlier_answer) == ('{"first": "a", ', "")


def test_the_first_step_loses_its_rejected_choices_and_keeps_those_its_evidence_names() -> None:
    allowed = {"colour": AllowedValues(choices=("red", "green", "blue"))}
    plan = plan_repair(
        Pick,
        ("colour", "last"),
        accepted={},
        failure=None,
        rejected=['"red"'],
        allowed=allowed,
        context=CONTEXT,
    )
    assert plan.evidence == ("The sky is blue today.",)
    assert plan.allowed == {"colour": AllowedValues(choices=("blue",))}
    assert plan.rejected == ('"red"',)


def test_nothing_left_to_redo_is_an_error() -> None:
    with pytest.raises(ValueError, match="nothing to repair"):
        plan_repair(Pick, ("first",), accepted={"first": "a"}, failure=None)
