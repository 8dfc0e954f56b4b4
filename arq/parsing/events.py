"""What the step parser reports as it reads, and the step names it reads them by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from arq.errors import InvalidArgumentError, SchemaError

__all__ = ["ObjectCompleted", "ParseEvent", "StepCompleted", "StepStarted", "step_names"]


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A top-level step's key was read and its value began at `position`."""

    step: str
    position: int


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """A top-level step's value ended; `raw` is its text, `output[start:end]`."""

    step: str
    value: Any
    raw: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ObjectCompleted:
    """The top-level closing brace was read; `position` is its offset."""

    position: int


ParseEvent: TypeAlias = StepStarted | StepCompleted | ObjectCompleted
"""Any event `StepParser.feed` returns."""


def step_names(steps: Sequence[str] | type[Any]) -> list[str]:
    """Return the declared step keys, from a sequence or a pydantic model class."""
    if isinstance(steps, type):
        fields = getattr(steps, "model_fields", None)
        if not isinstance(fields, dict):
            raise InvalidArgumentError(
                f"{steps.__name__} is not a pydantic model: pass step names instead"
            )
        return list(fields)
    if isinstance(steps, str):
        raise InvalidArgumentError("steps must be a sequence of step names, not a single string")
    names = list(steps)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SchemaError(f"step {name!r} is declared twice", field=name)
        seen.add(name)
    return names
