"""`Unconverged`: what a run returns when its repairs ran out, if the executor is told to.

By default a run whose repairs do not converge raises `ConvergenceError`: an invalid
object is never returned as valid. `Executor(unconverged="return")` returns an
`Unconverged` instead, for a caller that wants something defined to act on (a fallback
answer, a human review queue). It is not a `Result` and holds no instance of the schema,
so it cannot be read where a validated output is expected: it has no `output`, and
`validate_output` refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from arq.checks.severity import AdvisoryFailure
from arq.errors import OutputError, StepError
from arq.schema import Reasoning, steps
from arq.trace import Trace, Usage

__all__ = ["UnconvergedPolicy", "Unconverged"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)

UnconvergedPolicy: TypeAlias = Literal["raise", "return"]
"""What a run does when repairs do not converge: raise `ConvergenceError` (the default),
or return an `Unconverged`."""


@dataclass(frozen=True)
class Unconverged(Generic[SchemaT]):
    """A run that ended without a valid output, marked as such.

    Attributes:
        schema: The reasoning schema the run was to fill.
        accepted: The steps that passed their checks, validated, in step order.
        remaining: The last value the model wrote for each step not accepted (as it wrote
            it, JSON-like), for the steps it wrote at all; these values are not validated.
        failures: For each step in `remaining` whose last value was rejected, why (the
            check's message, as the trace records it).
        reason: Why the run stopped (the message `ConvergenceError` would carry).
        last_error: The final failure.
        trace: Every call made.
        advisories: Advisory checks that failed on accepted steps once their repairs were
            spent (`arq.checks.severity`).
        converged: Always False: this is not a validated output.
    """

    schema: type[SchemaT]
    accepted: Mapping[str, Any]
    remaining: Mapping[str, Any]
    failures: Mapping[str, str]
    reason: str
    last_error: OutputError
    trace: Trace
    advisories: tuple[AdvisoryFailure, ...] = ()
    converged: Literal[False] = field(default=False, init=False)

    @property
    def usage(self) -> Usage:
        """Tokens summed over every call."""
        return self.trace.usage

    @property
    def missing(self) -> tuple[str, ...]:
        """Steps neither accepted nor written, in step order."""
        return tuple(
            s.name
            for s in steps(self.schema)
            if s.name not in self.accepted and s.name not in self.remaining
        )


def unconverged(
    schema: type[SchemaT],
    accepted: Mapping[str, Any],
    trace: Trace,
    *,
    reason: str,
    last_error: OutputError,
    advisories: Sequence[AdvisoryFailure] = (),
) -> Unconverged[SchemaT]:
    """The `Unconverged` of a run that stopped with `accepted` kept: each other step's last
    value and rejection are read from the trace's step records, latest call first."""
    remaining: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for attempt in reversed(trace.attempts):
        for record in reversed(attempt.steps):
            name = record.name
            if name in accepted or name in remaining:
                continue
            remaining[name] = record.value
            if record.error is not None:
                failures[name] = record.error
    if isinstance(last_error, StepError) and last_error.step not in accepted:
        failures.setdefault(last_error.step, str(last_error))  # a model-level validator's
    order = [s.name for s in steps(schema)]
    return Unconverged(
        schema,
        {name: accepted[name] for name in order if name in accepted},
        {name: remaining[name] for name in order if name in remaining},
        {name: failures[name] for name in order if name in failures},
        reason,
        last_error,
        trace,
        tuple(advisories),
    )
