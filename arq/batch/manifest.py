"""The manifest of a batch job: what the job is, and where each round stands.

A job lives in one folder:

```
DIR/manifest.json          the job (schema, settings, dataset) and each round's state
DIR/round-1/state.jsonl    the items this round asks for: context, kept steps, budgets
DIR/round-1/input-000.jsonl   the request lines, in the state's order, sharded
DIR/round-1/output-000.jsonl  what `arq batch run` got back (an engine's file is read as is)
DIR/round-1/accepted.jsonl, failed.jsonl   what ingesting the round decided
DIR/results.jsonl, DIR/failed.jsonl        every round's accepted and failed items
```

The manifest is rewritten whole (`arq.trace.write_file`) before each step acts (its
intent: `running`, `ingesting`) and after it (`ran`, `ingested`), so a command run again
after a crash knows what to redo; every step is a function of files that are already
complete, so redoing it writes the same files again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from arq.errors import BatchError
from arq.jsonschema import json_schema
from arq.schema import Reasoning, steps
from arq.trace import write_file

__all__ = [
    "FORMAT",
    "Job",
    "Manifest",
    "Round",
    "RoundState",
    "Settings",
    "custom_id",
    "job_schema",
    "job_tag",
    "parse_custom_id",
    "schema_fingerprint",
]

FORMAT = 1
"""The version of the manifest and of the records in `results.jsonl` and `failed.jsonl`."""

RoundState = Literal["prepared", "running", "submitted", "ran", "ingesting", "ingested"]


@dataclass(frozen=True)
class Settings:
    """What every request of the job is sent with.

    Attributes:
        model: The model name the engine expects.
        profile: A name of `arq.backends.openai.PROFILES`: the response format sent.
        temperature: Sampling temperature (None: the engine's).
        repair_temperature: Temperature of a repair request (None: `temperature`).
        seed: Sampling seed; a repair's moves on with the item's call number, as a run's.
        max_tokens: Output token limit per request.
        max_tokens_param: Name of the token-limit field in the body.
        max_repairs: Repair rounds an item may take after output errors.
        retries: Sends per request after transport failures (429, 5xx, expired), the
            first included; a budget apart from repairs.
    """

    model: str
    profile: str = "openai"
    temperature: float | None = None
    repair_temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    max_repairs: int = 2
    retries: int = 4


@dataclass
class Round:
    """One round: the requests sent, what came back, what ingesting it decided.

    Attributes:
        number: 1 for the first requests, then one per repair or re-send round.
        state: `prepared` (its files are written), `running` (`arq batch run` is sending
            it), `submitted` (to the Batch API), `ran` (its outputs are complete),
            `ingesting`, `ingested`.
        requests: Request lines in the round.
        inputs: Its input files, relative to the job's folder.
        outputs: Its output files from `arq batch run`, relative to the folder.
        results: The results files being or last ingested, with their sizes.
        counts: What ingesting decided: accepted, repair, resend, failed, duplicates,
            missing.
        batches: Its batches on the Batch API, one per input file: the `file`, the batch
            `id` once created (`intent` is set just before), and the `outputs` fetched.
    """

    number: int
    state: RoundState = "prepared"
    requests: int = 0
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """What the job is: the schema, the settings, the dataset.

    Attributes:
        schema: The schema's class name.
        schema_spec: Where to load it from (`module:Class`, `file.py:Class` or a blueprint).
        fingerprint: A hash of the schema's steps and JSON Schema; a changed schema is
            refused.
        settings: What the requests are sent with.
        dataset: The dataset file as given.
        dataset_sha256: Its hash when the job was prepared.
        items: The number of items.
        tag: A short hash of all the above, in every `custom_id` of the job.
    """

    schema: str
    schema_spec: str
    fingerprint: str
    settings: Settings
    dataset: str
    dataset_sha256: str
    items: int
    tag: str


@dataclass
class Manifest:
    """A job and its rounds, as `DIR/manifest.json` holds them."""

    job: Job
    rounds: list[Round] = field(default_factory=list)
    format: int = FORMAT

    @property
    def current(self) -> Round | None:
        """The round not yet ingested, if any (None: every item has an outcome)."""
        last = self.rounds[-1] if self.rounds else None
        return None if last is None or last.state == "ingested" else last

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the manifest whole or not at all."""
        text = json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"
        write_file(Path(folder) / "manifest.json", text)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Manifest:
        """Read `DIR/manifest.json`.

        Raises:
            BatchError: there is none, or it is not a manifest of this version.
        """
        path = Path(folder) / "manifest.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BatchError(
                f"{folder} holds no batch job (no manifest.json): run `arq batch prepare` first",
                path=str(path),
            ) from None
        except ValueError as exc:
            raise BatchError(f"{path} is not JSON: {exc}", path=str(path)) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise BatchError(
                f"{path} is a manifest of format {found!r}; this arq reads format {FORMAT}",
                path=str(path),
            )
        job = dict(data["job"])
        job["settings"] = Settings(**job["settings"])
        rounds = [Round(**r) for r in data["rounds"]]
        return cls(job=Job(**job), rounds=rounds)


def schema_fingerprint(schema: type[Reasoning]) -> str:
    """A hash of what the schema asks for: its steps' names, questions and instructions,
    and its JSON Schema."""
    described = [[s.name, s.question, s.instruction or ""] for s in steps(schema)]
    text = json.dumps([described, json_schema(schema, "json-schema")], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_tag(values: Mapping[str, Any]) -> str:
    """The short hash that `custom_id`s carry: another job's lines are told apart."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def custom_id(tag: str, round_number: int, item: str) -> str:
    """The `custom_id` of `item`'s request in round `round_number` of job `tag`."""
    return f"arq-{tag}-r{round_number}-{item}"


def parse_custom_id(text: object) -> tuple[str, int, str] | None:
    """The job tag, round and item a `custom_id` names; None if arq did not write it."""
    if not isinstance(text, str):
        return None
    parts = text.split("-", 3)
    if len(parts) != 4 or parts[0] != "arq" or not parts[2][1:].isdigit() or parts[2][0] != "r":
        return None
    return parts[1], int(parts[2][1:]), parts[3]


def job_schema(job: Job, schema: type[Reasoning] | None) -> type[Reasoning]:
    """The job's schema: `schema` if given (checked against the job's), or imported from
    the job's `module:Class` spec.

    Raises:
        BatchError: `schema` is not the job's, or the spec cannot be imported.
    """
    if schema is None:
        module, colon, name = job.schema_spec.partition(":")
        found: Any = None
        if colon and not module.endswith(".py"):
            with contextlib.suppress(ImportError, AttributeError):
                found = functools.reduce(getattr, name.split("."), importlib.import_module(module))
        if not (isinstance(found, type) and issubclass(found, Reasoning)):
            raise BatchError(
                f"cannot import the job's schema {job.schema_spec!r}: give it (schema=, or"
                " the SCHEMA option of `arq batch`)"
            )
        schema = found
    if schema_fingerprint(schema) != job.fingerprint:
        raise BatchError(
            f"{schema.__name__} is not the schema the job was prepared with ({job.schema},"
            f" fingerprint {job.fingerprint}): its steps, questions or JSON Schema differ;"
            " prepare a new job"
        )
    return schema
