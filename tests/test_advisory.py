"""Advisory checks: repaired within their own budget, then recorded while the run goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Annotated

import pytest

import arq
from arq.backends import OpenAIBackend
from arq.checks.severity import AdvisoryFailure
from arq.errors import InvalidArgumentError
from arq.run.config import RunConfig
from arq.testing import FakeOpenAIServer, Reply, ScriptedBackend


class Decision(arq.Reasoning):
    """Decide whether the guideline applies."""

    condition: str = arq.query("Copy the guideline's condition word for word.")
    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query("Which order id?")
    applies: bool = arq.answer("Does the condition hold?")

    @arq.check("condition", advisory=True)
    def condition_copied(condition: str, context: dict[str, str]) -> None:
        if condition != context["condition"]:
            raise ValueError("copy the condition word for word")

    @arq.check("order_id", "applies")
    def refund_needs_an_order(order_id: str, applies: bool) -> None:
        if applies and not order_id.startswith("R-"):
            raise ValueError("a refund needs an order id starting with R-")


CONTEXT = {
    "message": "I want a refund for order R-7731, or for X-1.",
    "condition": "the customer asks for a refund",
}
GOOD = {"condition": "the customer asks for a refund", "order_id": "R-7731", "applies": True}
LOOSE = {**GOOD, "condition": "customer wants money back"}


def text(values: Mapping[str, object]) -> str:
    return json.dumps(values)


def test_an_advisory_check_failing_after_its_budget_is_recorded_and_the_run_goes_on() -> None:
    backend = ScriptedBackend(text(LOOSE), text(LOOSE))
    result = arq.Executor(backend, max_repairs=0).run(Decision, CONTEXT)
    assert result.output.condition == LOOSE["condition"]
    assert result.output.applies is True
    (failure,) = result.advisories
    assert failure == AdvisoryFailure(
        "condition_copied",
        "condition",
        "copy the condition word for word",
        ("condition",),
        LOOSE["condition"],
    )
    first, repair = result.trace.attempts
    assert (first.kind, repair.kind) == ("first", "repair")
    assert first.steps[0].error is not None
    assert repair.steps[0].advisory == ("copy the condition word for word",)
    assert repair.to_dict()["steps"][0]["advisory"] == ["copy the condition word for word"]
    assert "advisory" not in repair.to_dict()["steps"][1]
    assert repair.request.steps == ("condition", "order_id", "applies")


def test_a_strict_check_in_the_same_schema_still_ends_the_run() -> None:
    bad_order = text({**GOOD, "order_id": "X-1"})
    backend = ScriptedBackend(bad_order)
    with pytest.raises(arq.ConvergenceError) as caught:
        arq.Executor(backend, max_repairs=0).run(Decision, CONTEXT)
    last = caught.value.last_error
    assert isinstance(last, arq.StepError)
    assert last.check == "refund_needs_an_order"
    assert len(backend.calls) == 1


def test_a_repaired_advisory_check_leaves_nothing_recorded() -> None:
    backend = ScriptedBackend(text(LOOSE), text(GOOD))
    result = arq.Executor(backend, max_repairs=0).run(Decision, CONTEXT)
    assert result.output.condition == GOOD["condition"]
    assert result.advisories == ()
    assert backend.requests[1].rejected == (json.dumps(LOOSE["condition"]),)


def test_with_no_advisory_repairs_the_failure_is_recorded_at_once() -> None:
    backend = ScriptedBackend(text(LOOSE))
    result = arq.Executor(backend, advisory_repairs=0).run(Decision, CONTEXT)
    assert [a.check for a in result.advisories] == ["condition_copied"]
    assert len(result.trace.attempts) == 1


def test_an_advisory_failure_is_forgotten_when_its_step_is_redone() -> None:
    class Later(arq.Reasoning):
        """A check on a step that a strict repair redoes."""

        condition: str = arq.query("Copy the condition.")
        order_id: Annotated[str, arq.verbatim_in("message")] = arq.answer("Which order id?")

        @arq.check("condition", advisory=True)
        def condition_copied(condition: str, context: dict[str, str]) -> None:
            if condition != context["condition"]:
                raise ValueError("copy the condition word for word")

        @arq.check("condition", "order_id", repair="condition")
        def short(condition: str, order_id: str) -> None:
            if len(condition) > 40:
                raise ValueError("a shorter condition")

    long = {"condition": "x" * 41, "order_id": "R-7731"}
    backend = ScriptedBackend(
        text(long),
        text({"condition": GOOD["condition"], "order_id": "R-7731"}),
    )
    result = arq.Executor(backend, advisory_repairs=0, max_repairs=1).run(Later, CONTEXT)
    assert result.output.condition == GOOD["condition"]
    assert result.advisories == ()  # the first call's failure went with its step


def test_an_unconverged_run_keeps_its_advisory_failures() -> None:
    bad_order = text({**LOOSE, "order_id": "X-1"})
    backend = ScriptedBackend(bad_order)
    executor = arq.Executor(backend, max_repairs=0, advisory_repairs=0, unconverged="return")
    outcome = executor.run(Decision, CONTEXT)
    assert isinstance(outcome, arq.Unconverged)
    assert [a.check for a in outcome.advisories] == ["condition_copied"]
    assert outcome.accepted == {"condition": LOOSE["condition"], "order_id": "X-1"}
    assert "a refund needs an order id" in outcome.failures["applies"]


def test_the_advisory_budget_is_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="advisory_repairs"):
        RunConfig(ScriptedBackend(), advisory_repairs=-1)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def test_the_run_goes_on_through_the_sdk(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(LOOSE)), Reply(text(LOOSE)))
    backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-0123456789")
    with arq.Executor(backend, max_repairs=0) as executor:
        result = executor.run(Decision, CONTEXT)
    assert [a.check for a in result.advisories] == ["condition_copied"]
    assert len(server.requests) == 2
