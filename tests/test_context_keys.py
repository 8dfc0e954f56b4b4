"""The context keys a schema's checks read are checked before the first request."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

import arq
from arq.backends import OpenAIBackend
from arq.blueprints.grounded_answer import GroundedAnswer
from arq.checks.context import context_keys
from arq.cli import cli
from arq.testing import FakeOpenAIServer, Reply


class Quote(BaseModel):
    text: Annotated[str, arq.verbatim_in("source")]
    replies: list[Quote] = []  # a recursive model is read once


class Checked(arq.Reasoning):
    """Check everything against the context."""

    quotes: list[Quote] = arq.query("Which quotes?")
    tool: Annotated[str, arq.one_of("tools")] | None = arq.query("Which tool?", default=None)
    covered: Annotated[list[str], arq.covers("items")] = arq.query("Each item?")
    signed: Annotated[str, arq.date_in("source")] = arq.query("When was it signed?")
    answer: str = arq.answer("The answer.")


CONTEXT: dict[str, Any] = {"source": "Signed 2021-03-04.", "tools": ["search"], "items": ["a"]}


def test_the_checks_know_the_keys_they_read() -> None:
    fields = {step.name: step.field for step in arq.steps(Checked)}
    assert context_keys(fields) == {
        "source": ["quotes", "signed"],
        "tools": ["tool"],
        "items": ["covered"],
    }


def test_build_names_each_missing_key_and_the_steps_that_read_it() -> None:
    with pytest.raises(arq.ContextError) as caught:
        arq.PromptBuilder().build(Checked, {"tools": ["search"]})
    assert caught.value.missing == {"source": ("quotes", "signed"), "items": ("covered",)}
    message = str(caught.value)
    assert "'source' (read by the checks of steps quotes, signed)" in message
    assert "'items' (read by the checks of step covered)" in message
    assert "pass context={'source': ..., 'items': ...}" in message
    with pytest.raises(arq.ContextError, match="'tools'"):
        arq.PromptBuilder().build(Checked)


def test_a_key_present_is_enough_whatever_its_value() -> None:
    assert arq.PromptBuilder().build(Checked, CONTEXT).messages
    assert arq.PromptBuilder().build(Checked, {**CONTEXT, "tools": None}).messages


def test_keys_read_only_by_a_cross_step_check_stay_optional() -> None:
    # GroundedAnswer's numbers check reads context.get("question"): it tolerates absence
    assert arq.PromptBuilder().build(GroundedAnswer, {"documents": "The fee is 5 EUR."})


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def test_run_and_map_check_the_context_before_any_request(server: FakeOpenAIServer) -> None:
    server.script(Reply('{"need": "the fee"}'))
    backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-keys")
    with arq.Executor(backend) as executor:
        with pytest.raises(arq.ContextError, match=r"'documents' .*step facts"):
            executor.run(GroundedAnswer, {"question": "How much is the fee?"})
        [outcome] = executor.map(GroundedAnswer, [{"question": "How much?"}])
    assert isinstance(outcome, arq.ContextError)
    assert outcome.missing == {"documents": ("facts",)}
    assert server.requests == []


def test_arq_run_without_a_key_the_checks_read_makes_no_request(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    server.script(Reply('{"need": "the fee"}'))
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"question": "How much is the fee?"}))
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "grounded-answer", "--context", str(context)]
    code = cli([*argv, "--base-url", server.base_url, "--model", "m"], stdout=out, stderr=err)
    assert code == 2
    assert "ContextError" in err.getvalue()
    assert "'documents' (read by the checks of step facts)" in err.getvalue()
    assert server.requests == []
