"""The evaluation harness: strategies, figures, reports, the `arq eval` command, the scenarios."""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

import arq
from arq.cli import cli
from arq.errors import DatasetError
from arq.eval import EvalReport, RunOutcome, evaluate, load_dataset, unchecked
from arq.eval.report import percentile
from arq.prompt import Request
from arq.schema import cross_checks
from arq.testing import FakeOpenAIServer, ReceivedRequest, Reply, ScriptedBackend, Status
from arq.testing.replies import split_pieces
from arq.testing.schema import request_schema

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "examples" / "scenarios"
PNG = b"\x89PNG\r\n\x1a\n"


class Ticket(arq.Reasoning):
    """Route a support ticket to a team."""

    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query(
        "Which order id does the message give?", instruction="Copy it exactly."
    )
    team: Literal["billing", "tech"] = arq.answer("Which team takes the ticket?")


def team_matches(output: Any, item: Mapping[str, Any]) -> bool:
    return bool(output.team == item["expect"]["team"])


# good: right at once; fixable: an invented order id, right after a repair; hopeless: the
# same invented id every time and the wrong team
DATASET = [
    {"id": "good", "context": {"message": "case good: order A-1 charged twice"}},
    {"id": "fixable", "context": {"message": "case fixable: order A-2 charged twice"}},
    {"id": "hopeless", "context": {"message": "case hopeless: order A-3 charged twice"}},
]
for _item in DATASET:
    _item["expect"] = {"team": "billing"}


def _case(request: Request) -> str:
    text = next(m["content"] for m in request.messages if "case " in m["content"])
    return text.split("case ", 1)[1].split(":", 1)[0]


def ticket_reply(request: Request) -> str:
    """What a scripted model answers, for whichever steps the request asks."""
    case, repair = _case(request), request.metadata.get("repair") is not None
    number = {"good": "A-1", "fixable": "A-2" if repair else "Z-9", "hopeless": "Z-9"}[case]
    values = {
        "reasoning": "It is about a charge.",
        "order_id": number,
        "team": "tech" if case == "hopeless" else "billing",
    }
    return json.dumps({step: values[step] for step in request.steps})


def scripted(calls: int = 100) -> ScriptedBackend:
    return ScriptedBackend(*[ticket_reply] * calls)


def run_all(**options: Any) -> tuple[EvalReport, ScriptedBackend]:
    backend = scripted()
    settings: dict[str, Any] = {
        "strategies": ("arq", "arq-unchecked", "cot", "direct"),
        "repeats": 2,
        "scorers": [team_matches],
        "concurrency": 1,
        "seed": 5,
        "progress": False,
    }
    report = evaluate(Ticket, DATASET, backend=backend, **(settings | options))
    return report, backend


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return run_all()[0]


def outcome(report: EvalReport, strategy: str, item: str, repeat: int = 0) -> RunOutcome:
    return next(
        o for o in report.outcomes if (o.strategy, o.item, o.repeat) == (strategy, item, repeat)
    )


# --- strategies ------------------------------------------------------------------------------


class Entry(BaseModel):
    """A nested item with a check of its own."""

    quote: Annotated[str, Field(max_length=20), arq.verbatim_in("message")] | None = Field(
        description="A quote, or null."
    )


class Nested(arq.Reasoning):
    """A schema with checks at every level."""

    entries: Annotated[list[Entry], Field(max_length=3)] = arq.query("Which quotes?")
    team: Literal["billing", "tech"] = arq.answer("Which team?")

    @arq.check("entries", "team")
    def never_tech(entries: list[Entry], team: str) -> None:
        if team == "tech":
            raise ValueError("never tech")


@pytest.mark.parametrize("schema", [Ticket, Nested])
def test_unchecked_keeps_the_prompt_and_json_schema_and_drops_every_check(
    schema: type[arq.Reasoning],
) -> None:
    plain = unchecked(schema)
    context = {"message": "order A-1"}
    built, same = (arq.PromptBuilder().build(s, context) for s in (schema, plain))
    assert built.messages == same.messages
    assert built.output_schema == same.output_schema
    assert arq.json_schema(plain) == arq.json_schema(schema)
    assert cross_checks(plain) == ()
    assert unchecked(schema) is plain  # derived once


def test_unchecked_accepts_what_the_checks_refuse_but_not_wrong_types() -> None:
    bad = {"entries": [{"quote": "invented"}], "team": "tech"}
    with pytest.raises(arq.StepError):
        arq.validate_output(Nested, bad, context={"message": "order A-1"})
    assert arq.validate_output(unchecked(Nested), bad, context={}).model_dump()["team"] == "tech"
    with pytest.raises(arq.StepError, match="team"):
        arq.validate_output(unchecked(Nested), {"entries": [], "team": "sales"})
    with pytest.raises(arq.StepError):  # constraints stay: they are part of the JSON Schema
        arq.validate_output(unchecked(Nested), {"entries": [{"quote": "x" * 21}], "team": "tech"})


# --- figures ---------------------------------------------------------------------------------


def test_outcomes_of_each_strategy(report: EvalReport) -> None:
    fixed = outcome(report, "arq", "fixable")
    assert fixed.success
    assert (fixed.repairs, fixed.repaired_steps, fixed.calls) == (1, ("order_id",), 2)
    assert fixed.output == {"order_id": "A-2", "team": "billing"}
    stuck = outcome(report, "arq", "hopeless")
    assert not stuck.success
    assert stuck.output is None
    assert (stuck.error_type, stuck.failed_step, stuck.repairs) == (
        "ConvergenceError",
        "order_id",
        1,
    )
    naive = outcome(report, "arq-unchecked", "fixable")
    assert naive.success  # the scorer reads the team, which is right
    assert naive.output == {"order_id": "Z-9", "team": "billing"}
    assert (naive.checks_passed, naive.failed_step, naive.repairs) == (False, "order_id", 0)
    direct = outcome(report, "direct", "hopeless")
    assert direct.output == {"team": "tech"}
    assert direct.scores == {"team_matches": False}
    assert direct.checks_passed is True  # the answer step carries no check
    assert outcome(report, "cot", "good").output == {
        "reasoning": "It is about a charge.",
        "team": "billing",
    }


def test_success_pass_k_repair_rate_and_failed_steps(report: EvalReport) -> None:
    arq_ = report.summary("arq")
    assert (arq_.runs, arq_.items, arq_.successes) == (6, 3, 4)
    assert arq_.success_rate == pytest.approx(4 / 6)
    assert arq_.pass_k == pytest.approx(2 / 3)
    assert arq_.repair_rate == pytest.approx(4 / 6)
    assert arq_.failed_steps == {"order_id": 2}
    assert arq_.repaired_steps == {"order_id": 4}
    assert arq_.errors == {"ConvergenceError": 2}
    assert arq_.checks_passed_rate == pytest.approx(4 / 6)
    assert arq_.answered_rate == pytest.approx(4 / 6)
    assert arq_.precision == 1.0
    naive = report.summary("arq-unchecked")
    assert naive.success_rate == pytest.approx(4 / 6)
    assert naive.checks_passed_rate == pytest.approx(2 / 6)
    assert naive.answered_rate == 1.0
    assert naive.precision == pytest.approx(4 / 6)
    assert naive.failed_steps == {"order_id": 4}
    assert (naive.repair_rate, naive.errors) == (0.0, {})
    assert naive.scorer_failures == {"team_matches": 2}
    for name in ("cot", "direct"):
        summary = report.summary(name)
        assert summary.success_rate == pytest.approx(4 / 6)
        assert summary.checks_passed_rate == 1.0


def test_pass_k_needs_every_repeat_to_succeed() -> None:
    answers = iter(['{"team": "billing"}', '{"team": "billing"}', '{"team": "tech"}'])
    backend = ScriptedBackend(*[lambda request: next(answers)] * 3)
    items = [{"id": "steady", "context": {"message": "a"}, "expect": {"team": "billing"}}]
    items.append({"id": "flaky", "context": {"message": "b"}, "expect": {"team": "billing"}})
    report = evaluate(
        Ticket,
        items[1:],
        backend=backend,
        strategies=["direct"],
        repeats=3,
        scorers=[team_matches],
        progress=False,
    )
    flaky = report.summary("direct")
    assert flaky.success_rate == pytest.approx(2 / 3)
    assert (flaky.pass_k, flaky.pass_any) == (0.0, 1.0)


def test_seeds_and_temperature_are_set_per_repeat_and_reported() -> None:
    report, backend = run_all(strategies=["direct"], repeats=3, temperature=0.4)
    seeds = [call.settings.seed for call in backend.calls]
    assert seeds == [5, 5, 5, 6, 6, 6, 7, 7, 7]
    assert {call.settings.temperature for call in backend.calls} == {0.4}
    assert [o.seed for o in report.outcomes] == seeds
    assert (report.settings["seeds"], report.settings["temperature"]) == ([5, 6, 7], 0.4)


def test_repairs_only_for_arq_and_repair_seeds_differ() -> None:
    _, backend = run_all(strategies=["arq"], repeats=1, max_repairs=3)
    repair = [c for c in backend.calls if c.request.metadata.get("repair")]
    assert [c.settings.seed for c in repair] == [6, 6]  # the second call of its run
    _, backend = run_all(strategies=["arq-unchecked"], repeats=1)
    assert not [c for c in backend.calls if c.request.metadata.get("repair")]


def test_output_tokens_are_summed_per_run_and_strategy(report: EvalReport) -> None:
    direct = report.summary("direct")
    pieces = [len(split_pieces(json.dumps({"team": t}))) for t in ("billing",) * 2 + ("tech",)]
    assert direct.output_tokens_total == 2 * sum(pieces)
    assert direct.output_tokens_mean == pytest.approx(2 * sum(pieces) / 6)
    assert not direct.tokens_estimated
    for summary in report.summaries():
        runs = [o for o in report.outcomes if o.strategy == summary.strategy]
        assert summary.output_tokens_total == sum(o.output_tokens for o in runs) > 0
        assert summary.prompt_tokens_total == sum(o.prompt_tokens for o in runs) > 0
    # a repair closes the failing stream early: its tokens are counted, estimated
    assert report.summary("arq").tokens_estimated


def test_latency_is_measured_for_every_run(report: EvalReport) -> None:
    assert all(o.latency is not None and o.latency >= 0 for o in report.outcomes)
    for summary in report.summaries():
        assert summary.latency_p50 is not None
        assert summary.latency_p95 is not None
        assert 0 <= summary.latency_p50 <= summary.latency_p95


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_errors_by_type_and_scorer_errors() -> None:
    def broken(request: Request) -> str:
        raise arq.BackendError("the service is down", retryable=False)

    def reads_a_reasoning_step(output: Any, item: Mapping[str, Any]) -> bool:
        return bool(output.order_id)

    backend = ScriptedBackend(broken, '{"team": "billing"}')
    report = evaluate(
        Ticket,
        DATASET[:2],
        backend=backend,
        strategies=["direct"],
        scorers={"team": team_matches, "order": reads_a_reasoning_step},
        concurrency=1,
        progress=False,
    )
    down, answered = report.outcomes
    assert (down.error_type, down.calls, down.success) == ("BackendError", 1, False)
    assert down.latency is not None
    assert answered.scores == {"team": True, "order": False}
    assert answered.scorer_errors["order"].startswith("AttributeError")
    assert not answered.success
    summary = report.summary("direct")
    assert summary.errors == {"BackendError": 1}
    assert summary.scorer_failures == {"order": 1}


def test_several_schemas_by_item() -> None:
    class Other(arq.Reasoning):
        """Say yes."""

        answer: Literal["yes"] = arq.answer("Yes?")

    items = [dict(DATASET[0], schema="ticket"), {"id": "o", "schema": "other", "context": {}}]
    backend = ScriptedBackend(ticket_reply, '{"answer": "yes"}', ticket_reply, '{"answer": "yes"}')
    report = evaluate(
        {"ticket": Ticket, "other": Other},
        items,
        backend=backend,
        strategies=["arq", "direct"],
        scorers=[lambda output, item: True],
        concurrency=1,
        progress=False,
    )
    assert [(o.item, o.schema, o.success) for o in report.outcomes] == [
        ("good", "Ticket", True),
        ("o", "Other", True),
    ] * 2
    assert report.settings["schemas"] == ["Ticket", "Other"]
    by_schema = "| strategy | Ticket | Other |\n|---|---|---|\n"
    by_schema += "| arq | 100.0% (1/1) | 100.0% (1/1) |\n| direct | 100.0% (1/1) | 100.0% (1/1) |"
    assert by_schema in report.to_markdown()
    with pytest.raises(DatasetError, match="names schema 'nope'; the schemas given: ticket"):
        evaluate(
            {"ticket": Ticket},
            [dict(DATASET[0], schema="nope")],
            backend=backend,
            scorers=[team_matches],
        )
    with pytest.raises(DatasetError, match="but Ticket is evaluated"):
        evaluate(
            Ticket, [dict(DATASET[0], schema="Other")], backend=backend, scorers=[team_matches]
        )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"strategies": ["arq", "tot"]}, "strategies must be"),
        ({"strategies": []}, "strategies must be"),
        ({"scorers": []}, "at least one scorer"),
        ({"repeats": 0}, "at least 1"),
    ],
)
def test_bad_arguments(options: dict[str, Any], expected: str) -> None:
    settings: dict[str, Any] = {"scorers": [team_matches]} | options
    with pytest.raises(ValueError, match=expected):
        evaluate(Ticket, DATASET, backend=scripted(), progress=False, **settings)


def test_progress_bar_on_a_stream_and_off() -> None:
    stream = io.StringIO()
    run_all(strategies=["direct"], repeats=2, progress=stream)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("[########################] 6/6 direct r2/2  ok 4")
    assert all(line.startswith("[") and "elapsed" in line for line in lines)


def test_evaluate_works_inside_a_running_loop() -> None:
    import asyncio

    async def inside() -> EvalReport:
        return run_all(strategies=["direct"], repeats=1)[0]

    assert asyncio.run(inside()).summary("direct").runs == 3


# --- reports ---------------------------------------------------------------------------------


def test_json_report_holds_everything(report: EvalReport) -> None:
    data = json.loads(report.to_json())
    assert data["settings"]["seeds"] == [5, 6]
    assert data["settings"]["strategies"] == ["arq", "arq-unchecked", "cot", "direct"]
    assert data["settings"]["scorers"] == ["team_matches"]
    assert data["settings"]["model"] == "scripted"
    assert len(data["outcomes"]) == 4 * 2 * 3
    first = data["outcomes"][0]
    assert (first["item"], first["strategy"], first["repeat"], first["seed"]) == (
        "good",
        "arq",
        0,
        5,
    )
    assert first["scores"] == {"team_matches": True}
    assert data["summary"]["arq"]["pass_k"] == pytest.approx(2 / 3)
    assert data["summary"]["arq"]["failed_steps"] == {"order_id": 2}


def test_json_report_reads_back(report: EvalReport) -> None:
    again = EvalReport.from_json(report.to_json())
    assert again.outcomes == report.outcomes
    assert again.to_markdown() == report.to_markdown()


def test_markdown_report_has_a_row_per_strategy(report: EvalReport) -> None:
    text = report.to_markdown()
    assert "3 items x 2 repeats per strategy, temperature 0.7, seed 5 + repeat" in text
    assert "| strategy | success | pass^2 | answered | success when answered |" in text
    assert "| arq | 66.7% (4/6) | 66.7% | 66.7% | 100.0% | 66.7% | 66.7% |" in text
    assert "| arq-unchecked | 66.7% (4/6) | 66.7% | 100.0% | 66.7% | 33.3% | 0.0% |" in text
    assert "| arq | order_id: 2 | order_id: 4 | - | ConvergenceError: 2 |" in text
    assert "| direct | - | - | team_matches: 2 | - |" in text


def test_plot_writes_a_png(report: EvalReport, tmp_path: Path) -> None:
    report.plot(tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == PNG


def test_a_plot_that_fails_halfway_leaves_the_last_png(
    report: EvalReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    last = tmp_path / "report.png"
    last.write_bytes(PNG + b"the last plot")

    def half(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(PNG[:4])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half)
    with pytest.raises(OSError, match="No space left"):
        report.plot(last)
    assert last.read_bytes() == PNG + b"the last plot"
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]


def test_plot_without_matplotlib_names_the_extra(
    report: EvalReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'arq-reasoning\[plot\]'"):
        report.plot(tmp_path / "report.png")


# --- datasets --------------------------------------------------------------------------------


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_dataset_reads_items_and_defaults(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "d.jsonl",
        '{"id": 7, "context": {"message": "a"}, "expect": {"team": "tech"}}',
        "",
        '{"context": {"message": "b"}, "note": "kept"}',
    )
    first, second = load_dataset(path)
    assert (first["id"], first["expect"]) == ("7", {"team": "tech"})
    assert (second["id"], second["expect"], second["note"]) == ("3", {}, "kept")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"context": {}}', "{oops"], "line 2: not valid JSON"),
        (['{"context": {}}', "[1, 2]"], "line 2: an item must be a JSON object"),
        (['{"id": "a", "expect": {}}'], "line 1: 'context' must be an object"),
        (['{"context": {}, "expect": [1]}'], "line 1: 'expect' must be an object"),
        (['{"context": {}, "expects": {}}'], "unknown key 'expects': did you mean 'expect'?"),
        (['{"id": true, "context": {}}'], "'id' must be a non-empty text or a number"),
        (['{"id": "a", "context": {}}', '{"id": "a", "context": {}}'], "'a' is used twice"),
        (["", " "], "holds no items"),
    ],
)
def test_load_dataset_bad_lines(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = write_lines(tmp_path / "d.jsonl", *lines)
    with pytest.raises(DatasetError, match=expected):
        load_dataset(path)


def test_load_dataset_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "absent.jsonl")


# --- the command -----------------------------------------------------------------------------

HELPER = '''\
"""A schema and scorers for the `arq eval` tests."""

from typing import Annotated, Literal

import arq


class Ticket(arq.Reasoning):
    """Route a support ticket to a team."""

    order_id: Annotated[str, arq.verbatim_in("message")] = arq.query("Which order id?")
    team: Literal["billing", "tech"] = arq.answer("Which team takes the ticket?")


def team(output, item):
    return output.team == item["expect"]["team"]


SCORERS = {"team": team}
LIST = [team]
NOT_SCORERS = {"team": 3}
NUMBER = 7
'''


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def one_error_line(self) -> str:
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: ")
        assert "Traceback" not in self.err + self.out
        return lines[0]


def run(*argv: str | Path) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = cli([str(a) for a in argv], stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    helper = tmp_path / "eval_helper.py"
    helper.write_text(HELPER)
    data = tmp_path / "cases.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in DATASET))
    return {"schema": f"{helper}:Ticket", "data": str(data), "helper": str(helper)}


def answer_asked(values: Mapping[str, Any]) -> Callable[[ReceivedRequest], Reply]:
    def respond(request: ReceivedRequest) -> Reply:
        asked = request_schema(request.body)["properties"]
        return Reply(json.dumps({name: values[name] for name in asked}))

    return respond


def test_eval_command_prints_the_table_and_writes_the_reports(
    files: dict[str, str], tmp_path: Path
) -> None:
    values = {"order_id": "A-1", "team": "billing", "reasoning": "a charge"}
    with FakeOpenAIServer() as server:
        server.responder = answer_asked(values)
        result = run(
            "eval", files["schema"], files["data"], "--scorers", f"{files['helper']}:SCORERS",
            "--base-url", server.base_url, "--model", "m", "--strategies", "arq,direct",
            "--repeats", "2", "--seed", "3", "--out", tmp_path / "out",
        )  # fmt: skip
        bodies = [r.body for r in server.requests]
    assert result.code == 0, result.err
    assert "| arq | 33.3% (2/6) | 33.3% |" in result.out  # A-1 is quoted in one message only
    assert "| direct | 100.0% (6/6) | 100.0% |" in result.out
    assert "[########################] 12/12 direct r2/2" in result.err
    assert sorted({body["seed"] for body in bodies}) == [3, 4, 5]  # 5: a repair's seed
    out = tmp_path / "out"
    assert (out / "report.md").read_text() == result.out.split("\nreport written")[0]
    data = json.loads((out / "report.json").read_text())
    assert len(data["outcomes"]) == 12
    assert (out / "report.png").read_bytes()[:8] == PNG


def test_eval_reports_that_cannot_be_written_leave_the_last_ones(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the last report\n")
    real = os.replace

    def full_disk(source: Any, target: Any) -> None:
        if str(target).endswith("report.md"):
            raise OSError(28, "No space left on device")
        real(source, target)

    monkeypatch.setattr(os, "replace", full_disk)
    with FakeOpenAIServer() as server:
        server.responder = answer_asked({"team": "tech"})
        result = run(
            "eval", files["schema"], files["data"], "--scorers", f"{files['helper']}:SCORERS",
            "--base-url", server.base_url, "--model", "m", "--strategies", "direct",
            "--no-progress", "--out", out,
        )  # fmt: skip
    assert result.code == 2
    assert f"cannot write {out / 'report.md'}: No space left on device" in result.err
    assert (out / "report.md").read_text() == "the last report\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_eval_command_takes_a_list_of_scorers_a_limit_and_no_progress(
    files: dict[str, str],
) -> None:
    with FakeOpenAIServer() as server:
        server.responder = answer_asked({"team": "tech"})
        result = run(
            "eval", files["schema"], files["data"], "--scorers", f"{files['helper']}:LIST",
            "--base-url", server.base_url, "--model", "m", "--strategies", "direct",
            "--no-progress", "--limit", "2",
        )  # fmt: skip
    assert result.code == 0, result.err
    assert result.err == ""
    assert "2 items x 1 repeats" in result.out
    assert "| direct | 0.0% (0/2) |" in result.out
    assert "| direct | - | - | team: 2 | - |" in result.out


BAD_EVAL = [
    (["{data}x", "--scorers", "{helper}:SCORERS"], "not found"),
    (["{bad}", "--scorers", "{helper}:SCORERS"], "line 2: not valid JSON"),
    (["{data}", "--scorers", "{helper}:MISSING"], "has no attribute 'MISSING'"),
    (["{data}", "--scorers", "{helper}"], "give module:attr or path/to/file.py:attr"),
    (["{data}", "--scorers", "{helper}:NUMBER"], "a dict or list of scorers, not int"),
    (["{data}", "--scorers", "{helper}:NOT_SCORERS"], "scorer 'team' is 3, not a callable"),
    (["{data}", "--scorers", "no_such_module_q:S"], "no module named 'no_such_module_q'"),
    (["{data}", "--scorers", "{helper}:SCORERS", "--strategies", "arq,tot"], "unknown ['tot']"),
    (["{data}", "--scorers", "{helper}:SCORERS", "--out", "{data}"], "--out"),
    (["{data}", "--scorers", "{helper}:SCORERS", "--repeats", "0"], "must be at least 1"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_EVAL)
def test_eval_command_bad_input_is_one_line_and_exit_2(
    files: dict[str, str], tmp_path: Path, argv: list[str], expected: str
) -> None:
    bad = write_lines(tmp_path / "bad.jsonl", json.dumps(DATASET[0]), "{not json")
    names = {**files, "bad": str(bad)}
    result = run("eval", files["schema"], *[a.format(**names) for a in argv])
    assert result.code == 2
    if expected == "must be at least 1":  # argparse's own usage message
        assert expected in result.err
    else:
        assert expected in result.one_error_line()


def test_eval_command_without_matplotlib_writes_the_rest(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with FakeOpenAIServer() as server:
        server.responder = answer_asked({"team": "billing"})
        result = run(
            "eval", files["schema"], files["data"], "--scorers", f"{files['helper']}:SCORERS",
            "--base-url", server.base_url, "--model", "m", "--strategies", "direct",
            "--no-progress", "--out", tmp_path / "out",
        )  # fmt: skip
    assert result.code == 0
    assert result.err == (
        "warning: report.png not written: matplotlib is missing "
        "(pip install 'arq-reasoning[plot]')\n"
    )
    assert result.out.endswith("(report.md, report.json)\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md"]


def test_eval_command_exits_1_when_the_service_fails_every_run(files: dict[str, str]) -> None:
    with FakeOpenAIServer() as server:
        server.responder = lambda request: Status(401, message="bad key")
        result = run(
            "eval", files["schema"], files["data"], "--scorers", f"{files['helper']}:SCORERS",
            "--base-url", server.base_url, "--model", "m", "--no-progress",
        )  # fmt: skip
    assert result.code == 1
    assert "| direct | - | - | - | BackendError: 3 |" in result.out
    assert "every run failed to reach the model" in result.one_error_line()


def test_eval_command_needs_scorers(files: dict[str, str]) -> None:
    result = run("eval", files["schema"], files["data"])
    assert result.code == 2
    assert "--scorers" in result.err


def test_eval_command_bad_schema_is_one_line(files: dict[str, str]) -> None:
    result = run("eval", f"{files['helper']}:NUMBER", files["data"], "--scorers", "x:y")
    assert result.code == 2
    assert "not an arq.Reasoning subclass" in result.one_error_line()


# --- the scenario set ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenarios() -> Any:
    # imported by name: the examples folder is not a package type checkers know
    return importlib.import_module("examples.scenarios.schema")


@pytest.fixture(scope="module")
def items() -> list[dict[str, Any]]:
    return load_dataset(SCENARIOS / "scenarios.jsonl")


def test_scenario_set_has_30_items_of_three_kinds(scenarios: Any, items: list[Any]) -> None:
    assert len(items) >= 30
    kinds = {name: [i for i in items if i["schema"] == name] for name in scenarios.SCHEMAS}
    assert {name: len(group) >= 10 for name, group in kinds.items()} == dict.fromkeys(
        scenarios.SCHEMAS, True
    )
    notes = " ".join(i["note"] for i in items)
    assert "again" in notes  # a guideline re-applied
    assert "no longer holds" in notes  # a condition that is no longer met
    assert any(i["expect"].get("fact", "") is None for i in items)  # "I don't know."
    assert any(i["expect"].get("decision") == "ask" for i in items)  # a missing argument


def test_every_scenario_validates_its_reference_and_the_scorers_pass(
    scenarios: Any, items: list[Any]
) -> None:
    for item in items:
        schema = scenarios.SCHEMAS[item["schema"]]
        output = arq.validate_output(schema, item["reference"], context=item["context"])
        assert {n: s(output, item) for n, s in scenarios.SCORERS.items()} == dict.fromkeys(
            scenarios.SCORERS, True
        ), item["id"]
        # the baselines' answer steps alone are scored the same way
        answers = {
            k: v for k, v in item["reference"].items() if k in arq.direct(schema).model_fields
        }
        short = arq.validate_output(arq.direct(schema), answers, context=item["context"])
        assert all(s(short, item) for s in scenarios.SCORERS.values()), item["id"]


def wrong(item: Mapping[str, Any]) -> dict[str, Any]:
    """The reference with its answer changed the way a weak model gets it wrong."""
    output = dict(item["reference"])
    if "apply" in output:
        ids = [g["id"] for g in item["context"]["guidelines"]]
        output["apply"] = [] if output["apply"] else ids[:1]
    elif "answer" in output:
        output["answer"] = "Yes, it has one." if output["fact"] is None else "I don't know."
    else:
        output["decision"] = "call" if output["decision"] == "ask" else "ask"
    return output


def test_the_scorers_catch_a_wrong_answer(scenarios: Any, items: list[Any]) -> None:
    for item in items:
        output = unchecked(scenarios.SCHEMAS[item["schema"]]).model_validate(wrong(item))
        assert not all(s(output, item) for s in scenarios.SCORERS.values()), item["id"]


def test_the_checks_refuse_a_wrong_answer(scenarios: Any, items: list[Any]) -> None:
    for item in items:
        with pytest.raises(arq.StepError):
            arq.validate_output(
                scenarios.SCHEMAS[item["schema"]], wrong(item), context=item["context"]
            )


def test_scenario_command_end_to_end_with_reference_answers(
    scenarios: Any, items: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented command, on a server that answers every scenario correctly."""
    by_prompt = {}
    for item in items:
        request = arq.PromptBuilder().build(scenarios.SCHEMAS[item["schema"]], item["context"])
        by_prompt[request.messages[-1]["content"]] = item

    def respond(request: ReceivedRequest) -> Reply:
        messages = request.body["messages"]
        item = next(by_prompt[m["content"]] for m in messages if m["content"] in by_prompt)
        values = {**item["reference"], "reasoning": "Let me think."}
        asked = request_schema(request.body)["properties"]
        return Reply(json.dumps({name: values[name] for name in asked}))

    with FakeOpenAIServer() as server:
        server.responder = respond
        main = importlib.import_module("examples.scenarios.__main__").main
        code = main(["--base-url", server.base_url, "--model", "m", "--repeats", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for strategy in ("arq", "arq-unchecked", "cot", "direct"):
        runs = f"{len(items)}/{len(items)}"
        assert f"| {strategy} | 100.0% ({runs}) | 100.0% | 100.0% | 100.0% | 100.0% | 0.0% |" in out
