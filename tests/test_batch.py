"""Batch jobs: prepare, run on the test server through the openai SDK, ingest, in rounds.

Replies are chosen by request content (`tests.batch_support`), so the outcomes must be the
ones `Executor.run` reaches with the same replies, whatever order the requests go in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arq import batch
from arq.backends.openai import OpenAIBackend
from arq.errors import ArqError, BatchError, ConvergenceError
from arq.executor import Executor
from arq.retry import RetryPolicy
from arq.testing import FakeOpenAIServer, ReceivedRequest, Reply, Scripted, Status
from tests.batch_support import Ticket, TicketResponder, items, write_dataset

SPEC = "tests.batch_support:Ticket"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        fake.responder = TicketResponder()
        yield fake


async def instant(seconds: float) -> None:
    """No wait between retries."""


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def canonical(body: dict[str, Any]) -> str:
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return json.dumps(body, sort_keys=True)


def sent_bodies(folder: Path, below: int) -> Counter[str]:
    """Every request body the job's rounds hold for the items numbered below `below`."""
    bodies: Counter[str] = Counter()
    for path in sorted(folder.glob("round-*/input-*.jsonl")):
        for line in lines(path):
            if int(line["custom_id"].rsplit("-t", 1)[1]) < below:
                bodies[canonical(line["body"])] += 1
    return bodies


def prepared(tmp_path: Path, count: int, name: str = "job", **options: Any) -> Path:
    dataset = write_dataset(tmp_path / "items.jsonl", count)
    folder = tmp_path / name
    batch.prepare(Ticket, dataset, folder, model="fake-model", schema_spec=SPEC, **options)
    return folder


def outcomes(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Accepted outputs and failures by item id; each item at most once."""
    accepted = lines(folder / "results.jsonl")
    failed = lines(folder / "failed.jsonl")
    ids = [r["id"] for r in accepted + failed]
    assert len(ids) == len(set(ids)), "an item has two outcomes"
    return {r["id"]: r for r in accepted}, {r["id"]: r for r in failed}


def test_rounds_converge_to_the_outputs_executor_run_gives(tmp_path: Path) -> None:
    count, compared = 1000, 250  # the executor runs the first 250: every kind of item
    folder = prepared(tmp_path, count)
    with FakeOpenAIServer() as server:
        server.responder = TicketResponder()
        summaries = batch.loop(folder, base_url=server.base_url, concurrency=16)
        batch_requests = [r for r in server.requests if r.path.endswith("/chat/completions")]
    accepted, failed = outcomes(folder)
    assert len(accepted) + len(failed) == count
    assert [s.round for s in summaries] == [1, 2, 3]
    assert summaries[0].counts["resend"] == sum(1 for i in range(count) if i % 13 == 4)
    assert all(not r.stream and "stream_options" not in r.body for r in batch_requests)

    with FakeOpenAIServer() as server:
        server.responder = TicketResponder()
        retry = RetryPolicy(attempts=4, sleep=instant, jitter=0)
        backend = OpenAIBackend("fake-model", base_url=server.base_url)
        with Executor(backend, retry=retry, concurrency=16) as executor:
            contexts = [item["context"] for item in items(compared)]
            results = executor.map(Ticket, contexts)
        executor_bodies = Counter(canonical(r.body) for r in server.requests)
    for item, result in zip(items(compared), results, strict=True):
        if isinstance(result, ArqError):
            assert isinstance(result, ConvergenceError)
            assert failed[item["id"]]["error"]["type"] == "ConvergenceError"
            assert failed[item["id"]]["error"]["step"] == "order_id"
        else:
            record = accepted[item["id"]]
            assert record["output"] == result.output.model_dump(mode="json")
            assert record["rounds"] == len(result.trace.attempts)
            assert record["version"] == 1
            if len(result.trace.attempts) == 1:  # a run stopped early pays less
                assert record["usage"]["completion_tokens"] == result.usage.completion_tokens
    assert len(failed) == sum(1 for i in range(count) if i % 31 == 3)
    # the same requests, repairs and re-sends included, as the executor sent
    assert sent_bodies(folder, compared) == executor_bodies


def test_prepare_writes_non_streaming_lines_sharded_and_is_idempotent(tmp_path: Path) -> None:
    folder = prepared(tmp_path, 20, max_file_requests=7, temperature=0.2, seed=5, max_tokens=99)
    manifest = batch.Manifest.load(folder)
    assert manifest.rounds[0].inputs == [f"round-1/input-00{i}.jsonl" for i in range(3)]
    requests = [line for name in manifest.rounds[0].inputs for line in lines(folder / name)]
    assert len(requests) == 20
    first = requests[0]
    assert first["method"] == "POST"
    assert first["url"] == "/v1/chat/completions"
    assert first["custom_id"] == f"arq-{manifest.job.tag}-r1-t0"
    body = first["body"]
    assert "stream" not in body
    assert "stream_options" not in body
    assert (body["model"], body["temperature"], body["seed"], body["max_tokens"]) == (
        "fake-model",
        0.2,
        5,
        99,
    )
    assert body["response_format"]["type"] == "json_schema"
    assert list(body["response_format"]["json_schema"]["schema"]["properties"]) == [
        "order_id",
        "topic",
        "summary",
    ]
    before = {p.name: p.read_bytes() for p in folder.rglob("*.jsonl")}
    again = batch.prepare(
        Ticket,
        tmp_path / "items.jsonl",
        folder,
        model="fake-model",
        schema_spec=SPEC,
        max_file_requests=7,
        temperature=0.2,
        seed=5,
        max_tokens=99,
    )
    assert again == manifest
    assert {p.name: p.read_bytes() for p in folder.rglob("*.jsonl")} == before
    with pytest.raises(BatchError, match="holds another batch job"):
        batch.prepare(Ticket, tmp_path / "items.jsonl", folder, model="other-model")


def test_prepare_shards_by_bytes(tmp_path: Path) -> None:
    folder = prepared(tmp_path, 10, max_file_bytes=5_000)
    inputs = batch.Manifest.load(folder).rounds[0].inputs
    assert len(inputs) > 1
    assert all((folder / name).stat().st_size <= 5_000 for name in inputs)
    assert sum(len(lines(folder / name)) for name in inputs) == 10


def test_a_prepare_that_died_midway_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_dataset(tmp_path / "items.jsonl", 30)
    folder = tmp_path / "job"
    made = 0
    real = batch.prepare.__globals__["request_line"]

    def dying(*args: Any) -> str:
        nonlocal made
        made += 1
        if made > 12:
            raise KeyboardInterrupt
        return str(real(*args))

    monkeypatch.setitem(batch.prepare.__globals__, "request_line", dying)
    with pytest.raises(KeyboardInterrupt):
        batch.prepare(Ticket, dataset, folder, model="fake-model", schema_spec=SPEC)
    assert not list(folder.glob("round-1/*.jsonl"))  # nothing half written
    monkeypatch.undo()
    manifest = batch.prepare(Ticket, dataset, folder, model="fake-model", schema_spec=SPEC)
    assert manifest.rounds[0].requests == 30


def test_a_run_killed_after_k_lines_sends_only_the_rest(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    folder = prepared(tmp_path, 40)
    batch.run(folder, base_url=server.base_url)
    output = folder / "round-1" / "output-000.jsonl"
    written = output.read_text().splitlines(keepends=True)
    # as if killed while writing line 16: 15 whole lines, then half of one
    part = output.with_name(".output-000.jsonl.part")
    part.write_text("".join(written[:15]) + written[15][:40])
    output.unlink()
    manifest = batch.Manifest.load(folder)
    manifest.rounds[0].state, manifest.rounds[0].outputs = "running", []
    manifest.save(folder)
    server.reset()
    server.responder = TicketResponder()
    batch.run(folder, base_url=server.base_url)
    assert len(server.requests) == 25
    resumed = lines(output)
    assert len(resumed) == 40
    assert len({line["custom_id"] for line in resumed}) == 40
    assert not part.exists()


def test_a_truncated_results_file_loses_nothing(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 30)
    batch.run(folder, base_url=server.base_url)
    output = folder / "round-1" / "output-000.jsonl"
    cut = tmp_path / "cut.jsonl"
    text = output.read_text()
    cut.write_text(text[: len(text) // 2])  # mid-line
    summary = batch.ingest(folder, [cut], schema=Ticket)
    assert summary.counts["missing"] > 0
    batch.loop(folder, base_url=server.base_url, schema=Ticket)
    accepted, failed = outcomes(folder)
    assert len(accepted) + len(failed) == 30


class Crash(Exception):
    """Stands for a kill."""


def test_an_ingest_killed_at_any_point_is_finished_by_the_same_command(
    tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = prepared(tmp_path, 60, "reference")
    batch.run(reference, base_url=server.base_url)
    batch.ingest(reference)
    folder = prepared(tmp_path, 60)
    server.reset()
    server.responder = TicketResponder()
    batch.run(folder, base_url=server.base_url)
    globals_ = batch.ingest.__globals__
    real_judge, real_concat = globals_["judge"], globals_["concat"]
    judged = 0

    def judge_then_die(*args: Any) -> Any:
        nonlocal judged
        judged += 1
        if judged == 25:
            raise Crash
        return real_judge(*args)

    def die_after_first_concat(parts: Any, target: Path) -> int:
        size = int(real_concat(parts, target))
        if target.name == "results.jsonl":
            raise Crash  # between the two merged files and the manifest
        return size

    for name, fake in (("judge", judge_then_die), ("concat", die_after_first_concat)):
        monkeypatch.setitem(globals_, name, fake)
        with pytest.raises(Crash):
            batch.ingest(folder)
        assert batch.Manifest.load(folder).rounds[0].state == "ingesting"
        monkeypatch.setitem(globals_, name, real_judge if name == "judge" else real_concat)
    summary = batch.ingest(folder)
    ran = [reference / "round-1" / "output-000.jsonl"]
    assert summary == batch.ingest(reference, ran)  # ingesting again is a no-op
    for name in ("results.jsonl", "failed.jsonl", "round-2/state.jsonl", "round-2/input-000.jsonl"):
        assert (folder / name).read_text() == (reference / name).read_text(), name
    assert not list(folder.rglob("*.tmp*"))
    assert not list(folder.rglob("*.sqlite"))


def test_results_of_another_round_or_job_are_refused(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    folder = prepared(tmp_path, 30)
    batch.run(folder, base_url=server.base_url)
    round_one = folder / "round-1" / "output-000.jsonl"
    copy = tmp_path / "copy.jsonl"
    copy.write_text(round_one.read_text())
    batch.ingest(folder)
    with pytest.raises(BatchError, match="round 1, which was ingested"):
        batch.ingest(folder, [copy])
    batch.ingest(folder, [round_one])  # the files it ingested: nothing to do

    # another job: the same items, another schema's settings
    other = tmp_path / "other"
    batch.prepare(Ticket, tmp_path / "items.jsonl", other, model="another-model", schema_spec=SPEC)
    server.reset()
    server.responder = TicketResponder()
    batch.run(other, base_url=server.base_url)
    with pytest.raises(BatchError, match="not a result of this batch job"):
        batch.ingest(folder, [other / "round-1" / "output-000.jsonl"])

    # a line of this job and round that the round did not send
    fresh = prepared(tmp_path, 5, "fresh")
    batch.run(fresh, base_url=server.base_url)
    output = fresh / "round-1" / "output-000.jsonl"
    stranger = lines(output)[0]
    stranger["custom_id"] = stranger["custom_id"].rsplit("-", 1)[0] + "-unknown"
    edited = tmp_path / "edited.jsonl"
    edited.write_text(output.read_text() + json.dumps(stranger) + "\n")
    with pytest.raises(BatchError, match="did not send"):
        batch.ingest(fresh, [edited])
    assert batch.Manifest.load(fresh).rounds[0].state == "ingesting"
    assert not (fresh / "results.jsonl").exists()


def test_another_schema_is_refused(tmp_path: Path) -> None:
    from tests.schemas import SupportReply

    folder = prepared(tmp_path, 3)
    with pytest.raises(BatchError, match="not the schema the job was prepared with"):
        batch.ingest(folder, [folder / "round-1" / "input-000.jsonl"], schema=SupportReply)


def test_duplicate_lines_are_dropped(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 20)
    batch.run(folder, base_url=server.base_url)
    output = folder / "round-1" / "output-000.jsonl"
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(output.read_text() * 2)
    summary = batch.ingest(folder, [doubled])
    assert summary.counts["duplicates"] == 20
    accepted, failed = outcomes(folder)
    assert (len(accepted), len(failed)) == (summary.counts["accepted"], summary.counts["failed"])
    assert summary.counts["accepted"] + summary.counts["repair"] + summary.counts["resend"] == 20


def _statuses(codes: dict[int, int]) -> Any:
    """A responder answering item `i` with status `codes[i]` every time, else as usual."""
    usual = TicketResponder()

    def respond(request: ReceivedRequest) -> Scripted:
        text = json.dumps(request.body["messages"])
        for i, code in codes.items():
            if f"Ticket {i}:" in text:
                return Status(code, message="nope")
        return usual(request)

    return respond


def test_client_errors_fail_at_once_and_transport_errors_within_the_budget(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    folder = prepared(tmp_path, 12, retries=3)
    server.responder = _statuses({0: 400, 6: 401, 7: 404, 8: 422, 9: 429, 10: 500})
    summaries = batch.loop(folder, base_url=server.base_url)
    accepted, failed = outcomes(folder)
    assert set(failed) == {"t0", "t6", "t7", "t8", "t9", "t10", "t3"}
    for item, status in (("t0", 400), ("t6", 401), ("t7", 404), ("t8", 422)):
        assert failed[item]["error"]["status"] == status
        assert failed[item]["rounds"] == 1
    for item in ("t9", "t10"):
        assert failed[item]["error"]["type"] == "BackendError"
        assert failed[item]["rounds"] == 3  # sent three times: the budget
        assert "retry budget" in failed[item]["error"]["message"]
    assert len(accepted) == 5
    assert len(summaries) == 3


def test_an_expired_line_is_sent_again(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 4)
    batch.run(folder, base_url=server.base_url)
    output = folder / "round-1" / "output-000.jsonl"
    answered = lines(output)
    expired = {**answered[0], "response": None}
    expired["error"] = {"code": "batch_expired", "message": "not done in 24 hours"}
    results, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in answered[1:]))
    errors.write_text(json.dumps(expired) + "\n")
    summary = batch.ingest(folder, [results, errors])
    assert summary.counts["resend"] == 1
    batch.loop(folder, base_url=server.base_url)
    accepted, _ = outcomes(folder)
    assert "t0" in accepted


def test_a_refusal_and_a_cut_answer_fail_the_item(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 3)
    usual = TicketResponder()

    def respond(request: ReceivedRequest) -> Scripted:
        text = json.dumps(request.body["messages"])
        if "Ticket 0:" in text:
            return Reply(refusal="I cannot help with that.")
        if "Ticket 2:" in text:
            return Reply('{"order_id": "A-2", "top', finish_reason="length")
        return usual(request)

    server.responder = respond
    batch.loop(folder, base_url=server.base_url)
    accepted, failed = outcomes(folder)
    assert failed["t0"]["error"]["type"] == "RefusalError"
    assert failed["t2"]["error"]["type"] == "TruncatedOutputError"
    assert list(accepted) == ["t1"]


def test_any_backend_answers_by_streaming_the_request_a_line_holds(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    from arq.prompt import Request
    from arq.testing import ScriptedBackend
    from tests.batch_support import answer_for

    def by_content(request: Request) -> str:
        text = " ".join(m["content"] for m in request.messages)
        i = int(text.split("Ticket ", 1)[1].split(":", 1)[0])
        repair = request.messages[-1]["role"] == "user" and "rejected" in text
        return json.dumps(answer_for(i, list(request.steps), repair))

    streamed = prepared(tmp_path, 30, "streamed")
    backend = ScriptedBackend(*[by_content] * 60)
    batch.loop(streamed, backend=backend, schema=Ticket)
    served = prepared(tmp_path, 30, "served")
    batch.loop(served, base_url=server.base_url)
    s_accepted, s_failed = outcomes(streamed)
    h_accepted, h_failed = outcomes(served)
    outputs = {k: v["output"] for k, v in s_accepted.items()}
    assert outputs == {k: v["output"] for k, v in h_accepted.items()}
    assert len(outputs) == 29
    assert set(s_failed) == set(h_failed) == {"t3"}
    # each call holds the request Executor.run makes: steps, allowed and rejected values
    scripted = ScriptedBackend(*[by_content] * 2)
    with Executor(scripted) as executor:
        executor.run(Ticket, list(items(2))[1]["context"])  # item t1: one repair
    expected = [call.request for call in scripted.calls]
    made = [
        call.request
        for call in backend.calls
        if any("Ticket 1:" in m["content"] for m in call.request.messages)
    ]
    assert len(made) == len(expected) == 2
    for mine, theirs in zip(made, expected, strict=True):
        assert (mine.steps, mine.rejected, mine.allowed) == (
            theirs.steps,
            theirs.rejected,
            theirs.allowed,
        )
        assert mine.output_schema == theirs.output_schema
    assert made[1].rejected == ('"B-1"',)


@pytest.mark.parametrize("profile", ["llama-cpp-python", "vllm"])
def test_each_profile_sends_its_response_format(
    tmp_path: Path, server: FakeOpenAIServer, profile: str
) -> None:
    folder = prepared(tmp_path, 20, profile=profile)
    body = lines(folder / "round-1" / "input-000.jsonl")[0]["body"]
    kind = {"llama-cpp-python": "json_object", "vllm": "json_schema"}[profile]
    assert body["response_format"]["type"] == kind
    batch.loop(folder, base_url=server.base_url)
    accepted, failed = outcomes(folder)
    assert (len(accepted), set(failed)) == (19, {"t3"})


def test_results_without_a_line_send_every_request_again(tmp_path: Path) -> None:
    folder = prepared(tmp_path, 4)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    summary = batch.ingest(folder, [empty])
    assert (summary.counts["missing"], summary.counts["resend"]) == (4, 4)
    assert summary.next_round == 2


def test_an_item_without_a_context_key_names_its_line(tmp_path: Path) -> None:
    from arq.errors import DatasetError

    dataset = tmp_path / "items.jsonl"
    dataset.write_text(
        '{"id": "a", "context": {"ticket": "order A-1"}}\n{"id": "b", "context": {}}\n'
    )
    with pytest.raises(DatasetError, match=r"items.jsonl, line 2: .*ticket"):
        batch.prepare(Ticket, dataset, tmp_path / "job", model="m")
    assert not list((tmp_path / "job").glob("round-1/*.jsonl"))
