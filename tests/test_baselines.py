"""The comparison strategies against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import ValidationInfo, field_validator

import arq
from arq.backends import OpenAIBackend, Settings
from arq.eval.baselines import BaselineResult, check_answer, single_pass, whole_object_reask
from arq.testing import FakeOpenAIServer, Reply, Truncated, Usage

TICKET = "Ada Byron writes: my order R-7731 never arrived, please send it again."
CONTEXT = {"ticket": TICKET}
Quoted = Annotated[str, arq.verbatim_in("ticket")]


class Triage(arq.Reasoning):
    """Triage the ticket."""

    customer: Quoted = arq.query("Who wrote the ticket?")
    order_id: Quoted = arq.query("Which order id does the ticket give?", pattern=r"^R-\d{4}$")
    team: Literal["billing", "shipping"] = arq.answer("Which team takes it?")


GOOD = {"customer": "Ada Byron", "order_id": "R-7731", "team": "shipping"}
TWO_WRONG = {"customer": "Ada Lovelace", "order_id": "R-7731", "team": "sales"}
ONE_WRONG = {"customer": "Ada Byron", "order_id": "order 7731", "team": "shipping"}


def reply(values: dict[str, Any], completion_tokens: int = 20) -> Reply:
    return Reply(json.dumps(values), usage=Usage(100, completion_tokens))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


def run_single(server: FakeOpenAIServer, **options: Any) -> BaselineResult[Triage]:
    async def go() -> BaselineResult[Triage]:
        backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-1234567")
        try:
            return await single_pass(backend, Triage, CONTEXT, **options)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def run_reask(server: FakeOpenAIServer, **options: Any) -> BaselineResult[Triage]:
    async def go() -> BaselineResult[Triage]:
        backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-1234567")
        try:
            return await whole_object_reask(backend, Triage, CONTEXT, **options)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def asked_keys(server: FakeOpenAIServer, index: int) -> list[str]:
    schema = server.requests[index].body["response_format"]["json_schema"]["schema"]
    return list(schema["properties"])


# --- single pass ---------------------------------------------------------------------------


def test_single_pass_checks_every_step_without_stopping(server: FakeOpenAIServer) -> None:
    server.script(reply(TWO_WRONG))
    result = run_single(server)
    assert result.step_ok == {"customer": False, "order_id": True, "team": False}
    assert (result.accepted, result.output, result.calls) == (False, None, 1)
    assert len(result.errors) == 2
    assert "customer" in result.errors[0]
    assert "team" in result.errors[1]
    request = server.requests[0]
    assert request.completed  # the whole answer was read, not cut at the first failure
    assert request.sent_chars == len(json.dumps(TWO_WRONG))
    assert (result.completion_tokens, result.prompt_tokens) == (20, 100)
    assert result.elapsed > 0


def test_single_pass_returns_the_validated_output(server: FakeOpenAIServer) -> None:
    server.script(reply(GOOD, completion_tokens=17))
    result = run_single(server, settings=Settings(max_tokens=300, temperature=0, seed=5))
    assert result.accepted
    assert result.output is not None
    assert result.output.model_dump() == GOOD
    assert all(result.step_ok.values())
    assert result.errors == []
    assert result.completion_tokens == 17
    body = server.requests[0].body
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (300, 0, 5)


def test_single_pass_uses_the_executors_prompt(server: FakeOpenAIServer) -> None:
    server.script(reply(GOOD))
    run_single(server)
    expected = arq.PromptBuilder().build(Triage, CONTEXT).messages
    assert server.requests[0].body["messages"] == expected


def test_a_truncated_answer_is_not_accepted(server: FakeOpenAIServer) -> None:
    server.script(Truncated('{"customer": "Ada Byron", "order_id": "R-77'))
    result = run_single(server)
    assert not result.accepted
    assert result.output is None
    assert result.step_ok == {"customer": True, "order_id": False, "team": False}
    assert result.errors == ["the answer was cut by the token limit (finish_reason=length)"]
    assert result.attempts[0].finish_reason == "length"


def test_unreported_usage_is_estimated_like_the_executor(server: FakeOpenAIServer) -> None:
    server.script(Reply(json.dumps(GOOD), usage=None, chunk_chars=4))
    result = run_single(server)
    assert result.accepted
    assert result.attempts[0].usage.estimated
    assert result.completion_tokens == -(-len(json.dumps(GOOD)) // 4)


# --- whole-object re-ask ---------------------------------------------------------------------


def test_reask_feeds_every_error_back_and_asks_for_the_whole_object(
    server: FakeOpenAIServer,
) -> None:
    server.script(reply(TWO_WRONG, 21), reply(ONE_WRONG, 22), reply(GOOD, 23), reply(GOOD))
    result = run_reask(server, max_reasks=3)
    assert result.accepted
    assert result.output is not None
    assert result.output.model_dump() == GOOD
    assert result.calls == 3
    assert server.pending == 1  # stopped at the first valid answer
    assert (result.completion_tokens, result.prompt_tokens) == (21 + 22 + 23, 300)
    assert result.step_ok == {"customer": False, "order_id": True, "team": False}  # first call
    assert [a.accepted for a in result.attempts] == [False, False, True]

    base = arq.PromptBuilder().build(Triage, CONTEXT).messages
    second = server.requests[1].body["messages"]
    assert second[: len(base)] == base
    assert second[len(base)] == {"role": "assistant", "content": json.dumps(TWO_WRONG)}
    note = second[len(base) + 1]
    assert note["role"] == "user"
    assert 'The value of "customer" was rejected' in note["content"]
    assert 'The value of "team" was rejected' in note["content"]
    assert "whole JSON object again" in note["content"]
    assert asked_keys(server, 1) == ["customer", "order_id", "team"]
    # built from the first request: only the latest answer and its errors, no growth
    third = server.requests[2].body["messages"]
    assert len(third) == len(second)
    assert third[len(base)]["content"] == json.dumps(ONE_WRONG)
    assert 'The value of "order_id" was rejected' in third[-1]["content"]
    assert "customer" not in third[-1]["content"].split("Reply with")[0]


def test_the_reask_turn_is_pinned() -> None:
    builder = arq.PromptBuilder()
    base = builder.build(Triage, CONTEXT)
    feedback = ["First: wrong.", "Second\n  on two lines.", "First: wrong."]
    again = builder.reask(base, '{"team": "x"}', feedback)
    assert again.messages == [
        *base.messages,
        {"role": "assistant", "content": '{"team": "x"}'},
        {
            "role": "user",
            "content": "Your answer was checked and rejected:\n\nFirst: wrong.\n\nSecond\n"
            "  on two lines.\n\nReply with the whole JSON object again, with exactly these "
            "keys, in this order: customer, order_id, team.",
        },
    ]
    assert again.metadata == {**base.metadata, "reask": True}
    assert (again.steps, again.output_schema) == (base.steps, base.output_schema)
    bare = builder.reask(base, "", [])  # no feedback: the note keeps its blank lines
    assert bare.messages[-1]["content"] == (
        "Your answer was checked and rejected:\n\n\n\nReply with the whole JSON object "
        "again, with exactly these keys, in this order: customer, order_id, team."
    )


def test_reask_gives_up_after_max_reasks(server: FakeOpenAIServer) -> None:
    server.script(reply(TWO_WRONG), reply(ONE_WRONG), reply(GOOD))
    result = run_reask(server, max_reasks=1)
    assert not result.accepted
    assert result.output is None
    assert result.calls == 2
    assert server.pending == 1
    assert len(result.errors) == 1
    assert "order_id" in result.errors[0]  # the last call's errors


def test_reasks_sample_at_their_own_temperature_and_seed(server: FakeOpenAIServer) -> None:
    server.script(reply(TWO_WRONG), reply(ONE_WRONG), reply(GOOD))
    settings = Settings(max_tokens=200, temperature=0, seed=10)
    run_reask(server, max_reasks=2, settings=settings, reask_temperature=0.7)
    sampled = [(r.body["temperature"], r.body["seed"]) for r in server.requests]
    assert sampled == [(0, 10), (0.7, 11), (0.7, 12)]


def test_a_truncated_answer_is_asked_for_again(server: FakeOpenAIServer) -> None:
    server.script(Truncated('{"customer": "Ada By'), reply(GOOD))
    result = run_reask(server, max_reasks=1)
    assert result.accepted
    assert result.calls == 2
    assert "Your answer was cut off" in server.requests[1].body["messages"][-1]["content"]


def test_zero_reasks_is_a_single_pass(server: FakeOpenAIServer) -> None:
    server.script(reply(TWO_WRONG), reply(GOOD))
    result = run_reask(server, max_reasks=0)
    assert (result.accepted, result.calls, server.pending) == (False, 1, 1)
    with pytest.raises(ValueError, match="max_reasks"):
        run_reask(server, max_reasks=-1)


# --- checking a whole answer --------------------------------------------------------------


def test_check_answer_reports_parse_errors_and_keeps_the_steps_before() -> None:
    text = '{"customer": "Ada Byron", "team": "shipping"}'  # order_id skipped: out of order?
    output, step_ok, errors = check_answer(Triage, text, CONTEXT)
    assert output is None
    assert step_ok["customer"]
    assert not step_ok["order_id"]
    assert errors


def test_check_answer_skips_prose_when_tolerant() -> None:
    text = "Here you go:\n" + json.dumps(GOOD) + "\nHope that helps."
    output, step_ok, errors = check_answer(Triage, text, CONTEXT, tolerant=True)
    assert output is not None
    assert output.model_dump() == GOOD
    assert all(step_ok.values())
    assert errors == []
    _, _, strict_errors = check_answer(Triage, text, CONTEXT)
    assert strict_errors  # prose before the object: not JSON
    _, step_ok, errors = check_answer(Triage, json.dumps(GOOD) + "\nHope that helps.", CONTEXT)
    assert (all(step_ok.values()), errors) == (True, [])  # after it: ignored, as by the executor


def test_a_refusal_is_not_accepted_and_not_asked_again(server: FakeOpenAIServer) -> None:
    server.script(Reply(refusal="I cannot help with that."), reply(GOOD))
    result = run_reask(server, max_reasks=2)
    assert (result.accepted, result.calls, server.pending) == (False, 1, 1)
    assert result.attempts[0].refused
    assert "refused" in result.errors[-1]


class Counted(arq.Reasoning):
    """Count the items."""

    count: int = arq.query("How many items are there?", ge=1)
    items: list[str] = arq.query("Which items?")
    total: int = arq.answer("How many, counted again?")

    @field_validator("items")
    @classmethod
    def as_many_as_counted(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(value) != info.data["count"]:  # needs the count step
            raise ValueError("list as many items as counted")
        return value

    @arq.check("count", "total")
    def same_total(count: int, total: int) -> None:
        if count != total:
            raise ValueError("the total differs from the count")


def test_steps_after_a_failed_step_are_recorded_honestly() -> None:
    text = json.dumps({"count": 0, "items": ["a", "b"], "total": 2})
    output, step_ok, errors = check_answer(Counted, text)
    assert output is None
    # count fails; items cannot be checked without it; total's cross-check cannot run
    assert step_ok == {"count": False, "items": False, "total": True}
    assert [getattr(e, "step", None) for e in errors] == ["count", "items"]
    assert "a step it reads failed" in str(errors[1])
    # with the count right, the same cross-check does run and fails at total
    _, step_ok, errors = check_answer(Counted, json.dumps({"count": 1, "items": ["a"], "total": 2}))
    assert step_ok == {"count": True, "items": True, "total": False}
