"""Guideline adherence: draft a reply, check the draft against each guideline, then reply.

For an assistant that must follow conditional guidelines ("when <condition>, <action>").
Each guideline is decided on its own entry: the model copies its condition, says whether
it holds now, copies its action, and says whether the draft does it. Copying the guideline
right before deciding puts it back in front of the model at the moment it matters.

Context keys:
    conversation: the conversation so far (text, or a list of {"role", "content"} messages).
    guidelines: a list of {"id", "condition", "action"} mappings.

`GuidelineAdherence` checks whatever guidelines the context holds. `for_guidelines(items)`
narrows it to one fixed list with `arq.checklist`: the ids become an enum in the JSON
Schema and the prompt lists one entry per guideline with its id filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, cast

from pydantic import BaseModel, Field, ValidationInfo, field_validator

import arq

__all__ = ["GuidelineAdherence", "GuidelineCheck", "for_guidelines"]


def _normal(text: str) -> str:
    """Text compared loosely: case, whitespace runs and a final full stop do not count."""
    return " ".join(text.split()).casefold().rstrip(".")


_KEYS = frozenset({"id", "condition", "action"})


def _guidelines(context: Any) -> dict[str, Mapping[str, Any]]:
    """The context's guidelines by id; a malformed list is the caller's mistake."""
    given = context.get("guidelines") if isinstance(context, Mapping) else None
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise arq.ContextError(
            "GuidelineAdherence needs context['guidelines']: a list of "
            "{'id', 'condition', 'action'} mappings"
        )
    found: dict[str, Mapping[str, Any]] = {}
    for guideline in given:
        if not isinstance(guideline, Mapping) or not guideline.keys() >= _KEYS:
            raise arq.ContextError(
                f"each guideline needs 'id', 'condition' and 'action' keys, got {guideline!r}"
            )
        found[str(guideline["id"])] = guideline
    return found


class GuidelineCheck(BaseModel):
    """One guideline, re-stated before it is decided."""

    id: str = Field(description="The guideline id.")
    condition: str = Field(
        description="The guideline's condition, copied word for word.", max_length=300
    )
    applies: bool = Field(description="Does this condition hold in the conversation now?")
    action: str = Field(description="The guideline's action, copied word for word.", max_length=300)
    compliant: bool = Field(
        description="Does the draft do this action? true when the guideline does not apply."
    )

    @field_validator("condition", "action")
    @classmethod
    def copied_from_the_guideline(cls, value: str, info: ValidationInfo) -> str:
        guideline = _guidelines(info.context).get(str(info.data.get("id")))
        if guideline is None:  # an unknown id: the list's coverage check reports it
            return value
        name = info.field_name or ""
        expected = str(guideline[name])
        if _normal(value) != _normal(expected):
            raise ValueError(
                f"copy the {name} of guideline {guideline['id']!r} word for word: {expected!r}"
            )
        return value


class GuidelineAdherence(arq.Reasoning):
    """Reply to the customer's last message, following every guideline whose condition holds.

    First draft a reply. Then check the draft against each guideline in turn: copy the
    guideline's condition, decide whether it holds now, copy its action, and decide whether
    the draft does that action. Last, write the reply to send: the draft, revised so that it
    does the action of every guideline that applies.
    """

    request: str = arq.query(
        "What does the customer ask for in the last message?", max_length=200, max_chunks=50
    )
    draft: str = arq.query("A first draft of the reply.", max_length=400, max_chunks=100)
    checks: Annotated[list[GuidelineCheck], arq.covers("guidelines")] = arq.query(
        "For each guideline: its condition, does it hold now, its action, does the draft do it?",
        instruction=(
            "Check every guideline exactly once. Copy its condition and its action word for "
            "word before you decide."
        ),
    )
    reply: str = arq.answer(
        "The reply to send.",
        instruction=(
            "Revise the draft so that it does the action of every guideline that applies; "
            "keep it if it already does."
        ),
        max_length=400,
        max_chunks=100,
    )

    @arq.check("draft", "checks", "reply")
    def breaches_are_revised(draft: str, checks: list[GuidelineCheck], reply: str) -> None:
        broken = [c.id for c in checks if c.applies and not c.compliant]
        if broken and _normal(reply) == _normal(draft):
            raise ValueError(
                f"the draft breaks guideline(s) {', '.join(broken)}: revise it so that it does "
                f"their action instead of sending it unchanged"
            )


def for_guidelines(guidelines: Sequence[Mapping[str, Any]]) -> type[GuidelineAdherence]:
    """`GuidelineAdherence` narrowed to these guidelines, one checklist entry for each.

    `guidelines` are {"id", "condition", "action"} mappings, the same list the run's
    context carries under "guidelines". The prompt shows each guideline beside its entry.
    """
    items = [(str(g["id"]), f"When {g['condition']}: {g['action']}") for g in guidelines]
    return cast(type[GuidelineAdherence], arq.checklist(GuidelineAdherence, "checks", items))
