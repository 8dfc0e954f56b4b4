"""Events of a run, as `Executor.stream` yields them while the model writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from arq.errors import BackendError, OutputError
from arq.outcome import Unconverged
from arq.schema import Reasoning
from arq.trace import Result

__all__ = [
    "OutputAccepted",
    "OutputNotConverged",
    "Event",
    "RepairStarted",
    "RetryScheduled",
    "StepAccepted",
    "StepFailed",
]

SchemaT = TypeVar("SchemaT", bound=Reasoning)


@dataclass(frozen=True, slots=True)
class StepAccepted:
    """A step passed its checks; it is kept whatever happens later in the run."""

    step: str
    value: Any
    attempt: int


@dataclass(frozen=True, slots=True)
class StepFailed:
    """The output failed at `step` (None when no step could be named); reading stopped."""

    step: str | None
    error: OutputError
    attempt: int


@dataclass(frozen=True, slots=True)
class RepairStarted:
    """A repair call starts from `step`, keeping the steps accepted before it.

    `kind` is "continuation" when the earlier answer was cut at its token limit inside
    `step` (a `StepFailed` with a `TruncatedOutputError` comes before it), "repair" when
    it failed there.
    """

    step: str
    attempt: int
    reason: str
    kind: Literal["repair", "continuation"] = "repair"


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A transport error will be retried after `wait` seconds."""

    error: BackendError
    wait: float
    attempt: int


@dataclass(frozen=True, slots=True)
class OutputAccepted(Generic[SchemaT]):
    """The run produced a valid output."""

    result: Result[SchemaT]


@dataclass(frozen=True, slots=True)
class OutputNotConverged(Generic[SchemaT]):
    """Repairs did not converge and the executor returns what the run has
    (`Executor(unconverged="return")`); never sent otherwise."""

    unconverged: Unconverged[SchemaT]


Event: TypeAlias = (
    StepAccepted
    | StepFailed
    | RepairStarted
    | RetryScheduled
    | OutputAccepted[Any]
    | OutputNotConverged[Any]
)
"""Any event `Executor.stream` yields."""
