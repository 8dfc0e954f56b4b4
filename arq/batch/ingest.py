"""`ingest`: an engine's results for a round become outcomes and the next round's requests.

The results (an output file, and the error file the OpenAI Batch API writes apart) are
indexed on disk by `custom_id`, then the round's items are read in order, each joined to
its line and judged (`arq.batch.judge`). Every file the round produces is written beside
its target and renamed only once all of them are complete, and the manifest says
`ingesting` before and `ingested` after: a crash anywhere is undone by running the same
command again, which writes the same files.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arq.batch.files import ShardWriter, concat, open_new, read_jsonl
from arq.batch.index import DiskIndex
from arq.batch.items import ItemState
from arq.batch.judge import judge
from arq.batch.manifest import Manifest, Round, custom_id, job_schema, parse_custom_id
from arq.batch.requests import RequestMaker, request_line
from arq.errors import BatchError
from arq.schema import Reasoning

__all__ = ["RoundSummary", "ingest"]

COUNTS = ("accepted", "repair", "resend", "failed", "duplicates", "missing")


@dataclass(frozen=True)
class RoundSummary:
    """What ingesting a round decided.

    Attributes:
        round: The round ingested.
        requests: Its requests.
        counts: Items `accepted`, sent to `repair` or to `resend` in the next round, and
            `failed`; result lines dropped as `duplicates`; requests `missing` from the
            results (sent again).
        next_round: The round prepared next, or None when every item has an outcome.
    """

    round: int
    requests: int
    counts: dict[str, int]
    next_round: int | None

    def line(self) -> str:
        """One progress line."""
        c = self.counts
        text = (
            f"round {self.round}: {self.requests} requests, {c['accepted']} accepted,"
            f" {c['repair']} to repair, {c['resend']} to send again, {c['failed']} failed"
        )
        if c["duplicates"] or c["missing"]:
            text += f" ({c['duplicates']} duplicate lines dropped, {c['missing']} missing)"
        return text


def ingest(
    folder: str | os.PathLike[str],
    results: Sequence[str | os.PathLike[str]] = (),
    *,
    schema: type[Reasoning] | None = None,
) -> RoundSummary:
    """Ingest the current round's results in the job folder `folder`.

    Args:
        folder: The job's folder.
        results: The engine's output file and, for the OpenAI Batch API, its error file;
            by default the outputs `arq batch run` wrote for the round.
        schema: The job's schema (default: imported from the manifest's spec).

    Returns:
        What the round decided. Ingesting the same files again after the round is
        ingested does nothing and returns the same summary.

    Raises:
        BatchError: the results belong to another round or another job, hold a request
            the round did not send, or there are none.
    """
    root = Path(folder)
    manifest = Manifest.load(root)
    schema = job_schema(manifest.job, schema)
    files = [Path(p) for p in results]
    current = manifest.current
    if not files:  # those being ingested when a crash stopped it, or those run wrote
        if current is not None and current.state == "ingesting":
            files = [Path(stamp["path"]) for stamp in current.results]
        elif current is not None and current.state == "ran":
            files = [root / name for name in current.outputs]
        else:
            raise BatchError(f"{root}: no results given, and no round that `arq batch run` ran")
    stamps = [{"path": os.fspath(p), "size": _size(p)} for p in files]
    round_number = _round_of(manifest, files)
    if round_number is None:  # no line at all (a batch that expired before any answer)
        if current is None:
            raise BatchError(f"{root}: every item has its outcome; there is no round to ingest")
        round_number = current.number
    done = manifest.rounds[round_number - 1]
    if done.state == "ingested":
        if done.results == stamps:
            return _summary(manifest, done)
        raise BatchError(
            f"{files[0]} holds results of round {round_number}, which was ingested from"
            f" other files; the job is at round {len(manifest.rounds)}",
            path=os.fspath(files[0]),
        )
    current = done  # a round not ingested is the last one
    current.state, current.results = "ingesting", stamps
    manifest.save(root)  # the intent: a crash from here on is undone by ingesting again
    maker = RequestMaker(schema, manifest.job.settings)
    counts, following = _ingest_round(root, manifest, current, files, maker)
    current.state, current.counts = "ingested", counts
    if following.requests:
        manifest.rounds.append(following)
    else:  # every item has its outcome: no next round
        with contextlib.suppress(OSError):
            (root / f"round-{following.number}" / "state.jsonl").unlink()
            (root / f"round-{following.number}").rmdir()
    manifest.save(root)
    return _summary(manifest, current)


def _ingest_round(
    root: Path, manifest: Manifest, current: Round, files: list[Path], maker: RequestMaker
) -> tuple[dict[str, int], Round]:
    """Judge every item of `current`; write the round's outcomes and the next round."""
    number, tag = current.number, manifest.job.tag
    here, there = root / f"round-{number}", root / f"round-{number + 1}"
    there.mkdir(exist_ok=True)
    counts = dict.fromkeys(COUNTS, 0)
    with contextlib.ExitStack() as stack, DiskIndex(here / ".results.sqlite") as index:
        _index(index, files, tag, number)
        accepted = open_new(stack, here / "accepted.jsonl")
        failed = open_new(stack, here / "failed.jsonl")
        next_state = open_new(stack, there / "state.jsonl")
        shards = ShardWriter(stack, there)
        for state, request in _items(root, current):
            line = index.take(custom_id(tag, number, state.id))
            counts["missing"] += line is None
            verdict = judge(maker, state, None if line is None else json.loads(line), request)
            counts[verdict.kind] += 1
            if verdict.kind == "accepted":
                accepted.write(verdict.record)
            elif verdict.kind == "failed":
                failed.write(verdict.record)
            else:
                assert verdict.state is not None
                assert verdict.body is not None
                next_state.write(verdict.state.to_line())
                shards.write(request_line(tag, number + 1, state.id, verdict.body))
        strangers, example = index.unused()
        if strangers:
            raise BatchError(
                f"the results hold {strangers} custom_id(s) that round {number} did not send,"
                f" such as {example!r}: they belong to another job or were edited",
                path=os.fspath(files[0]),
            )
        counts["duplicates"] = index.duplicates
    shards.remove_stale()
    rounds = range(1, number + 1)
    concat((root / f"round-{r}" / "accepted.jsonl" for r in rounds), root / "results.jsonl")
    concat((root / f"round-{r}" / "failed.jsonl" for r in rounds), root / "failed.jsonl")
    inputs = [f"round-{number + 1}/{name}" for name in shards.names]
    return counts, Round(number + 1, requests=shards.lines, inputs=inputs)


def _index(index: DiskIndex, files: list[Path], tag: str, number: int) -> None:
    """Index the result lines by `custom_id`; a line with an answer wins over an error."""
    for path in files:
        for line_number, line in read_jsonl(path):
            key = line.get("custom_id") if isinstance(line, dict) else None
            named = parse_custom_id(key)
            where = f"{path}, line {line_number}"
            if named is None:
                raise BatchError(
                    f"{where}: custom_id {key!r} was not written by arq batch", path=str(path)
                )
            if named[0] != tag:
                raise BatchError(
                    f"{where}: custom_id {key!r} belongs to another batch job (this one's"
                    f" custom_ids start arq-{tag}-)",
                    path=str(path),
                )
            if named[1] != number:
                raise BatchError(
                    f"{where}: custom_id {key!r} is of round {named[1]}; the job is at round"
                    f" {number}",
                    path=str(path),
                )
            response = line.get("response")
            ok = isinstance(response, dict) and response.get("status_code") == 200
            index.put(str(key), json.dumps(line, ensure_ascii=False), rank=int(ok))


def _items(root: Path, current: Round) -> Iterator[tuple[ItemState, dict[str, Any]]]:
    """The round's items with their request bodies, in order."""
    states = read_jsonl(root / f"round-{current.number}" / "state.jsonl")
    requests = (line for name in current.inputs for _, line in read_jsonl(root / name))
    for (_, state_data), request in zip(states, requests, strict=True):
        state = ItemState.from_dict(state_data)
        named = parse_custom_id(request.get("custom_id"))
        if named is None or named[2] != state.id:
            raise BatchError(f"{root}: round {current.number}'s state and inputs disagree")
        yield state, request["body"]


def _round_of(manifest: Manifest, files: list[Path]) -> int | None:
    """The round the first result line names; None if the files hold no line."""
    for path in files:
        for line_number, line in read_jsonl(path):
            named = parse_custom_id(line.get("custom_id") if isinstance(line, dict) else None)
            if named is None or named[0] != manifest.job.tag:
                raise BatchError(
                    f"{path}, line {line_number}: not a result of this batch job (its"
                    f" custom_ids start arq-{manifest.job.tag}-)",
                    path=str(path),
                )
            if not 1 <= named[1] <= len(manifest.rounds):
                raise BatchError(
                    f"{path}: results of round {named[1]}; the job has"
                    f" {len(manifest.rounds)} round(s)",
                    path=str(path),
                )
            return named[1]
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise BatchError(f"{path}: no such file", path=str(path)) from None


def _summary(manifest: Manifest, done: Round) -> RoundSummary:
    following = done.number + 1 if len(manifest.rounds) > done.number else None
    return RoundSummary(done.number, done.requests, dict(done.counts), following)
