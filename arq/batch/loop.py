"""`loop`: run and ingest rounds until every item of a job has its outcome."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from arq.backends.base import Backend
from arq.batch.api import fetch, submit
from arq.batch.ingest import RoundSummary, ingest
from arq.batch.manifest import Manifest
from arq.batch.run import run
from arq.schema import Reasoning

__all__ = ["loop"]


def loop(
    folder: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: Backend | None = None,
    schema: type[Reasoning] | None = None,
    concurrency: int = 8,
    progress: Callable[[RoundSummary], None] | None = None,
    batch_api: bool = False,
    poll: float = 60.0,
) -> list[RoundSummary]:
    """Run the job's current round on a server, ingest it, and go on until no item is left.

    Stopped at any point, the same call goes on from where it stopped. The arguments are
    those of `arq.batch.run` and `arq.batch.ingest`; `progress` is called after each round.
    With `batch_api`, each round is submitted to the Batch API instead (`arq.batch.submit`)
    and fetched once its batches end, asking every `poll` seconds.

    Returns:
        The summary of each round this call ingested.
    """
    summaries = []
    while (current := Manifest.load(folder).current) is not None:
        if batch_api and current.state in ("prepared", "submitted"):
            submit(folder, base_url=base_url, api_key=api_key)
            while fetch(folder, base_url=base_url, api_key=api_key).state != "ran":
                time.sleep(poll)
        elif current.state in ("prepared", "running", "submitted"):
            run(
                folder,
                base_url=base_url,
                api_key=api_key,
                backend=backend,
                schema=schema,
                concurrency=concurrency,
            )
        summary = ingest(folder, schema=schema)
        summaries.append(summary)
        if progress is not None:
            progress(summary)
    return summaries
