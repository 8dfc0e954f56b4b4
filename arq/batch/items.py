"""One item of a batch job between rounds: what a run keeps in memory, kept in a line.

`Executor.run` keeps an item's accepted steps, its repair policy's memory (repairs spent,
values rejected, failures seen) and its call count in memory from one call to the next;
a batch job keeps them in `round-N/state.jsonl`, one `ItemState` a line, so the next
round's request is the one the executor would send next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from arq.batch.manifest import FORMAT
from arq.checks import AllowedValues
from arq.prompt import Request
from arq.repair import Repairs
from arq.schema import Reasoning
from arq.trace import Usage

__all__ = ["ItemState", "outcome_record", "steered", "steering"]


@dataclass
class ItemState:
    """An item waiting for its next request's answer.

    Attributes:
        id: The item's id in the dataset.
        hash: A hash of the item as the dataset gave it.
        context: The run's context.
        asked: The steps the pending request asks for.
        accepted: The steps kept so far, as the model wrote them.
        calls: Requests sent for the item, the pending one included.
        retries: Transport failures of the pending request so far.
        repairs: Repairs started.
        rejected: JSON texts of values each step had rejected.
        seen: The failures so far, as the repair policy tells them apart.
        usage: Tokens of the answers so far.
        last: The text of the last answer.
        steer: What the pending request holds a steering backend to (`Request.rejected`
            and `Request.allowed`, as JSON), for a backend that answers the request
            itself rather than its body (`arq batch run --local`).
    """

    id: str
    hash: str
    context: dict[str, Any]
    asked: list[str]
    accepted: dict[str, Any] = field(default_factory=dict)
    calls: int = 1
    retries: int = 0
    repairs: int = 0
    rejected: dict[str, list[str]] = field(default_factory=dict)
    seen: list[Any] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    last: str = ""
    steer: dict[str, Any] = field(default_factory=dict)

    def to_line(self) -> str:
        """The state as one JSON line."""
        data = dict(self.__dict__)
        data["usage"] = _usage_dict(self.usage)
        return json.dumps(data, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemState:
        """The state a line of `state.jsonl` holds, read as JSON."""
        return cls(**{**data, "usage": Usage(**data["usage"])})

    def repair_policy(self, schema: type[Reasoning], max_repairs: int) -> Repairs:
        """The item's repair policy, with what it learned in earlier rounds."""
        repairs = Repairs(schema, self.context, max_repairs=max_repairs)
        repairs.count = self.repairs
        repairs.rejected = {step: list(values) for step, values in self.rejected.items()}
        repairs.seen = {_tupled(signature) for signature in self.seen}
        return repairs

    def remember(self, repairs: Repairs) -> None:
        """Keep what the repair policy learned, for the next round."""
        self.repairs = repairs.count
        self.rejected = {step: list(values) for step, values in repairs.rejected.items()}
        self.seen = sorted((list(s) for s in repairs.seen), key=json.dumps)


def steering(request: Request) -> dict[str, Any]:
    """What `request` holds a steering backend to, as JSON (`ItemState.steer`)."""
    steer: dict[str, Any] = {}
    if request.rejected:
        steer["rejected"] = list(request.rejected)
    if request.allowed:
        steer["allowed"] = {step: _allowed_json(a) for step, a in request.allowed.items()}
    return steer


def steered(steer: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, AllowedValues]]:
    """The rejected values and allowed values `steering` wrote."""
    allowed = {step: _allowed_of(data) for step, data in (steer.get("allowed") or {}).items()}
    return tuple(steer.get("rejected") or ()), allowed


def _allowed_json(allowed: AllowedValues) -> dict[str, Any]:
    data = asdict(allowed)  # nested AllowedValues of `fields` become dicts too
    return {key: value for key, value in data.items() if value is not None}


def _allowed_of(data: Mapping[str, Any]) -> AllowedValues:
    values = dict(data)
    if values.get("choices") is not None:
        values["choices"] = tuple(values["choices"])
    if values.get("fields") is not None:
        values["fields"] = tuple((name, _allowed_of(inner)) for name, inner in values["fields"])
    return AllowedValues(**values)


def outcome_record(
    state: ItemState, *, output: Any = None, error: Mapping[str, Any] | None = None
) -> str:
    """A line of `results.jsonl` (an `output`) or of `failed.jsonl` (an `error`)."""
    record: dict[str, Any] = {"version": FORMAT, "id": state.id}
    if error is None:
        record["output"] = output
    else:
        record["error"] = dict(error)
        record["accepted"] = state.accepted
        record["last_output"] = state.last
    record["usage"] = _usage_dict(state.usage)
    record["rounds"] = state.calls
    return json.dumps(record, ensure_ascii=False) + "\n"


def _usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "estimated": usage.estimated,
    }


def _tupled(value: Any) -> Any:
    """A failure signature read back from JSON: its lists as the tuples they were."""
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value
