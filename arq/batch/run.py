"""`run`: send a round's request lines to an OpenAI-compatible server, as a batch engine would.

Each input file gets an output file in the engine's format (`{"id", "custom_id",
"response": {"status_code", "request_id", "body"}, "error"}`, failures inline as `vllm
run-batch` writes them). Lines are appended to a `.part` file as answers arrive, a few
requests at a time (`concurrency`); the file is renamed when every line is in. Run again
after a kill, it keeps the complete lines of the `.part` file (a line cut short is
dropped) and sends only the requests it has no line for.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from arq.backends.base import Backend
from arq.backends.openai import OpenAIBackend
from arq.batch.engine import complete_with_stream
from arq.batch.files import read_jsonl
from arq.batch.items import ItemState
from arq.batch.manifest import Manifest, Round, job_schema
from arq.errors import BackendError, BatchError, InvalidArgumentError
from arq.schema import Reasoning

__all__ = ["arun", "run"]


def run(
    folder: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: Backend | None = None,
    schema: type[Reasoning] | None = None,
    concurrency: int = 8,
) -> Round:
    """Send the current round of the job in `folder` and write its outputs (blocking).

    Args:
        folder: The job's folder.
        base_url: The server, e.g. ``"http://127.0.0.1:8000/v1"``.
        api_key: Its key (default: the `OPENAI_API_KEY` variable, or none for a local
            server).
        backend: A backend to answer with instead of `base_url` and `api_key`: an
            `OpenAIBackend` sends each line's body as it is; any other (the embedded
            `LlamaCppBackend`) streams the request the body holds.
        schema: The job's schema, for a backend that is not an `OpenAIBackend` (default:
            imported from the manifest's spec).
        concurrency: Requests in flight at once.

    Returns:
        The round, now `ran`, with its output files.

    Raises:
        BatchError: the job has no round left to run.
    """
    return asyncio.run(
        arun(
            folder,
            base_url=base_url,
            api_key=api_key,
            backend=backend,
            schema=schema,
            concurrency=concurrency,
        )
    )


async def arun(
    folder: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    backend: Backend | None = None,
    schema: type[Reasoning] | None = None,
    concurrency: int = 8,
) -> Round:
    """`run` on the caller's event loop."""
    if concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
    root = Path(folder)
    manifest = Manifest.load(root)
    current = manifest.current
    if current is None:
        raise BatchError(f"{root}: every item has its outcome; there is no round to run")
    if current.state in ("ran", "ingesting"):
        return current
    if current.state == "submitted":
        raise BatchError(
            f"{root}: round {current.number} was submitted to the Batch API: `arq batch"
            " fetch` gets its results"
        )
    own = backend is None
    if backend is None:
        if base_url is None:
            raise InvalidArgumentError("run needs base_url or backend")
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        backend = OpenAIBackend(manifest.job.settings.model, base_url=base_url, api_key=key)
    engine = _Engine(backend, None)
    if not isinstance(backend, OpenAIBackend):
        engine = _Engine(backend, job_schema(manifest.job, schema))
    current.state = "running"
    manifest.save(root)  # the intent: outputs may be partial until the round says `ran`
    try:
        outputs = []
        # the round's items, in the order of its request lines across the files
        states = (s for _, s in read_jsonl(root / f"round-{current.number}" / "state.jsonl"))
        for index, name in enumerate(current.inputs):
            output = f"round-{current.number}/output-{index:03d}.jsonl"
            pairs = zip(read_jsonl(root / name), states, strict=False)  # `states` goes on
            lines = ((line, state) for (_, line), state in pairs)
            if not (root / output).exists():
                await _run_file(lines, root / output, engine, concurrency)
            else:
                collections.deque(lines, maxlen=0)  # its items: on to the next file's
            outputs.append(output)
    finally:
        if own:
            await backend.aclose()
    current.state, current.outputs = "ran", outputs
    manifest.save(root)
    return current


class _Engine:
    """Answers a request line's body: as it is through `OpenAIBackend.complete`, or by
    streaming the request it holds from any other backend."""

    def __init__(self, backend: Backend, schema: type[Reasoning] | None) -> None:
        self.backend = backend
        self.schema = schema

    async def complete(
        self, body: dict[str, Any], state: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        if isinstance(self.backend, OpenAIBackend):
            return await self.backend.complete(body)
        assert self.schema is not None  # set for every backend but OpenAIBackend
        item = ItemState.from_dict(state)
        return await complete_with_stream(self.backend, self.schema, body, item), None


async def _run_file(
    lines: Iterator[tuple[dict[str, Any], dict[str, Any]]],
    target: Path,
    engine: _Engine,
    concurrency: int,
) -> None:
    """Answer every request line (with its item's state) into `target`, resuming its
    `.part` file."""
    part = target.with_name(f".{target.name}.part")
    done = _resume(part)
    todo = (pair for pair in lines if pair[0].get("custom_id") not in done)
    tally = _Tally()
    with open(part, "a", encoding="utf-8") as out:
        workers = [_worker(todo, engine, out, tally) for _ in range(concurrency)]
        await asyncio.gather(*workers)
        out.flush()
        os.fsync(out.fileno())
    if tally.unreachable and not tally.answered and not done:
        # nothing reached the server: a wrong URL or a server down is not the items' fault,
        # and must not spend their retry budget
        part.unlink()
        raise BackendError(f"no request reached the server: {tally.first_error}", retryable=True)
    os.replace(part, target)


class _Tally:
    """Requests answered with an HTTP status, and those that reached no server."""

    def __init__(self) -> None:
        self.answered = 0
        self.unreachable = 0
        self.first_error = ""


async def _worker(
    todo: Iterator[tuple[dict[str, Any], dict[str, Any]]],
    engine: _Engine,
    out: IO[str],
    tally: _Tally,
) -> None:
    for request, state in todo:  # one iterator shared by the workers, on one thread
        line = await _answer(request, state, engine)
        if line["error"] is None:
            tally.answered += 1
        else:
            tally.unreachable += 1
            tally.first_error = tally.first_error or line["error"]["message"]
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()  # a kill loses at most the line being written


async def _answer(
    request: dict[str, Any], state: dict[str, Any], engine: _Engine
) -> dict[str, Any]:
    """The output line for one request line."""
    line: dict[str, Any] = {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request.get("custom_id"),
        "response": None,
        "error": None,
    }
    try:
        body, request_id = await engine.complete(request.get("body") or {}, state)
    except BackendError as error:
        if error.status is None:
            line["error"] = {"code": "request_failed", "message": str(error)}
        else:
            body = {"error": {"message": str(error), "code": error.status}}
            line["response"] = {
                "status_code": error.status,
                "request_id": error.request_id,
                "body": body,
            }
        return line
    line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    return line


def _resume(part: Path) -> set[str]:
    """The custom_ids `part` has complete lines for; a last line cut short is cut off."""
    if not part.exists():
        return set()
    with open(part, "rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        while end > 0:  # back to the last line break, a block at a time
            start = max(0, end - (1 << 16))
            handle.seek(start)
            block = handle.read(end - start)
            if (cut := block.rfind(b"\n")) >= 0:
                end = start + cut + 1
                break
            end = start
        handle.truncate(end)
    done = set()
    for _, line in read_jsonl(part):
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            done.add(line["custom_id"])
    return done
