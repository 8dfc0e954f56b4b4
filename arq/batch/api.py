"""`submit`, `status`, `fetch`: a round through the OpenAI Batch API, or any server with it.

`submit` uploads each input file of the current round and starts a batch of it, with the
job, the round and the file in the batch's `metadata`. The manifest records the intent
before each batch is created and its id after: a crash between the two is resolved on the
next `submit` by finding the batch through `batches.list` by its metadata, so no file is
sent twice. `fetch` downloads the output and error files of the batches that ended
(`completed`, `expired`, `cancelled`: the requests a batch did not answer are in its error
file, or missing, and are sent again in the next round), deletes the uploaded and the
downloaded files on the server unless told to keep them, and marks the round `ran`, ready
for `ingest`. A batch that ends `failed` is a `BatchError` naming its errors.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from arq.backends.openai import OpenAIBackend
from arq.batch.manifest import Manifest, Round
from arq.errors import BatchError
from arq.trace import replacing

__all__ = ["fetch", "status", "submit"]

_T = TypeVar("_T")
RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def submit(
    folder: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: OpenAIBackend | None = None,
) -> Round:
    """Start a batch for each input file of the current round; the round, `submitted`.

    Args:
        folder: The job's folder.
        base_url: A server that implements the Batch API (default: OpenAI's).
        api_key: Its key (default: the `OPENAI_API_KEY` variable).
        backend: An `OpenAIBackend` to call it through instead.
    """
    return _call(folder, base_url, api_key, backend, _submit)


def status(
    folder: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: OpenAIBackend | None = None,
) -> list[dict[str, Any]]:
    """The current round's batches as the Batch API describes them."""

    async def describe(root: Path, manifest: Manifest, api: OpenAIBackend) -> list[dict[str, Any]]:
        current = _submitted(root, manifest)
        return [await api.batch(entry["id"]) for entry in current.batches if entry.get("id")]

    return _call(folder, base_url, api_key, backend, describe)


def fetch(
    folder: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: OpenAIBackend | None = None,
    keep: bool = False,
) -> Round:
    """Download the results of the current round's batches that ended; the round, `ran`
    once every batch has (then `ingest` reads them).

    Raises:
        BatchError: a batch ended `failed` (its errors are in the message; `submit` again
            sends its file again).
    """

    async def download(root: Path, manifest: Manifest, api: OpenAIBackend) -> Round:
        return await _fetch(root, manifest, api, keep=keep)

    return _call(folder, base_url, api_key, backend, download)


def _call(
    folder: str | os.PathLike[str],
    base_url: str | None,
    api_key: str | None,
    backend: OpenAIBackend | None,
    step: Callable[[Path, Manifest, OpenAIBackend], Awaitable[_T]],
) -> _T:
    root = Path(folder)
    manifest = Manifest.load(root)

    async def go() -> _T:
        api = backend
        if api is None:
            key = api_key or os.environ.get("OPENAI_API_KEY") or None
            api = OpenAIBackend(manifest.job.settings.model, base_url=base_url, api_key=key)
        try:
            return await step(root, manifest, api)
        finally:
            if backend is None:
                await api.aclose()

    return asyncio.run(go())


async def _submit(root: Path, manifest: Manifest, api: OpenAIBackend) -> Round:
    current = manifest.current
    if current is None or current.state not in ("prepared", "submitted"):
        state = "done" if current is None else current.state
        raise BatchError(f"{root}: the current round is {state}; there is nothing to submit")
    if not current.batches:
        current.batches = [{"file": name, "id": None} for name in current.inputs]
    current.state = "submitted"
    listed: list[dict[str, Any]] | None = None
    for entry in current.batches:
        if entry.get("id"):
            continue
        metadata = {
            "arq_job": manifest.job.tag,
            "arq_round": str(current.number),
            "arq_file": entry["file"],
        }
        if entry.get("intent"):  # stopped between creating the batch and recording it
            listed = listed if listed is not None else await api.batches()
            found = next((b for b in listed if b.get("metadata") == metadata), None)
            if found is not None:
                entry["id"] = found["id"]
                manifest.save(root)
                continue
        entry["intent"] = True
        manifest.save(root)  # the intent, before the batch exists
        entry["id"] = await api.submit_batch(root / entry["file"], metadata)
        manifest.save(root)
    return current


def _submitted(root: Path, manifest: Manifest) -> Round:
    current = manifest.current
    if current is None or current.state != "submitted":
        raise BatchError(f"{root}: the current round was not submitted to the Batch API")
    return current


async def _fetch(root: Path, manifest: Manifest, api: OpenAIBackend, *, keep: bool) -> Round:
    current = _submitted(root, manifest)
    for index, entry in enumerate(current.batches):
        if entry.get("outputs") is not None:
            continue
        batch = await api.batch(entry["id"])
        if batch["status"] in RUNNING:
            continue
        if batch["status"] == "failed":
            errors = (batch.get("errors") or {}).get("data") or []
            told = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
            entry["id"], entry["intent"] = None, False  # `submit` sends the file again
            manifest.save(root)
            if not keep and batch.get("input_file_id"):
                await api.delete_file(batch["input_file_id"])
            raise BatchError(
                f"the batch of {entry['file']} failed ({told or 'no errors given'});"
                " fix the cause, then `arq batch submit` sends it again"
            )
        outputs = []
        for kind in ("output", "error"):
            file_id = batch.get(f"{kind}_file_id")
            if file_id:
                name = f"round-{current.number}/batch-{kind}-{index:03d}.jsonl"
                with replacing(root / name) as temp:
                    await api.download(file_id, temp)
                outputs.append(name)
        entry["outputs"] = outputs
        manifest.save(root)
        if not keep:
            for kind in ("input", "output", "error"):
                if file_id := batch.get(f"{kind}_file_id"):
                    await api.delete_file(file_id)
    if all(entry.get("outputs") is not None for entry in current.batches):
        current.state = "ran"
        current.outputs = [name for entry in current.batches for name in entry["outputs"]]
        manifest.save(root)
    return current
