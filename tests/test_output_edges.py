"""Output that JSON cannot hold, and whitespace after the object.

Through the real openai SDK against the loopback test server: a lone surrogate or a number
that is not finite is an invalid step, repaired like any other, and the trace of such a run
is JSON; text after the complete object closes the stream.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

import arq
from arq.backends import OpenAIBackend
from arq.cli import cli
from arq.errors import StepError
from arq.testing import FakeOpenAIServer, Reply
from arq.validation import StepChecker, validate_output


class Word(arq.Reasoning):
    """Give a word."""

    a: str = arq.answer("A?")


class Number(arq.Reasoning):
    """Give a number."""

    a: float = arq.answer("A?")


class Item(BaseModel):
    name: str
    score: float


class Nested(arq.Reasoning):
    """Give items."""

    items: list[Item] = arq.query("Which items?")
    extra: dict[str, Any] = arq.query("Anything else?")
    exact: Decimal = arq.answer("How much?")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def executor(server: FakeOpenAIServer) -> Iterator[arq.Executor]:
    backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-test-edges")
    with arq.Executor(backend) as made:
        yield made


def strict_json(line: str) -> Any:
    """`json.loads` that refuses NaN and Infinity, which are not JSON."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


# --- lone surrogates ---------------------------------------------------------------------

# `{"a": "\ud800"}` as the model writes it (a JSON escape), and as a server may deliver it
# (the SSE event's JSON escapes it, so the SDK hands arq a str holding the surrogate)
SURROGATES = [r'{"a": "\ud800"}', '{"a": "\ud800"}', r'{"a": "x\udfffy"}']


@pytest.mark.parametrize("bad", SURROGATES)
def test_a_lone_surrogate_is_an_invalid_step_and_is_repaired(
    server: FakeOpenAIServer, executor: arq.Executor, bad: str, tmp_path: Path
) -> None:
    server.script(Reply(bad), Reply('{"a": "x"}'))
    result = executor.run(Word, {})
    assert result.output.a == "x"
    assert result.output.model_dump_json() == '{"a":"x"}'
    first, repair = result.trace.attempts
    assert repair.kind == "repair"
    assert first.steps[0].error is not None
    assert "surrogate" in first.steps[0].error
    assert "surrogate" in server.requests[1].body["messages"][-1]["content"]
    path = tmp_path / "trace.jsonl"
    result.trace.to_jsonl(path)
    lines = path.read_bytes().decode("utf-8").splitlines()  # strict UTF-8
    assert [strict_json(line)["kind"] for line in lines] == ["first", "repair"]
    assert strict_json(lines[0])["steps"][0]["value"] == json.loads(bad)["a"]


def test_a_surrogate_pair_is_a_character() -> None:
    checker = StepChecker(Word)
    assert checker.accept("a", json.loads(r'"\ud83d\ude00"')) == "\N{GRINNING FACE}"


@pytest.mark.parametrize(
    ("name", "value", "where"),
    [
        ("items", [{"name": "ok", "score": 1}, {"name": "b\ud800", "score": 2}], "items[1].name"),
        ("extra", {"notes": ["fine", {"deep": "\udc00"}]}, "extra.notes[1].deep"),
        ("extra", {"\ud800": 1}, "extra"),
    ],
)
def test_a_lone_surrogate_anywhere_in_a_step_names_where(name: str, value: Any, where: str) -> None:
    checker = StepChecker(Nested)
    if name == "extra":
        checker.accept("items", [])
    with pytest.raises(StepError, match="surrogate") as caught:
        checker.accept(name, value)
    assert caught.value.step == name
    assert caught.value.errors[0]["type"] == "unpaired_surrogate"
    assert f"- {where}: " in caught.value.feedback
    assert name not in checker.accepted


def test_validate_output_refuses_a_lone_surrogate() -> None:
    with pytest.raises(StepError, match="surrogate"):
        validate_output(Word, {"a": "\ud800"})


def test_arq_run_writes_the_trace_of_a_lone_surrogate(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    schema = tmp_path / "word.py"
    schema.write_text("import arq\n\nclass Word(arq.Reasoning):\n    a: str = arq.answer('A?')\n")
    server.script(Reply(r'{"a": "\ud800"}'), Reply('{"a": "x"}'))
    trace = tmp_path / "trace.jsonl"
    out, err = io.StringIO(), io.StringIO()
    argv = [f"{schema}:Word", "--base-url", server.base_url, "--model", "m", "--trace", trace]
    code = cli(["run", *map(str, argv)], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert "FAIL a: " in out.getvalue()
    lines = trace.read_bytes().decode("utf-8").splitlines()
    assert [strict_json(line)["kind"] for line in lines] == ["first", "repair"]


# --- numbers that are not finite ---------------------------------------------------------


NOT_FINITE = ["1e999", "-1e999", "1E+400", "1" + "0" * 400 + ".5", '"inf"', '"-Infinity"', '"NaN"']


@pytest.mark.parametrize("written", NOT_FINITE)
def test_a_number_that_is_not_finite_is_an_invalid_step_however_written(
    server: FakeOpenAIServer, executor: arq.Executor, written: str, tmp_path: Path
) -> None:
    server.script(Reply(f'{{"a": {written}}}'), Reply('{"a": 1.5}'))
    result = executor.run(Number, {})
    assert result.output.a == 1.5
    first = result.trace.attempts[0]
    assert first.steps[0].error is not None
    assert "not finite" in first.steps[0].error
    path = tmp_path / "trace.jsonl"
    result.trace.to_jsonl(path)
    for line in path.read_text(encoding="utf-8").splitlines():
        strict_json(line)  # no Infinity or NaN token


@pytest.mark.parametrize(
    ("name", "value", "where"),
    [
        ("items", [{"name": "a", "score": float("inf")}], "items[0].score"),
        ("items", [{"name": "a", "score": "nan"}], "items[0].score"),
        ("extra", {"x": [1, float("-inf")]}, "extra.x[1]"),
        ("exact", "Infinity", "exact"),
    ],
)
def test_a_number_that_is_not_finite_anywhere_in_a_step_names_where(
    name: str, value: Any, where: str
) -> None:
    checker = StepChecker(Nested)
    for earlier in ("items", "extra"):
        if earlier == name:
            break
        checker.accept(earlier, [] if earlier == "items" else {})
    with pytest.raises(StepError, match="finite") as caught:
        checker.accept(name, value)
    assert caught.value.errors[0]["type"] == "finite_number"
    assert f"- {where}: " in caught.value.feedback


def test_a_model_that_allows_inf_still_gets_no_inf_step() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(allow_inf_nan=True)
        x: float = Field(allow_inf_nan=True)

    class Holder(arq.Reasoning):
        loose: Loose = arq.answer("Loose?")

    with pytest.raises(StepError, match="not finite"):
        validate_output(Holder, {"loose": {"x": "inf"}})


# --- whitespace after the object ---------------------------------------------------------

OBJECT = '{"a": "x"}'


def test_whitespace_after_the_object_closes_the_stream(
    server: FakeOpenAIServer, executor: arq.Executor
) -> None:
    server.script(Reply(OBJECT + " " * 300, chunk_chars=1, tokens_per_second=200))
    result = executor.run(Word, {})
    assert result.output.a == "x"
    request = server.requests[0]
    assert request.wait()
    assert request.disconnected_early
    assert not request.completed
    assert request.sent_chars < len(OBJECT) + 150  # not the 300 spaces
    [attempt] = result.trace.attempts
    assert attempt.text == OBJECT  # the text after the object is not read
    # closed before the finish reason and the usage came: the usage is estimated
    assert attempt.stopped_early
    assert attempt.finish_reason is None
    assert attempt.usage.estimated
    assert attempt.usage.completion_tokens == len(OBJECT)  # one chunk per character


def test_the_finish_reason_and_usage_after_the_object_are_read(
    server: FakeOpenAIServer, executor: arq.Executor
) -> None:
    # whitespace in the chunk that closes the object, then the finish and usage chunks
    server.script(Reply(OBJECT + "\n", chunk_chars=len(OBJECT) + 1))
    result = executor.run(Word, {})
    request = server.requests[0]
    assert request.wait()  # the client can see [DONE] before the server records the end
    assert request.completed
    [attempt] = result.trace.attempts
    assert (attempt.finish_reason, attempt.stopped_early) == ("stop", False)
    assert not attempt.usage.estimated
    assert attempt.usage.completion_tokens == 1
