"""The test server's Files and Batches endpoints, through the real openai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from arq import batch
from arq.testing import FakeOpenAIServer
from tests.batch_support import Ticket, TicketResponder, write_dataset


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        fake.responder = TicketResponder()
        yield fake


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as made:
        yield made


def prepared(tmp_path: Path, count: int) -> Path:
    dataset = write_dataset(tmp_path / "items.jsonl", count)
    folder = tmp_path / "job"
    batch.prepare(Ticket, dataset, folder, model="fake-model")
    return folder


def submit(client: openai.OpenAI, path: Path) -> str:
    upload = client.files.create(file=path, purpose="batch")
    created = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"arq_round": "1"},
    )
    return created.id


def test_a_round_through_the_batch_api(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    folder = prepared(tmp_path, 20)
    batch_id = submit(client, folder / "round-1" / "input-000.jsonl")
    done = client.batches.retrieve(batch_id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.failed) == (20, 2)  # two 503s
    assert done.output_file_id is not None
    assert done.error_file_id is not None
    output, errors = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    output.write_bytes(client.files.content(done.output_file_id).read())
    errors.write_bytes(client.files.content(done.error_file_id).read())
    assert [
        json.loads(line)["response"]["status_code"] for line in errors.read_text().splitlines()
    ] == [503, 503]
    found = [b for b in client.batches.list() if (b.metadata or {}).get("arq_round") == "1"]
    assert [b.id for b in found] == [batch_id]

    summary = batch.ingest(folder, [output, errors], schema=Ticket)
    assert summary.counts["resend"] == 2
    batch.loop(folder, base_url=server.base_url, schema=Ticket)
    accepted = [
        json.loads(line)["id"] for line in (folder / "results.jsonl").read_text().splitlines()
    ]
    assert len(accepted) == 19

    for file_id in (done.input_file_id, done.output_file_id):
        assert client.files.delete(file_id).deleted
    assert server.batches.deleted == [done.input_file_id, done.output_file_id]
    with pytest.raises(openai.NotFoundError):
        client.files.content(done.output_file_id)


def test_a_failed_batch_has_errors_and_no_files(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    folder = prepared(tmp_path, 3)
    server.batches.outcome = "failed"
    done = client.batches.retrieve(submit(client, folder / "round-1" / "input-000.jsonl"))
    assert done.status == "failed"
    assert done.errors is not None
    assert done.errors.data is not None
    assert done.errors.data[0].code == "invalid_json_line"
    assert (done.output_file_id, done.error_file_id) == (None, None)


@pytest.mark.parametrize("outcome", ["expired", "cancelled"])
def test_an_unfinished_batch_puts_every_request_in_the_error_file(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI, outcome: str
) -> None:
    folder = prepared(tmp_path, 4)
    server.batches.outcome = outcome  # type: ignore[assignment]
    done = client.batches.retrieve(submit(client, folder / "round-1" / "input-000.jsonl"))
    assert done.status == outcome
    assert done.output_file_id is None
    assert done.error_file_id is not None
    errors = tmp_path / "errors.jsonl"
    errors.write_bytes(client.files.content(done.error_file_id).read())
    codes = {json.loads(line)["error"]["code"] for line in errors.read_text().splitlines()}
    assert codes == {f"batch_{outcome}"}
    summary = batch.ingest(folder, [errors], schema=Ticket)
    assert summary.counts["resend"] == 4
    assert summary.next_round == 2


def test_cancel_and_unknown_routes(client: openai.OpenAI, tmp_path: Path) -> None:
    folder = prepared(tmp_path, 2)
    batch_id = submit(client, folder / "round-1" / "input-000.jsonl")
    assert client.batches.cancel(batch_id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch-missing")


def test_reset_forgets_files_and_batches(
    tmp_path: Path, server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    folder = prepared(tmp_path, 2)
    submit(client, folder / "round-1" / "input-000.jsonl")
    server.batches.outcome = "expired"
    server.reset()
    fresh = server.batches
    assert (fresh.files, fresh.batches, fresh.outcome) == ({}, {}, "completed")
