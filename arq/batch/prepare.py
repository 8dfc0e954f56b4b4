"""`prepare`: a dataset becomes the first round of a batch job.

The dataset is read a line at a time, and the round's state and request files are written
a line at a time, so memory does not grow with the number of items (duplicate ids are
found through an index on disk).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from arq.batch.files import MAX_FILE_BYTES, MAX_FILE_REQUESTS, ShardWriter, open_new, read_jsonl
from arq.batch.index import DiskIndex
from arq.batch.items import ItemState, steering
from arq.batch.manifest import Job, Manifest, Round, Settings, job_tag, schema_fingerprint
from arq.batch.requests import RequestMaker, request_line
from arq.errors import BatchError, ContextError, DatasetError
from arq.eval.datasets import parse_item
from arq.schema import Reasoning

__all__ = ["prepare"]


def prepare(
    schema: type[Reasoning],
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str,
    profile: str = "openai",
    temperature: float | None = None,
    repair_temperature: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
    max_repairs: int = 2,
    retries: int = 4,
    schema_spec: str | None = None,
    max_file_requests: int = MAX_FILE_REQUESTS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Manifest:
    """Write the first round of a batch job for `schema` over `dataset` into folder `out`.

    `dataset` is JSONL, one item a line as `arq eval` reads them (`{"id", "context"}`;
    other keys are ignored). Run it again with the same arguments and it does nothing
    more; after a crash, it starts over.

    Args:
        schema: The reasoning schema.
        dataset: The items.
        out: The job's folder (made if missing).
        model: The model name the engine expects.
        profile: The response format sent (a name of `arq.backends.openai.PROFILES`).
        temperature: Sampling temperature.
        repair_temperature: Temperature of repair requests (None: `temperature`).
        seed: Sampling seed.
        max_tokens: Output token limit per request.
        max_tokens_param: Name of the token-limit field.
        max_repairs: Repair rounds an item may take.
        retries: Sends per request after transport failures, the first included.
        schema_spec: Where later commands load the schema from (default
            `module:QualifiedName` of `schema`).
        max_file_requests: Request lines per input file at most.
        max_file_bytes: Bytes per input file at most.

    Returns:
        The job's manifest.

    Raises:
        BatchError: `out` holds another job.
        DatasetError: the dataset is missing, or an item is malformed, repeats an id, or
            lacks a context key the schema's checks read.
    """
    folder = Path(out)
    settings = Settings(
        model=model,
        profile=profile,
        temperature=temperature,
        repair_temperature=repair_temperature,
        seed=seed,
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        max_repairs=max_repairs,
        retries=retries,
    )
    maker = RequestMaker(schema, settings)  # checks the settings before anything is written
    digest, count = _digest(dataset)
    described: dict[str, Any] = {
        "schema": schema.__name__,
        "schema_spec": schema_spec or f"{schema.__module__}:{schema.__qualname__}",
        "fingerprint": schema_fingerprint(schema),
        "settings": settings,
        "dataset": os.fspath(dataset),
        "dataset_sha256": digest,
        "items": count,
    }
    job = Job(**described, tag=job_tag({**described, "settings": asdict(settings)}))
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "manifest.json").exists():
        earlier = Manifest.load(folder)
        if earlier.job != job:
            raise BatchError(
                f"{folder} holds another batch job ({earlier.job.schema} over"
                f" {earlier.job.dataset}, model {earlier.job.settings.model}); prepare into"
                " an empty folder",
                path=str(folder),
            )
        if earlier.rounds:
            return earlier  # prepared already
    manifest = Manifest(job=job)
    manifest.save(folder)  # the intent: a manifest without rounds is prepared again
    first = Round(1)
    round_folder = folder / "round-1"
    round_folder.mkdir(exist_ok=True)
    with (
        contextlib.ExitStack() as stack,
        DiskIndex(round_folder / ".ids.sqlite") as ids,
    ):
        state_file = open_new(stack, round_folder / "state.jsonl")
        shards = ShardWriter(
            stack, round_folder, max_requests=max_file_requests, max_bytes=max_file_bytes
        )
        for number, data in read_jsonl(dataset):
            where = f"{os.fspath(dataset)}, line {number}"
            item = parse_item(data, str(number), where)
            if not ids.add(item["id"]):
                raise DatasetError(f"{where}: the id {item['id']!r} is used twice")
            try:
                request, body = maker.first(item["context"])
            except ContextError as error:
                raise DatasetError(f"{where}: {error}") from None
            state = ItemState(
                id=item["id"],
                hash=_item_hash(data),
                context=item["context"],
                asked=list(request.steps),
                steer=steering(request),
            )
            state_file.write(state.to_line())
            shards.write(request_line(job.tag, 1, item["id"], body))
        if shards.lines != count:
            raise DatasetError(
                f"{os.fspath(dataset)}: its last line is cut short (not JSON); fix or drop it"
            )
        first.requests = shards.lines
        first.inputs = [f"round-1/{name}" for name in shards.names]
    shards.remove_stale()
    manifest.rounds.append(first)
    manifest.save(folder)
    return manifest


def _digest(dataset: str | os.PathLike[str]) -> tuple[str, int]:
    """The dataset's SHA-256 and its number of non-blank lines."""
    sha, count = hashlib.sha256(), 0
    try:
        with open(dataset, "rb") as source:
            for line in source:
                sha.update(line)
                count += bool(line.strip())
    except FileNotFoundError:
        raise DatasetError(f"dataset {os.fspath(dataset)!r}: not found") from None
    if not count:
        raise DatasetError(f"dataset {os.fspath(dataset)!r} holds no items")
    return sha.hexdigest(), count


def _item_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
