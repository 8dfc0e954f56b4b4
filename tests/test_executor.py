"""The executor through the real openai SDK, over real HTTP, against the loopback test server."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import openai
import pytest
from pydantic import AfterValidator, model_validator

import arq
from arq import ConvergenceError, Executor, RetryPolicy
from arq.backends import Capabilities, OpenAIBackend
from arq.errors import (
    BackendError,
    DeadlineExceededError,
    RefusalError,
    TruncatedOutputError,
)
from arq.events import OutputAccepted, RetryScheduled, StepAccepted, StepFailed
from arq.testing import (
    DropAfter,
    FakeOpenAIServer,
    Malformed,
    ReceivedRequest,
    Reply,
    SchemaResponder,
    ScriptedBackend,
    Stall,
    Status,
    Truncated,
)


class Ticket(arq.Reasoning):
    """Triage a support ticket."""

    summary: str = arq.query("What is the ticket about?")
    product: str = arq.query("Which product is it about?")
    severity: int = arq.query("How severe is it, from 1 to 5?", ge=1, le=5)
    order_id: Annotated[str, arq.verbatim_in("ticket")] = arq.query(
        "Which order id does the ticket give?", instruction="Copy it exactly from the ticket."
    )
    team: Literal["billing", "shipping", "tech"] = arq.answer("Which team takes it?")
    reply: str = arq.answer("The first reply to the customer.", max_length=200, max_chunks=60)

    @arq.check("severity", "team")
    def urgent_goes_to_tech(severity: int, team: str) -> None:
        if severity == 5 and team != "tech":
            raise ValueError("severity 5 tickets go to the tech team")


CONTEXT = {"ticket": "My router (order R-7731) keeps rebooting. Please help."}
GOOD: dict[str, Any] = {
    "summary": "the router keeps rebooting",
    "product": "router",
    "severity": 3,
    "order_id": "R-7731",
    "team": "tech",
    "reply": "Sorry about that; we are looking into it.",
}
STEPS = list(GOOD)
EXPECTED = Ticket.model_validate(GOOD, context=CONTEXT)


def text(values: dict[str, Any]) -> str:
    return json.dumps(values)


def suffix(start: str, values: dict[str, Any] = GOOD) -> dict[str, Any]:
    return {k: v for k, v in values.items() if STEPS.index(k) >= STEPS.index(start)}


class Sleeps:
    """An instant sleep that records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


OPEN: list[Executor] = []


@pytest.fixture(autouse=True)
def _close_executors() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def executor(server: FakeOpenAIServer, sleeps: Sleeps | None = None, **options: Any) -> Executor:
    capabilities = options.pop("capabilities", None)
    backend = OpenAIBackend(
        "fake-model",
        base_url=server.base_url,
        api_key="sk-test-0123456789",
        capabilities=capabilities,
    )
    retry = RetryPolicy(sleep=sleeps or Sleeps(), jitter=0)
    made = Executor(backend, retry=options.pop("retry", retry), **options)
    OPEN.append(made)
    return made


def schema_of(request: ReceivedRequest) -> dict[str, Any]:
    fmt = request.body["response_format"]
    schema: dict[str, Any] = fmt["json_schema"]["schema"]
    return schema


def collect(ex: Executor, context: dict[str, Any] = CONTEXT) -> list[Any]:
    async def go() -> list[Any]:
        async with ex:  # closes the connections made on this event loop
            return [event async for event in ex.stream(Ticket, context)]

    return asyncio.run(go())


# --- the happy path ------------------------------------------------------------------------


def test_a_valid_answer_is_accepted_in_one_call(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(GOOD)))
    with executor(server) as ex:
        result = ex.run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    assert len(server.requests) == 1
    [attempt] = result.trace.attempts
    assert (attempt.kind, attempt.error, attempt.stopped_early) == ("first", None, False)
    assert [s.name for s in attempt.steps] == STEPS
    assert attempt.finish_reason == "stop"
    assert not result.usage.estimated
    assert result.usage.completion_tokens > 0
    body = server.requests[0].body
    assert list(schema_of(server.requests[0])["properties"]) == STEPS
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_events_arrive_step_by_step(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(GOOD)))
    events = collect(executor(server))
    assert [e.step for e in events[:-1]] == STEPS
    assert all(isinstance(e, StepAccepted) and e.attempt == 1 for e in events[:-1])
    assert isinstance(events[-1], OutputAccepted)
    assert events[-1].result.output.team == "tech"


# --- repair from the failing step ----------------------------------------------------------


def test_step_four_fails_once_and_only_the_suffix_is_asked_again(
    server: FakeOpenAIServer,
) -> None:
    bad = text({**GOOD, "order_id": "R-0000"})
    server.script(Reply(bad, tokens_per_second=400), Reply(text(suffix("order_id"))))
    events = collect(executor(server))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["StepAccepted"] * 3 + ["StepFailed", "RepairStarted"] + (
        ["StepAccepted"] * 3 + ["OutputAccepted"]
    )
    failed = events[3]
    assert isinstance(failed, StepFailed)
    assert failed.step == "order_id"
    result = events[-1].result
    assert result.output == EXPECTED

    first, repair = server.requests
    assert first.wait()
    assert repair.wait()
    # reading stopped at the failing step: the server sent little of the rest
    end_of_step = bad.index('"team"')
    assert first.disconnected_early
    assert first.sent_chars < end_of_step + 30 < len(bad)
    # the repair asks for the failing step and those after it, showing the kept ones
    assert list(schema_of(repair)["properties"]) == ["order_id", "team", "reply"]
    messages = repair.body["messages"]
    assert messages[-2] == {"role": "assistant", "content": text(suffix_before("order_id"))}
    assert "R-0000" in messages[-1]["content"]
    assert "Copy it exactly from the ticket." in messages[-1]["content"]

    attempts = result.trace.attempts
    assert [a.kind for a in attempts] == ["first", "repair"]
    assert attempts[0].stopped_early
    assert attempts[0].usage.estimated
    # an early-stopped stream reports no usage: its output tokens are the chunks received
    assert 0 < attempts[0].usage.completion_tokens < len(bad) // 2
    assert result.trace.repairs == 1


def suffix_before(step: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if STEPS.index(k) < STEPS.index(step)}


def test_the_same_failure_twice_stops_early(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(text({**GOOD, "order_id": "R-0000"})),
        Reply(text(suffix("order_id", {**GOOD, "order_id": "R-0000"}))),
    )
    with pytest.raises(ConvergenceError, match="twice the same way") as caught:
        executor(server, max_repairs=5).run(Ticket, CONTEXT)
    error = caught.value
    assert len(server.requests) == 2
    assert list(error.accepted) == ["summary", "product", "severity"]
    assert len(error.trace.attempts) == 2
    assert isinstance(error.last_error, arq.StepError)
    assert error.last_error.step == "order_id"


def test_a_new_value_failing_the_same_check_is_not_a_repeat(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(text({**GOOD, "order_id": "R-0000"})),
        Reply(text(suffix("order_id", {**GOOD, "order_id": "R-1111"}))),
        Reply(text(suffix("order_id", {**GOOD, "order_id": "R-2222"}))),
        Reply(text(suffix("order_id"))),
    )
    result = executor(server, max_repairs=5).run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    assert len(server.requests) == 4
    # each repair lists the values its step already had rejected, for a backend to avoid
    rejected = [a.request.rejected for a in result.trace.attempts]
    assert rejected == [
        (),
        ('"R-0000"',),
        ('"R-0000"', '"R-1111"'),
        ('"R-0000"', '"R-1111"', '"R-2222"'),
    ]
    assert result.trace.attempts[1].request.to_dict()["rejected"] == ['"R-0000"']


def test_coming_back_to_a_rejected_value_stops_early(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(text({**GOOD, "order_id": "R-0000"})),
        Reply(text(suffix("order_id", {**GOOD, "order_id": "R-1111"}))),
        Reply(text(suffix("order_id", {**GOOD, "order_id": "R-0000"}))),
    )
    with pytest.raises(ConvergenceError, match="twice the same way"):
        executor(server, max_repairs=5).run(Ticket, CONTEXT)
    assert len(server.requests) == 3  # A, B, A: not A, B, A, B, ... until the budget ends


def test_rejected_values_are_listed_as_the_model_wrote_them(server: FakeOpenAIServer) -> None:
    written = text({**GOOD, "severity": 9}).replace('"severity": 9', '"severity": 9.0e0')
    server.script(Reply(written), Reply(text(suffix("severity"))))
    result = executor(server).run(Ticket, CONTEXT)
    assert result.trace.attempts[1].request.rejected == ("9.0e0",)


def test_a_cross_step_check_lists_its_value_when_the_steps_it_reads_are_kept(
    server: FakeOpenAIServer,
) -> None:
    server.script(
        Reply(text({**GOOD, "severity": 5, "team": "billing"})),
        Reply(text(suffix("team", {**GOOD, "severity": 5}))),
    )
    result = executor(server).run(Ticket, CONTEXT)
    repair = result.trace.attempts[1].request
    assert repair.steps[0] == "team"
    assert repair.rejected == ('"billing"',)  # severity 5 is kept: billing would fail again


class Plan(arq.Reasoning):
    """A check that redoes an earlier step than the latest it reads."""

    plan: str = arq.query("What is the plan?")
    action: str = arq.answer("What do you do?")

    @arq.check("plan", "action", repair="plan")
    def action_follows_plan(plan: str, action: str) -> None:
        if action not in plan:
            raise ValueError("the action is not in the plan")


def test_a_value_that_may_pass_once_later_steps_change_is_not_listed(
    server: FakeOpenAIServer,
) -> None:
    server.script(
        Reply('{"plan": "call", "action": "write"}'),
        Reply('{"plan": "call", "action": "call"}'),
    )
    result = executor(server).run(Plan, {})
    repair = result.trace.attempts[1].request
    assert repair.steps == ("plan", "action")
    assert repair.rejected == ()  # "call" is fine with another action


def not_bad(value: str) -> str:
    if value == "bad":
        raise ValueError("bad is not allowed here")
    return value


class Pair(arq.Reasoning):
    """A step with its own check, after a step a cross-step check may redo."""

    first: str = arq.query("First?")
    second: Annotated[str, AfterValidator(not_bad)] = arq.answer("Second?")

    @arq.check("first", "second", repair="first")
    def differ(first: str, second: str) -> None:
        if first == second:
            raise ValueError("the two must differ")


def test_redoing_an_earlier_step_forgets_what_later_steps_had_rejected(
    server: FakeOpenAIServer,
) -> None:
    server.script(
        Reply('{"first": "a", "second": "bad"}'),  # second's own check: "bad" rejected
        Reply('{"second": "a"}'),  # the cross-step check redoes first (and so second)
        Reply('{"first": "b", "second": "bad"}'),  # a new first: "bad" fails anew, no stop
        Reply('{"second": "c"}'),
    )
    result = executor(server, max_repairs=3).run(Pair, {})
    assert (result.output.first, result.output.second) == ("b", "c")
    assert [a.request.rejected for a in result.trace.attempts] == [(), ('"bad"',), (), ('"bad"',)]


def test_running_out_of_repairs_raises_with_the_trace(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(text({**GOOD, "severity": 9})),
        Reply(text(suffix("severity", {**GOOD, "severity": "high"}))),
        Reply(text(suffix("severity", {**GOOD, "severity": 0}))),
    )
    with pytest.raises(ConvergenceError, match="2 repairs did not lead") as caught:
        executor(server, max_repairs=2).run(Ticket, CONTEXT)
    assert len(server.requests) == 3
    assert caught.value.accepted == {"summary": GOOD["summary"], "product": "router"}
    # only the latest failure is shown: repair requests do not grow with attempts
    first_repair, second_repair = (size_without_feedback(r) for r in server.requests[1:])
    assert second_repair <= first_repair
    assert "9" not in server.requests[2].body["messages"][-1]["content"].split("rejected")[1]


def size_without_feedback(request: ReceivedRequest) -> int:
    messages = request.body["messages"]
    feedback = messages[-1]["content"].split("Question:")[0]
    return len(json.dumps(messages)) - len(feedback)


def test_zero_repairs_fails_at_the_first_error(server: FakeOpenAIServer) -> None:
    server.script(Reply(text({**GOOD, "severity": 9})))
    with pytest.raises(ConvergenceError):
        executor(server, max_repairs=0).run(Ticket, CONTEXT)
    assert len(server.requests) == 1


def test_a_cross_step_check_repairs_from_its_latest_step(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(text({**GOOD, "severity": 5, "team": "billing"})),
        Reply(text(suffix("team", GOOD))),
    )
    result = executor(server).run(Ticket, CONTEXT)
    assert result.output.severity == 5
    assert result.output.team == "tech"
    assert list(schema_of(server.requests[1])["properties"]) == ["team", "reply"]
    assert (
        "severity 5 tickets go to the tech team"
        in server.requests[1].body["messages"][-1]["content"]
    )


class Named(arq.Reasoning):
    """A check that names the step to redo."""

    total: int = arq.query("How many items?")
    items: list[str] = arq.query("Which items?")
    verdict: str = arq.answer("The verdict.")

    @arq.check("total", "items", repair="total")
    def total_matches(total: int, items: list[str]) -> None:
        if total != len(items):
            raise ValueError(f"total {total} but {len(items)} items listed")


def test_a_check_naming_its_step_repairs_from_there(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(json.dumps({"total": 3, "items": ["a", "b"], "verdict": "ok"})),
        Reply(json.dumps({"total": 2, "items": ["a", "b"], "verdict": "ok"})),
    )
    result = executor(server).run(Named, {})
    assert (result.output.total, result.output.items) == (2, ["a", "b"])
    assert list(schema_of(server.requests[1])["properties"]) == ["total", "items", "verdict"]
    assert server.requests[1].body["messages"][-1]["role"] == "user"  # nothing was kept


class Ordered(arq.Reasoning):
    """A model validator over the whole object."""

    low: int = arq.query("Low?")
    high: int = arq.answer("High?")

    @model_validator(mode="after")
    def ordered(self) -> Ordered:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


def test_a_model_validator_failing_at_the_end_is_repaired(server: FakeOpenAIServer) -> None:
    server.script(Reply('{"low": 5, "high": 1}'), Reply('{"high": 9}'))
    result = executor(server).run(Ordered, {})
    assert (result.output.low, result.output.high) == (5, 9)
    assert list(schema_of(server.requests[1])["properties"]) == ["high"]
    assert result.trace.attempts[1].request.rejected == ()  # high=1 may pass with another low


def test_keys_out_of_order_are_repaired_from_the_first_missing_step(
    server: FakeOpenAIServer,
) -> None:
    swapped = '{"summary": "s", "severity": 3, "product": "router"}'
    server.script(Reply(swapped), Reply(text(suffix("product"))))
    result = executor(server).run(Ticket, CONTEXT)
    assert result.output.summary == "s"
    assert list(schema_of(server.requests[1])["properties"]) == STEPS[1:]
    assert "could not be read" in server.requests[1].body["messages"][-1]["content"]


def test_a_step_over_its_token_budget_is_cut_and_repaired(server: FakeOpenAIServer) -> None:
    rambling = {**GOOD, "reply": "word " * 150}
    server.script(Reply(text(rambling), chunk_chars=4), Reply(text(suffix("reply"))))
    result = executor(server).run(Ticket, CONTEXT)
    assert result.output.reply == GOOD["reply"]
    first = result.trace.attempts[0]
    assert first.stopped_early
    assert "budget of about 60 tokens" in (first.error or "")
    assert len(first.text) < len(text(rambling)) // 2


# --- typed failures that are not retried blindly -------------------------------------------


def test_truncation_before_any_accepted_step_raises_with_a_hint(server: FakeOpenAIServer) -> None:
    server.script(Truncated(text(GOOD)[:20]))
    with pytest.raises(TruncatedOutputError, match="max_tokens"):
        executor(server).run(Ticket, CONTEXT)
    assert len(server.requests) == 1


def test_a_refusal_raises_and_is_not_retried(server: FakeOpenAIServer) -> None:
    server.script(Reply(refusal="I can't help with that."))
    with pytest.raises(RefusalError) as caught:
        executor(server).run(Ticket, CONTEXT)
    assert caught.value.refusal == "I can't help with that."
    assert len(server.requests) == 1


def test_a_content_filter_raises_refusal(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(GOOD)[:30], finish_reason="content_filter"))
    with pytest.raises(RefusalError) as caught:
        executor(server).run(Ticket, CONTEXT)
    assert caught.value.finish_reason == "content_filter"


def test_an_invalid_object_is_never_returned(server: FakeOpenAIServer) -> None:
    server.responder = lambda request: Reply(text({**GOOD, "severity": 7}))
    with pytest.raises(ConvergenceError):
        executor(server, max_repairs=3).run(Ticket, CONTEXT)


# --- transport retries ---------------------------------------------------------------------


def test_rate_limit_is_retried_after_the_asked_wait(
    server: FakeOpenAIServer, sleeps: Sleeps
) -> None:
    server.script(Status.rate_limited(retry_after=3), Reply(text(GOOD)))
    events = collect(executor(server, sleeps))
    retrying = [e for e in events if isinstance(e, RetryScheduled)]
    assert len(retrying) == 1
    assert retrying[0].wait == 3.0
    assert retrying[0].error.status == 429
    assert sleeps.calls == [3.0]
    assert len(server.requests) == 2
    assert isinstance(events[-1], OutputAccepted)
    assert [a.kind for a in events[-1].result.trace.attempts] == ["first", "retry"]


def test_server_errors_use_up_the_retry_budget(server: FakeOpenAIServer, sleeps: Sleeps) -> None:
    server.responder = lambda request: Status(503)
    with pytest.raises(BackendError) as caught:
        executor(server, sleeps, retry=RetryPolicy(attempts=3, sleep=sleeps, jitter=0)).run(
            Ticket, CONTEXT
        )
    assert caught.value.status == 503
    assert caught.value.retryable
    assert len(server.requests) == 3
    assert sleeps.calls == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(
    server: FakeOpenAIServer, sleeps: Sleeps, status: int
) -> None:
    server.script(Status(status))
    with pytest.raises(BackendError) as caught:
        executor(server, sleeps).run(Ticket, CONTEXT)
    assert caught.value.status == status
    assert not caught.value.retryable
    assert len(server.requests) == 1
    assert sleeps.calls == []


def test_a_dropped_stream_resumes_after_the_kept_steps(server: FakeOpenAIServer) -> None:
    full = text(GOOD)
    server.script(DropAfter(Reply(full), full.index('"team"')), Reply(text(suffix("team"))))
    result = executor(server, max_repairs=0).run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    assert [a.kind for a in result.trace.attempts] == ["first", "retry"]
    assert list(schema_of(server.requests[1])["properties"]) == ["team", "reply"]
    assert "broke off" in server.requests[1].body["messages"][-1]["content"]
    assert "BackendError" in (result.trace.attempts[0].error or "")


def test_a_stream_dropped_after_the_last_step_needs_no_other_call(
    server: FakeOpenAIServer,
) -> None:
    full = text(GOOD)
    server.script(DropAfter(Reply(full), len(full) - 1))  # every value, not the closing brace
    result = executor(server, max_repairs=0).run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    assert len(server.requests) == 1
    assert [a.kind for a in result.trace.attempts] == ["first"]


def test_malformed_events_are_retried(server: FakeOpenAIServer) -> None:
    server.script(Malformed(Reply(text(GOOD)), after_chars=10), Reply(text(GOOD)))
    result = executor(server).run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    assert len(server.requests) == 2


def test_a_silent_stream_is_closed_and_retried(server: FakeOpenAIServer) -> None:
    server.script(Stall(Reply(text(GOOD)), after_chars=20, seconds=5), Reply(text(GOOD)))
    result = executor(server, idle_timeout=0.3).run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    stalled = server.requests[0]
    assert stalled.wait()
    assert stalled.disconnected_early
    assert "silent" in (result.trace.attempts[0].error or "")


def test_the_deadline_bounds_the_whole_run(server: FakeOpenAIServer) -> None:
    server.script(Stall(Reply(text(GOOD)), after_chars=20, seconds=5))
    with pytest.raises(DeadlineExceededError):
        executor(server, deadline=0.4).run(Ticket, CONTEXT)
    assert server.requests[0].wait()
    assert server.requests[0].disconnected_early


def test_the_deadline_stops_retries_that_would_outlast_it(
    server: FakeOpenAIServer, sleeps: Sleeps
) -> None:
    server.script(Status.rate_limited(retry_after=30))
    with pytest.raises(DeadlineExceededError):
        executor(server, sleeps, deadline=5).run(Ticket, CONTEXT)
    assert sleeps.calls == []


# --- output modes and prefill --------------------------------------------------------------


def test_prompt_mode_reads_the_object_out_of_prose(server: FakeOpenAIServer) -> None:
    server.script(Reply("Sure! Here it is:\n```json\n" + text(GOOD) + "\n```\nAnything else?"))
    ex = executor(server, capabilities=Capabilities(output="prompt", stream_usage=False))
    result = ex.run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    assert "response_format" not in server.requests[0].body


def test_prefill_continues_from_the_accepted_prefix(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(text({**GOOD, "order_id": "R-0000"})),
        Reply(text(suffix("order_id"))[1:]),  # the continuation: no opening brace
    )
    ex = executor(server, capabilities=Capabilities(prefill=True))
    result = ex.run(Ticket, CONTEXT)
    assert result.output == EXPECTED
    last = server.requests[1].body["messages"][-1]
    assert last["role"] == "assistant"
    assert last["content"] == text(suffix_before("order_id"))[:-1] + ", "
    assert "response_format" not in server.requests[1].body


# --- sync, async, cancel, many at once -----------------------------------------------------


def test_run_works_inside_a_running_event_loop(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(GOOD)))
    ex = executor(server)

    async def notebook_cell() -> Ticket:
        return ex.run(Ticket, CONTEXT).output

    assert asyncio.run(notebook_cell()) == EXPECTED
    ex.close()


def test_cancelling_arun_closes_the_stream(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(GOOD), tokens_per_second=20))
    ex = executor(server)

    async def go() -> None:
        task = asyncio.ensure_future(ex.arun(Ticket, CONTEXT))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    request = server.requests[0]
    assert request.wait()
    assert request.disconnected_early
    assert request.sent_chars < len(text(GOOD)) // 2


def test_map_runs_200_contexts_at_concurrency_32(server: FakeOpenAIServer) -> None:
    def respond(request: ReceivedRequest) -> Any:
        ticket = request.body["messages"][-1]["content"]
        if "#13 " in ticket or "#113 " in ticket:
            return Status(400)
        return SchemaResponder()(request)

    server.responder = respond
    contexts = [{"ticket": f"Ticket #{i} about an example order"} for i in range(200)]
    done: list[int] = []
    with executor(server) as ex:
        outcomes = ex.map(
            Ticket, contexts, concurrency=32, on_result=lambda i, outcome: done.append(i)
        )
    assert len(outcomes) == 200
    assert sorted(done) == list(range(200))
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, arq.ArqError)]
    assert failed == [13, 113]
    for i, outcome in enumerate(outcomes):
        if i not in failed:
            assert isinstance(outcome, arq.Result)
            assert outcome.output.order_id == "example"
    assert len(server.requests) == 200


def test_a_sync_openai_client_works_with_run(server: FakeOpenAIServer) -> None:
    server.script(Reply(text(GOOD)))
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-0123456789")
    with Executor(OpenAIBackend("fake-model", client=client)) as ex:
        assert ex.run(Ticket, CONTEXT).output == EXPECTED
    assert server.requests[0].headers["authorization"] != "Bearer sk-test-0123456789"


# --- traces --------------------------------------------------------------------------------


def test_the_trace_is_written_as_jsonl_without_secrets(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script(
        Reply(text({**GOOD, "order_id": "sk-live-abcdef123456"})), Reply(text(suffix("order_id")))
    )
    result = executor(server).run(Ticket, CONTEXT)
    path = tmp_path / "trace.jsonl"
    result.trace.to_jsonl(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["first", "repair"]
    assert lines[0]["schema"] == "Ticket"
    assert lines[0]["model"] == "fake-model"
    assert lines[0]["steps"][3]["name"] == "order_id"
    assert lines[0]["steps"][3]["error"]
    assert "sk-live-abcdef123456" not in path.read_text()
    assert "sk-test-0123456789" not in path.read_text()


def test_bad_settings_are_refused() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    bad: list[dict[str, Any]] = [
        {"max_repairs": -1},
        {"deadline": 0},
        {"idle_timeout": -1},
        {"concurrency": 0},
    ]
    for options in bad:
        with pytest.raises(ValueError, match=next(iter(options))):
            Executor(backend, **options)
    with pytest.raises(TypeError, match="Backend"):
        Executor(object())  # type: ignore[arg-type]


def test_asyncio_run_twice_leaves_no_connection_open(server: FakeOpenAIServer) -> None:
    # each loop's client is closed on that loop as asyncio.run ends; a leaked socket would
    # surface as a ResourceWarning, which this test suite turns into an error
    server.responder = SchemaResponder()
    ex = executor(server)
    contexts = [{"ticket": f"Ticket #{i} about an example order"} for i in range(2)]
    outputs = [asyncio.run(ex.arun(Ticket, context)).output for context in contexts]
    gc.collect()
    assert [o.order_id for o in outputs] == ["example", "example"]
    assert len(server.requests) == 2


def test_repairs_sample_at_their_own_temperature_with_a_new_seed(
    server: FakeOpenAIServer,
) -> None:
    server.script(Reply(text({**GOOD, "order_id": "R-0000"})), Reply(text(suffix("order_id"))))
    ex = executor(server, temperature=0.0, repair_temperature=0.7, seed=7)
    assert ex.run(Ticket, CONTEXT).output == EXPECTED
    first, repair = (r.body for r in server.requests)
    assert (first["temperature"], first["seed"]) == (0.0, 7)
    # the API takes one temperature per answer: the repaired step's
    assert (repair["temperature"], repair["seed"]) == (0.7, 8)


def test_a_repair_samples_its_step_and_writes_the_steps_after_it_as_the_first_call() -> None:
    backend = ScriptedBackend(text({**GOOD, "order_id": "R-0000"}), text(suffix("order_id")))
    with Executor(backend, temperature=0.0, repair_temperature=0.7, seed=7) as ex:
        assert ex.run(Ticket, CONTEXT).output == EXPECTED
    first, repair = (call.settings for call in backend.calls)
    assert (first.temperature, first.first_step_temperature, first.seed) == (0.0, None, 7)
    assert (repair.temperature, repair.first_step_temperature, repair.seed) == (0.0, 0.7, 8)
