"""`arq batch`: prepare, run, ingest and loop from the command line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from arq.cli import cli
from arq.testing import FakeOpenAIServer
from tests.batch_support import TicketResponder, write_dataset

SPEC = "tests.batch_support:Ticket"


def call(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        fake.responder = TicketResponder()
        yield fake


def test_prepare_run_ingest_then_loop(tmp_path: Path, server: FakeOpenAIServer) -> None:
    dataset = write_dataset(tmp_path / "items.jsonl", 40)
    job = tmp_path / "job"
    code, out, err = call("batch", "prepare", SPEC, dataset, "--out", job, "--model", "m")
    assert (code, err) == (0, "")
    assert out == "round 1: 40 requests in round-1/input-000.jsonl\n"

    code, out, err = call("batch", "run", job, "--base-url", server.base_url)
    assert (code, err) == (0, "")
    assert out == "round 1: 40 answers in round-1/output-000.jsonl\n"

    output = job / "round-1" / "output-000.jsonl"
    code, out, err = call("batch", "ingest", job, output)
    assert (code, err) == (0, "")
    assert out == "round 1: 40 requests, 23 accepted, 14 to repair, 3 to send again, 0 failed\n"

    code, out, err = call("batch", "loop", job, "--base-url", server.base_url)
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("round 2: 17 requests, ")
    assert out.splitlines()[-1] == (
        f"38 accepted in {job / 'results.jsonl'}, 2 failed in {job / 'failed.jsonl'}"
    )
    records = [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(
        f"t{i}" for i in range(40) if i not in (3, 34)
    )

    code, out, _ = call("batch", "loop", job, "--base-url", server.base_url)
    assert code == 0
    assert out.startswith("every item has its outcome already\n")


def test_a_results_file_of_another_round_is_a_one_line_error(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    dataset = write_dataset(tmp_path / "items.jsonl", 10)
    job = tmp_path / "job"
    call("batch", "prepare", SPEC, dataset, "--out", job, "--model", "m")
    call("batch", "run", job, "--base-url", server.base_url)
    output = job / "round-1" / "output-000.jsonl"
    copy = tmp_path / "copy.jsonl"
    copy.write_text(output.read_text())
    assert call("batch", "ingest", job)[0] == 0
    code, out, err = call("batch", "ingest", job, copy)
    assert (code, out) == (2, "")
    assert err.startswith("error: BatchError: ")
    assert "which was ingested from other files" in err
    assert err.count("\n") == 1


def test_batch_needs_a_step(tmp_path: Path) -> None:
    code, _, err = call("batch")
    assert code == 2
    assert "STEP" in err
    code, _, err = call("batch", "ingest", tmp_path)
    assert code == 2
    assert "holds no batch job" in err


def test_a_server_that_cannot_be_reached_spends_no_retries(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "items.jsonl", 5)
    job = tmp_path / "job"
    call("batch", "prepare", SPEC, dataset, "--out", job, "--model", "m")
    with FakeOpenAIServer() as gone:
        url = gone.base_url
    code, out, err = call("batch", "loop", job, "--base-url", url)
    assert (code, out) == (1, "")
    assert err.startswith("error: BackendError: no request reached the server")
    assert not list((job / "round-1").glob("*output*"))
    with FakeOpenAIServer() as server:
        server.responder = TicketResponder()
        code, out, _ = call("batch", "loop", job, "--base-url", server.base_url)
    assert code == 0
    assert out.startswith("round 1: 5 requests, ")


def test_submit_status_fetch_then_ingest(tmp_path: Path, server: FakeOpenAIServer) -> None:
    dataset = write_dataset(tmp_path / "items.jsonl", 10)
    job = tmp_path / "job"
    call("batch", "prepare", SPEC, dataset, "--out", job, "--model", "m")
    code, out, err = call("batch", "submit", job, "--base-url", server.base_url)
    assert (code, err) == (0, "")
    assert out.startswith("round 1: 1 batch(es) submitted: batch-fake")
    code, out, _ = call("batch", "status", job, "--base-url", server.base_url)
    assert code == 0
    assert out.endswith(": completed, 9 completed, 1 failed of 10\n")  # item 4's 503
    code, out, _ = call("batch", "fetch", job, "--base-url", server.base_url)
    assert (code, out) == (0, "round 1: every batch fetched; `arq batch ingest` goes on\n")
    code, out, _ = call("batch", "ingest", job)
    assert code == 0
    assert out.startswith("round 1: 10 requests, ")
    code, _, err = call("batch", "fetch", job, "--base-url", server.base_url)
    assert code == 2
    assert "was not submitted to the Batch API" in err


def test_loop_through_the_batch_api(tmp_path: Path, server: FakeOpenAIServer) -> None:
    dataset = write_dataset(tmp_path / "items.jsonl", 12)
    job = tmp_path / "job"
    call("batch", "prepare", SPEC, dataset, "--out", job, "--model", "m")
    argv = ("batch", "loop", job, "--batch-api", "--base-url", server.base_url, "--poll", 0)
    code, out, err = call(*argv)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("11 accepted in ")
    assert len(server.batches.batches) == len(out.splitlines()) - 1  # one batch a round
    code, _, err = call("batch", "loop", job)
    assert code == 2
    assert "needs --base-url URL or --local" in err
