"""Every file arq writes is written whole or not at all (`arq.trace.write_file`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

import arq
from arq.cli import cli
from arq.trace import Attempt, StepRecord, Trace, replacing, write_file


class Word(arq.Reasoning):
    """Give a word."""

    a: str = arq.answer("A?")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fail_halfway(path: Path) -> None:
    with replacing(path) as temp:
        temp.write_text("half of the n")
        raise RuntimeError("the writer failed")


def test_write_file_replaces_the_file_or_leaves_it_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    write_file(path, "old\n")
    os.chmod(path, 0o640)
    with pytest.raises(RuntimeError, match="the writer failed"):
        fail_halfway(path)
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []
    write_file(path, "new\n", append=True)
    assert path.read_text() == "old\nnew\n"
    assert os.stat(path).st_mode & 0o777 == 0o640  # the mode is kept
    write_file(path, "a \ud800 b")  # written as its escape, as JSON does
    assert path.read_bytes() == b"a \\ud800 b"


def test_a_trace_that_fails_to_serialise_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    trace = Trace(schema="Word", model="m")
    request = arq.PromptBuilder().build(Word)
    good = Attempt(1, "first", request, text="{}")
    bad = Attempt(2, "repair", request, text="{}")
    bad.steps.append(StepRecord("a", object(), 0.0))  # no JSON for it
    trace.attempts += [good, bad]
    path = tmp_path / "trace.jsonl"
    path.write_text("earlier run\n")
    with pytest.raises(TypeError):
        trace.to_jsonl(path)
    with pytest.raises(TypeError):
        trace.to_jsonl(path, append=True)
    assert path.read_text() == "earlier run\n"
    assert leftovers(tmp_path) == []
    trace.attempts.pop()
    trace.to_jsonl(path, append=True)
    assert path.read_text().splitlines()[0] == "earlier run"
    assert json.loads(path.read_text().splitlines()[1])["number"] == 1


def test_a_report_that_cannot_be_written_leaves_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"a": "x"}\n')
    report = tmp_path / "report.json"
    report.write_text("the last report\n")

    def refuse(source: Any, target: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    err = io.StringIO()
    argv = ["validate", "tests.test_files:Word", str(outputs), "--format", "json"]
    code = cli([*argv, "--output", str(report)], stdout=io.StringIO(), stderr=err)
    assert code == 2
    assert "cannot write" in err.getvalue()
    assert "No space left" in err.getvalue()
    assert report.read_text() == "the last report\n"
    assert leftovers(tmp_path) == []


def test_trace_lines_are_json_whatever_a_rejected_step_held(tmp_path: Path) -> None:
    attempt = Attempt(1, "first", arq.PromptBuilder().build(Word), text='{"a": "\ud800"')
    attempt.steps += [
        StepRecord("a", "\ud800", 0.0, "rejected"),
        StepRecord("a", [float("inf"), float("-inf"), float("nan")], 0.0, "rejected"),
    ]
    path = tmp_path / "trace.jsonl"
    Trace(schema="Word", model="m", attempts=[attempt]).to_jsonl(path)

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    [line] = path.read_bytes().decode("utf-8").splitlines()  # strict UTF-8
    record = json.loads(line, parse_constant=refuse)  # no NaN or Infinity token
    assert record["text"] == '{"a": "\ud800"'
    assert [step["value"] for step in record["steps"]] == [
        "\ud800",
        ["Infinity", "-Infinity", "NaN"],
    ]
