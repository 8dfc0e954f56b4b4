"""Reasoning schemas shared by the tests."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from arq.checks import check, verbatim_in
from arq.schema import Reasoning, answer, query


class GuidelineCheck(BaseModel):
    """One guideline, re-stated before it is decided."""

    id: str = Field(description="The guideline id.")
    condition: str = Field(description="When does this guideline apply?")
    applies: bool = Field(description="Does its condition hold now?")
    compliant: bool = Field(description="Would the draft reply follow it?")


class SupportReply(Reasoning):
    """Answer the customer while following the support guidelines."""

    request: str = query("What exactly is the customer asking for in the last message?")
    order_id: Annotated[str, verbatim_in("conversation")] | None = query(
        "Which order id does the customer give, quoted from the conversation?",
        instruction="Copy the id exactly; null if the customer gives none.",
        default=None,
    )
    applicable: list[str] = query("Which guideline ids apply to this request?")
    checks: list[GuidelineCheck] = query(
        "For each applicable guideline: is the draft compliant?",
        instruction="Never promise a refund before the order status is known.",
    )
    decision: Literal["reply", "escalate"] = answer("Reply now, or escalate to a human?")
    answer: str = answer("The reply to send.", max_length=400, max_chunks=120)

    @check("applicable", "checks")
    def every_applicable_checked(applicable: list[str], checks: list[GuidelineCheck]) -> None:
        missing = set(applicable) - {c.id for c in checks}
        if missing:
            raise ValueError(f"no check for applicable guideline(s) {', '.join(sorted(missing))}")
