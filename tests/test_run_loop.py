"""A run built from its frozen configuration alone: no `Executor` is needed to drive one."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import pytest

import arq
from arq.backends import Capabilities, Settings
from arq.events import Event, OutputAccepted, RepairStarted, StepAccepted, StepFailed
from arq.run.config import RunConfig
from arq.run.loop import RunLoop
from arq.testing import ScriptedBackend


class Order(arq.Reasoning):
    """Find the order."""

    summary: str = arq.query("What is the message about?")
    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query("Which order id?")
    team: str = arq.answer("Which team takes it?")


CONTEXT = {"message": "My router (order R-7731) keeps rebooting."}
GOOD = {"summary": "a rebooting router", "order_id": "R-7731", "team": "tech"}
WRONG_ID = json.dumps({**GOOD, "order_id": "R-0000"})


def _events(loop: RunLoop[Order]) -> list[Event]:
    async def collect() -> list[Event]:
        return [event async for event in loop.events()]

    return asyncio.run(collect())


def test_a_run_loop_runs_from_a_run_config_without_an_executor() -> None:
    backend = ScriptedBackend(WRONG_ID, json.dumps({"order_id": "R-7731", "team": "tech"}))
    loop = RunLoop(RunConfig(backend, max_repairs=1), Order, CONTEXT, ())
    events = _events(loop)
    assert [type(event) for event in events] == [
        StepAccepted,
        StepFailed,
        RepairStarted,
        StepAccepted,
        StepAccepted,
        OutputAccepted,
    ]
    final = events[-1]
    assert isinstance(final, OutputAccepted)
    assert final.result.output == Order.model_validate(GOOD, context=CONTEXT)
    assert [attempt.kind for attempt in loop.trace.attempts] == ["first", "repair"]
    repair = backend.requests[1]
    assert (repair.steps, repair.rejected) == (("order_id", "team"), ('"R-0000"',))


def test_a_prefill_backend_gets_the_kept_steps_as_a_prefix() -> None:
    backend = ScriptedBackend(
        WRONG_ID, '"order_id": "R-7731", "team": "tech"}', capabilities=Capabilities(prefill=True)
    )
    loop = RunLoop(RunConfig(backend), Order, CONTEXT, ())
    assert isinstance(_events(loop)[-1], OutputAccepted)
    assert backend.requests[1].prefill == '{"summary": "a rebooting router", '


def test_json_that_breaks_after_every_step_is_repaired_from_the_last_step() -> None:
    backend = ScriptedBackend(json.dumps({**GOOD, "extra": 1}), json.dumps({"team": "tech"}))
    loop = RunLoop(RunConfig(backend, max_repairs=1), Order, CONTEXT, ())
    assert isinstance(_events(loop)[-1], OutputAccepted)
    assert backend.requests[1].steps == ("team",)


def test_the_repair_budget_of_the_config_ends_the_run() -> None:
    backend = ScriptedBackend(WRONG_ID)
    loop = RunLoop(RunConfig(backend, max_repairs=0), Order, CONTEXT, ())
    with pytest.raises(arq.ConvergenceError, match="0 repairs did not lead"):
        _events(loop)


def test_a_later_call_samples_its_first_step_at_the_repair_temperature() -> None:
    config = RunConfig(
        ScriptedBackend(), settings=Settings(temperature=0.0, seed=7), repair_temperature=0.7
    )
    assert config.settings_for("first", 1) == Settings(temperature=0.0, seed=7)
    assert config.settings_for("repair", 3) == Settings(
        temperature=0.0, seed=9, first_step_temperature=0.7
    )


def test_a_run_config_is_checked_once_and_frozen() -> None:
    backend = ScriptedBackend()
    bad: list[dict[str, Any]] = [
        {"max_repairs": -1},
        {"deadline": 0},
        {"idle_timeout": -1},
        {"settings": Settings(max_tokens=0)},
    ]
    for options in bad:
        name = "max_tokens" if "settings" in options else next(iter(options))
        with pytest.raises(ValueError, match=name):
            RunConfig(backend, **options)
    with pytest.raises(TypeError, match="Backend"):
        RunConfig(object())  # type: ignore[arg-type]
    config = RunConfig(backend)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_repairs = 5  # type: ignore[misc]


def test_the_executor_reads_its_settings_from_its_config() -> None:
    backend = ScriptedBackend()
    executor = arq.Executor(backend, max_repairs=3, temperature=0.2, deadline=9.0)
    config = executor.config
    assert (config.backend, config.max_repairs, config.deadline) == (backend, 3, 9.0)
    assert (executor.backend, executor.max_repairs, executor.deadline) == (backend, 3, 9.0)
    assert executor.repair_temperature == 0.2  # the temperature, when no other is given
    assert executor.settings == Settings(temperature=0.2)


def test_the_run_package_does_not_know_the_executor() -> None:
    for path in (Path(arq.__file__).parent / "run").glob("*.py"):
        nodes = list(ast.walk(ast.parse(path.read_text())))  # TYPE_CHECKING blocks included
        modules = {n.module for n in nodes if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
        assert "arq.executor" not in modules, path.name
    assert "Executor" not in (Path(arq.__file__).parent / "run" / "loop.py").read_text()
