"""An answer cut at its token limit: continued from the cut step, or a typed error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest

import arq
from arq.backends import Capabilities, OpenAIBackend, Settings
from arq.errors import BackendError, TruncatedOutputError
from arq.events import Event, OutputAccepted, RepairStarted, StepAccepted, StepFailed
from arq.run.config import RunConfig
from arq.testing import FakeOpenAIServer, Reply, ScriptedBackend, Truncated


class Order(arq.Reasoning):
    """Find the order."""

    summary: str = arq.query("What is the message about?")
    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query("Which order id?")
    team: str = arq.answer("Which team takes it?")


CONTEXT = {"message": "My router (order R-7731) keeps rebooting."}
GOOD = {"summary": "a rebooting router", "order_id": "R-7731", "team": "tech"}
TEXT = json.dumps(GOOD)
CUT_IN_TEAM = TEXT[: TEXT.index('"tech"') + 3]  # summary and order_id complete
CUT_IN_SUMMARY = TEXT[:15]
TEAM_ONLY = json.dumps({"team": "tech"})


def _events(executor: arq.Executor) -> list[Event]:
    async def collect() -> list[Event]:
        return [event async for event in executor.stream(Order, CONTEXT)]

    return asyncio.run(collect())


def test_a_cut_after_accepted_steps_continues_from_the_cut_step() -> None:
    backend = ScriptedBackend(Truncated(CUT_IN_TEAM), TEAM_ONLY)
    events = _events(arq.Executor(backend, max_tokens=40))
    kinds = [type(event) for event in events]
    assert kinds == [
        StepAccepted,
        StepAccepted,
        StepFailed,
        RepairStarted,
        StepAccepted,
        OutputAccepted,
    ]
    failed, started = events[2], events[3]
    assert isinstance(failed, StepFailed)
    assert isinstance(failed.error, TruncatedOutputError)
    assert failed.step == "team"
    assert isinstance(started, RepairStarted)
    assert (started.step, started.kind, started.attempt) == ("team", "continuation", 2)
    final = events[-1]
    assert isinstance(final, OutputAccepted)
    assert final.result.output.model_dump() == GOOD
    attempts = final.result.trace.attempts
    assert [a.kind for a in attempts] == ["first", "continuation"]
    assert attempts[0].finish_reason == "length"
    assert final.result.trace.repairs == 1
    continuation = backend.requests[1]
    assert continuation.steps == ("team",)
    assert "cut off at the length limit" in continuation.messages[-1]["content"]
    assert [call.settings.max_tokens for call in backend.calls] == [40, 80]


def test_a_retried_continuation_keeps_its_token_limit() -> None:
    dropped = BackendError("the stream broke off", retryable=True)
    backend = ScriptedBackend(Truncated(CUT_IN_TEAM), dropped, TEAM_ONLY)
    retry = arq.RetryPolicy(sleep=_no_wait)
    result = arq.Executor(backend, max_tokens=40, retry=retry).run(Order, CONTEXT)
    assert result.output.team == "tech"
    assert [a.kind for a in result.trace.attempts] == ["first", "continuation", "retry"]
    assert [call.settings.max_tokens for call in backend.calls] == [40, 80, 80]


async def _no_wait(seconds: float) -> None:
    pass


def test_a_prefill_backend_continues_inside_the_kept_json() -> None:
    backend = ScriptedBackend(
        Truncated(CUT_IN_TEAM), '"team": "tech"}', capabilities=Capabilities(prefill=True)
    )
    result = arq.Executor(backend).run(Order, CONTEXT)
    assert result.output.team == "tech"
    assert backend.requests[1].prefill == '{"summary": "a rebooting router", "order_id": "R-7731", '


def test_a_cut_before_any_step_is_accepted_raises() -> None:
    backend = ScriptedBackend(Truncated(CUT_IN_SUMMARY))
    with pytest.raises(TruncatedOutputError, match="max_tokens") as caught:
        arq.Executor(backend).run(Order, CONTEXT)
    assert "not continued" not in str(caught.value)
    assert caught.value.partial == CUT_IN_SUMMARY
    assert len(backend.calls) == 1


def test_a_second_cut_inside_the_same_step_raises() -> None:
    backend = ScriptedBackend(Truncated(CUT_IN_TEAM), Truncated('{"team": "te'))
    with pytest.raises(TruncatedOutputError, match="cut inside step 'team' again"):
        arq.Executor(backend, max_repairs=5).run(Order, CONTEXT)
    assert len(backend.calls) == 2


def test_a_cut_with_no_repair_left_raises() -> None:
    backend = ScriptedBackend(Truncated(CUT_IN_TEAM))
    with pytest.raises(TruncatedOutputError, match="no repair is left"):
        arq.Executor(backend, max_repairs=0).run(Order, CONTEXT)
    assert len(backend.calls) == 1


def test_a_continuation_cut_further_on_continues_again() -> None:
    cut_in_order_id = TEXT[: TEXT.index("R-77")]
    rest = json.dumps({k: v for k, v in GOOD.items() if k != "summary"})
    backend = ScriptedBackend(Truncated(cut_in_order_id), Truncated(rest[:-4]), TEAM_ONLY)
    result = arq.Executor(backend, max_repairs=2).run(Order, CONTEXT)
    assert result.output.model_dump() == GOOD
    assert [r.steps for r in backend.requests] == [
        ("summary", "order_id", "team"),
        ("order_id", "team"),
        ("team",),
    ]


def test_a_continuation_and_a_repair_share_one_budget() -> None:
    wrong = json.dumps({"order_id": "R-0000", "team": "tech"})
    backend = ScriptedBackend(Truncated(TEXT[: TEXT.index("R-77")]), wrong)
    with pytest.raises(arq.ConvergenceError, match="1 repairs did not lead"):
        arq.Executor(backend, max_repairs=1).run(Order, CONTEXT)


def test_the_continuation_limit_follows_the_settings() -> None:
    backend = ScriptedBackend()
    assert RunConfig(backend).settings_for("continuation", 2).max_tokens is None
    config = RunConfig(
        backend,
        settings=Settings(max_tokens=100, temperature=0.0, seed=3),
        repair_temperature=0.8,
        continuation_max_tokens=150,
    )
    assert config.settings_for("continuation", 2) == Settings(
        max_tokens=150, temperature=0.0, seed=4
    )
    assert config.settings_for("repair", 2).max_tokens == 100
    for bad in (99, 0):
        with pytest.raises(arq.errors.InvalidArgumentError, match="continuation_max_tokens"):
            RunConfig(backend, settings=Settings(max_tokens=100), continuation_max_tokens=bad)


# --- the real openai SDK over HTTP -------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def test_a_cut_answer_is_continued_through_the_sdk(server: FakeOpenAIServer) -> None:
    server.script(Truncated(CUT_IN_TEAM), Reply(TEAM_ONLY))
    backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-0123456789")
    with arq.Executor(backend, max_tokens=64, continuation_max_tokens=200) as executor:
        result = executor.run(Order, CONTEXT)
    assert result.output.model_dump() == GOOD
    first, second = (request.body for request in server.requests)
    assert (first["max_tokens"], second["max_tokens"]) == (64, 200)
    schema: dict[str, Any] = second["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["team"]
    earlier = [m for m in second["messages"] if m["role"] == "assistant"]
    assert json.loads(earlier[-1]["content"]) == {k: GOOD[k] for k in ("summary", "order_id")}
    lines = [json.loads(line) for line in _jsonl(result.trace)]
    assert [line["kind"] for line in lines] == ["first", "continuation"]


def _jsonl(trace: arq.trace.Trace) -> list[str]:
    return [json.dumps(attempt.to_dict()) for attempt in trace.attempts]
