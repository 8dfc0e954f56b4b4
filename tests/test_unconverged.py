"""`Executor(unconverged="return")`: a run whose repairs ran out returns an `Unconverged`."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import model_validator
from typing_extensions import assert_type

import arq
from arq.backends import OpenAIBackend
from arq.cli import cli
from arq.errors import InvalidArgumentError
from arq.eval import evaluate
from arq.events import Event, OutputNotConverged, RepairStarted, StepAccepted, StepFailed
from arq.testing import FakeOpenAIServer, Reply, ScriptedBackend
from arq.testing.schema import request_schema


class Order(arq.Reasoning):
    """Find the order."""

    summary: str = arq.query("What is the message about?")
    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query("Which order id?")
    team: str = arq.answer("Which team takes it?")


CONTEXT = {"message": "My router (order R-7731) keeps rebooting."}
GOOD = {"summary": "a rebooting router", "order_id": "R-7731", "team": "tech"}


def wrong(order_id: str) -> str:
    return json.dumps({**GOOD, "order_id": order_id})


def repaired(order_id: str) -> str:
    return json.dumps({"order_id": order_id, "team": "tech"})


def test_the_default_still_raises_convergence_error() -> None:
    backend = ScriptedBackend(wrong("R-0001"), repaired("R-0002"))
    with pytest.raises(arq.ConvergenceError):
        arq.Executor(backend, max_repairs=1).run(Order, CONTEXT)


def test_out_of_repairs_returns_the_accepted_steps_and_the_last_values() -> None:
    backend = ScriptedBackend(wrong("R-0001"), repaired("R-0002"))
    executor = arq.Executor(backend, max_repairs=1, unconverged="return")
    outcome = executor.run(Order, CONTEXT)
    assert isinstance(outcome, arq.Unconverged)
    assert not isinstance(outcome, arq.Result)
    assert outcome.converged is False
    assert outcome.schema is Order
    assert outcome.accepted == {"summary": "a rebooting router"}
    assert outcome.remaining == {"order_id": "R-0002"}
    assert "'R-0002' is not quoted word for word" in outcome.failures["order_id"]
    assert outcome.missing == ("team",)
    assert "1 repairs did not lead" in outcome.reason
    assert isinstance(outcome.last_error, arq.StepError)
    assert [a.kind for a in outcome.trace.attempts] == ["first", "repair"]
    assert outcome.usage == outcome.trace.usage


def test_an_unconverged_outcome_is_not_a_validated_output() -> None:
    backend = ScriptedBackend(wrong("R-0001"), repaired("R-0002"))
    outcome = arq.Executor(backend, max_repairs=1, unconverged="return").run(Order, CONTEXT)
    assert isinstance(outcome, arq.Unconverged)
    assert not isinstance(outcome, Order)
    assert not hasattr(outcome, "output")
    with pytest.raises(InvalidArgumentError, match="did not converge"):
        arq.validate_output(Order, outcome, context=CONTEXT)  # type: ignore[arg-type]
    values = {**outcome.accepted, **outcome.remaining, "team": "tech"}
    with pytest.raises(arq.StepError, match="order_id"):
        arq.validate_output(Order, values, context=CONTEXT)


def test_a_stuck_run_returns_too_and_the_stream_ends_with_the_outcome() -> None:
    backend = ScriptedBackend(wrong("R-0001"), repaired("R-0001"))
    executor = arq.Executor(backend, max_repairs=5, unconverged="return")

    async def collect() -> list[Event]:
        return [event async for event in executor.stream(Order, CONTEXT)]

    events = asyncio.run(collect())
    kinds = [type(e) for e in events]
    assert kinds == [
        StepAccepted,
        StepFailed,
        RepairStarted,
        StepFailed,
        OutputNotConverged,
    ]
    last = events[-1]
    assert isinstance(last, OutputNotConverged)
    assert "failed twice the same way" in last.unconverged.reason
    assert last.unconverged.remaining == {"order_id": "R-0001"}


def test_a_model_validator_failure_is_recorded_on_its_step() -> None:
    class Checked(Order):
        @model_validator(mode="after")
        def team_is_tech(self) -> Checked:
            if self.team != "tech":
                raise ValueError("only tech takes orders")
            return self

    sales = json.dumps({**GOOD, "team": "sales"})
    backend = ScriptedBackend(sales, json.dumps({"team": "sales"}))
    outcome = arq.Executor(backend, max_repairs=1, unconverged="return").run(Checked, CONTEXT)
    assert isinstance(outcome, arq.Unconverged)
    assert "team" not in outcome.accepted
    assert outcome.remaining == {"team": "sales"}
    assert "only tech takes orders" in outcome.failures["team"]


def test_the_policy_is_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="unconverged"):
        arq.Executor(ScriptedBackend(), unconverged="maybe")  # type: ignore[type-var]


def test_the_policy_is_in_the_return_type() -> None:
    default = arq.Executor(ScriptedBackend(json.dumps(GOOD)))
    assert_type(default.run(Order, CONTEXT), arq.Result[Order])
    lenient = arq.Executor(ScriptedBackend(json.dumps(GOOD)), unconverged="return")
    outcome = lenient.run(Order, CONTEXT)
    assert_type(outcome, "arq.Result[Order] | arq.Unconverged[Order]")
    assert isinstance(outcome, arq.Result)
    with default, lenient:
        assert_type(default.map(Order, []), "list[arq.Result[Order] | arq.ArqError]")
        outcomes = lenient.map(Order, [])
        assert_type(outcomes, "list[arq.Result[Order] | arq.Unconverged[Order] | arq.ArqError]")
        assert outcomes == []


# --- the real openai SDK over HTTP -------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def test_map_returns_each_item_s_outcome_through_the_sdk(server: FakeOpenAIServer) -> None:
    server.script(Reply(wrong("R-0001")), Reply(json.dumps(GOOD)))
    backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-0123456789")
    with arq.Executor(backend, max_repairs=0, unconverged="return", concurrency=1) as executor:
        outcomes = executor.map(Order, [CONTEXT, CONTEXT])
    first, second = outcomes
    assert isinstance(first, arq.Unconverged)
    assert first.accepted == {"summary": "a rebooting router"}
    assert first.remaining == {"order_id": "R-0001"}
    assert isinstance(second, arq.Result)
    assert second.output.order_id == "R-7731"


# --- evaluate and `arq eval` -------------------------------------------------------------


def always_wrong(request: arq.prompt.Request) -> str:
    values = {**GOOD, "order_id": "R-0001"}
    return json.dumps({step: values[step] for step in request.steps})


def team_is_tech(output: Order, item: dict[str, object]) -> bool:
    return output.team == "tech"


def test_evaluate_records_an_unconverged_run_as_not_answered() -> None:
    dataset = [{"id": "one", "context": CONTEXT, "expect": {}}]
    options: dict[str, Any] = {"strategies": ("arq",), "scorers": [team_is_tech], "progress": False}
    report = evaluate(
        Order,
        dataset,
        backend=ScriptedBackend(*[always_wrong] * 4),
        max_repairs=1,
        unconverged="return",
        **options,
    )
    (outcome,) = report.outcomes
    assert (outcome.success, outcome.output, outcome.error_type) == (False, None, "Unconverged")
    assert outcome.failed_step == "order_id"
    assert outcome.unconverged == {"summary": "a rebooting router", "order_id": "R-0001"}
    assert (outcome.calls, outcome.repairs) == (2, 1)
    assert report.settings["unconverged"] == "return"
    default = evaluate(
        Order, dataset, backend=ScriptedBackend(*[always_wrong] * 4), max_repairs=1, **options
    )
    assert default.outcomes[0].error_type == "ConvergenceError"
    assert default.outcomes[0].unconverged is None


HELPER = '''\
from typing import Annotated

import arq


class Order(arq.Reasoning):
    """Find the order."""

    summary: str = arq.query("What is the message about?")
    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query("Which order id?")
    team: str = arq.answer("Which team takes it?")


SCORERS = {"team": lambda output, item: output.team == "tech"}
'''


def test_arq_eval_takes_the_policy(tmp_path: Path, server: FakeOpenAIServer) -> None:
    helper = tmp_path / "eval_order.py"
    helper.write_text(HELPER)
    data = tmp_path / "cases.jsonl"
    data.write_text(json.dumps({"id": "one", "context": CONTEXT, "expect": {}}) + "\n")
    server.responder = lambda request: Reply(
        json.dumps(
            {
                k: {**GOOD, "order_id": "R-0001"}[k]
                for k in request_schema(request.body)["properties"]
            }
        )
    )
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "eval", f"{helper}:Order", str(data), "--scorers", f"{helper}:SCORERS",
        "--base-url", server.base_url, "--model", "m", "--strategies", "arq",
        "--max-repairs", "1", "--unconverged", "return", "--no-progress",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert cli(argv, stdout=out, stderr=err) == 0, err.getvalue()
    assert "Unconverged: 1" in out.getvalue()
    (outcome,) = json.loads((tmp_path / "out" / "report.json").read_text())["outcomes"]
    assert outcome["error_type"] == "Unconverged"
    assert outcome["unconverged"]["order_id"] == "R-0001"
