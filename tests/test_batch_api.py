"""`submit`, `status` and `fetch`: rounds through the Batch API of the test server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arq import batch
from arq.backends.openai import OpenAIBackend
from arq.errors import BatchError
from arq.testing import FakeOpenAIServer
from tests.batch_support import Ticket, TicketResponder, write_dataset


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        fake.responder = TicketResponder()
        yield fake


def prepared(tmp_path: Path, count: int) -> Path:
    dataset = write_dataset(tmp_path / "items.jsonl", count)
    folder = tmp_path / "job"
    batch.prepare(Ticket, dataset, folder, model="fake-model", max_file_requests=15)
    return folder


def ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_rounds_through_submit_status_fetch(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 40)
    rounds = 0
    while batch.Manifest.load(folder).current is not None:
        submitted = batch.submit(folder, base_url=server.base_url)
        assert submitted.state == "submitted"
        statuses = batch.status(folder, base_url=server.base_url)
        assert [s["status"] for s in statuses] == ["completed"] * len(submitted.inputs)
        assert statuses[0]["metadata"]["arq_round"] == str(submitted.number)
        ran = batch.fetch(folder, base_url=server.base_url)
        assert ran.state == "ran"
        batch.ingest(folder, schema=Ticket)
        rounds += 1
    assert rounds == 3
    accepted, failed = ids(folder / "results.jsonl"), ids(folder / "failed.jsonl")
    assert sorted(accepted + failed) == sorted(f"t{i}" for i in range(40))
    assert set(failed) == {"t3", "t34"}
    assert server.batches.files == {}  # uploads and results deleted after fetch
    inputs = [len(r.inputs) for r in batch.Manifest.load(folder).rounds]
    assert inputs[0] == 3  # 40 requests, 15 a file
    assert len(server.batches.batches) == sum(inputs)  # one batch per input file


def test_fetch_keeps_files_when_told(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 5)
    batch.submit(folder, base_url=server.base_url)
    batch.fetch(folder, base_url=server.base_url, keep=True)
    assert len(server.batches.files) == 3  # the upload, its output and its errors
    assert server.batches.deleted == []


def test_a_failed_batch_is_an_error_and_is_sent_again(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    folder = prepared(tmp_path, 5)
    server.batches.outcome = "failed"
    batch.submit(folder, base_url=server.base_url)
    with pytest.raises(BatchError, match=r"failed \(invalid_json_line"):
        batch.fetch(folder, base_url=server.base_url)
    assert server.batches.files == {}  # the upload of the failed batch is deleted
    server.batches.outcome = "completed"
    batch.submit(folder, base_url=server.base_url)
    assert batch.fetch(folder, base_url=server.base_url).state == "ran"
    assert batch.ingest(folder, schema=Ticket).requests == 5


def test_an_expired_batch_sends_its_requests_again(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    folder = prepared(tmp_path, 5)
    server.batches.outcome = "expired"
    batch.submit(folder, base_url=server.base_url)
    batch.fetch(folder, base_url=server.base_url)
    summary = batch.ingest(folder, schema=Ticket)
    assert summary.counts["resend"] == 5
    assert summary.next_round == 2


class Crash(Exception):
    """Stands for a kill."""


def test_a_crash_between_create_and_recording_the_id_creates_no_second_batch(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    folder = prepared(tmp_path, 20)
    backend = OpenAIBackend("fake-model", base_url=server.base_url)
    real = backend.submit_batch
    created: list[str] = []

    async def create_then_die(path: Any, metadata: dict[str, str]) -> str:
        batch_id = await real(path, metadata)
        created.append(batch_id)
        if len(created) == 2:
            raise Crash
        return batch_id

    backend.submit_batch = create_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        batch.submit(folder, backend=backend)
    entries = batch.Manifest.load(folder).current.batches  # type: ignore[union-attr]
    assert [bool(e["id"]) for e in entries] == [True, False]
    assert entries[1]["intent"]
    batch.submit(folder, base_url=server.base_url)
    entries = batch.Manifest.load(folder).current.batches  # type: ignore[union-attr]
    assert [e["id"] for e in entries] == created
    assert len(server.batches.batches) == 2
    batch.fetch(folder, base_url=server.base_url)
    assert batch.ingest(folder, schema=Ticket).requests == 20


def test_run_refuses_a_submitted_round(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = prepared(tmp_path, 3)
    batch.submit(folder, base_url=server.base_url)
    with pytest.raises(BatchError, match="submitted to the Batch API"):
        batch.run(folder, base_url=server.base_url)


def test_the_batch_calls_work_on_a_users_sync_client(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    import asyncio

    import openai

    folder = prepared(tmp_path, 2)
    (first,) = sorted(folder.glob("round-1/input-*.jsonl"))[:1]
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
    backend = OpenAIBackend("fake-model", client=client)

    async def scenario() -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        batch_id = await backend.submit_batch(first, {"arq_round": "1"})
        found = await backend.batch(batch_id)
        listed = await backend.batches()
        await backend.download(found["output_file_id"], tmp_path / "out.jsonl")
        await backend.delete_file(found["output_file_id"])
        return batch_id, found, listed

    batch_id, found, listed = asyncio.run(scenario())
    assert found["status"] == "completed"
    assert [b["id"] for b in listed] == [batch_id]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert found["output_file_id"] not in server.batches.files
    client.close()
