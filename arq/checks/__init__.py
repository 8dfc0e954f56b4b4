"""Checks that hold steps to the run's context, cross-step checks, and what they allow.

Two kinds of check, both one line to write:

* field checks, as `Annotated` metadata, run when their step completes and read the run's
  context (the mapping passed to `build`/`run`) through Pydantic's validation context::

      order_id: Annotated[str, arq.verbatim_in("conversation")] = arq.query("Which order?")

* cross-step checks, declared on the schema with `@arq.check(...)`, run as soon as every
  step they read is complete::

      @arq.check("applicable", "checks")
      def every_applicable_checked(applicable: list[str], checks: list[Check]) -> None:
          ...  # raise ValueError("...") to reject

A failed check becomes a precise repair turn, so the message should say what is wrong in
terms the model can act on.

A cross-step check can be `advisory=True`: once its own repairs are spent, its failure is
recorded and the run goes on (`severity`).

The rooms: `context` (the field checks), `cross` (cross-step checks), `allowed` (grounding:
what the field checks allow, as data a backend can enforce while decoding), `shape` (what a
step's JSON Schema allows) and `dates` (dates written in text).
"""

from __future__ import annotations

from arq.checks.allowed import AllowedValues, allowed_values
from arq.checks.context import coverage_problem, covers, date_in, one_of, quoted, verbatim_in
from arq.checks.cross import CrossCheck, check, declared_checks
from arq.checks.severity import AdvisoryFailure

__all__ = [
    "AdvisoryFailure",
    "AllowedValues",
    "CrossCheck",
    "allowed_values",
    "check",
    "coverage_problem",
    "covers",
    "date_in",
    "declared_checks",
    "one_of",
    "quoted",
    "verbatim_in",
]
