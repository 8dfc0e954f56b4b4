"""Advisory checks: a failure the run records and goes on with, once its repairs are spent.

Some checks exist to make the model attend (copy the guideline's condition before deciding),
others guard what the caller relies on (the order id is quoted from the conversation). A
cross-step check declared with `@arq.check(..., advisory=True)` is repaired within its own
small budget (`Executor(advisory_repairs=1)`, apart from `max_repairs`); if it still fails,
the step is accepted and the failure is recorded as an `AdvisoryFailure` on the result
(`Result.advisories`) and on the step's trace record (`StepRecord.advisory`). Type checks,
the JSON Schema, field checks and checks not declared advisory stay strict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AdvisoryFailure"]


@dataclass(frozen=True, slots=True)
class AdvisoryFailure:
    """An advisory check that still failed when its repairs were spent; the run went on.

    Attributes:
        check: The check's name (its function's name).
        step: The step the check names for repair (its latest step, or its `repair`).
        message: Why it failed, in the check's words.
        steps: Every step the check reads.
        value: The value of `step` that was kept, as the model wrote it.
    """

    check: str
    step: str
    message: str
    steps: tuple[str, ...]
    value: Any = None
