"""The scenario schemas, their checks, and the scorers that judge their answers.

Three schemas, one per kind of scenario, each small enough for a 135M model to finish:

- `GuidelineMatch`: which support guidelines must the next reply follow? (context:
  `conversation`, `guidelines`)
- `FactAnswer`: answer from the given facts only, or say "I don't know." (context:
  `question`, `facts`)
- `ToolDecision`: call a tool, or ask for a missing required argument? (context:
  `conversation`, `tools`)

`SCHEMAS` maps each name (the `schema` key of a scenario) to its schema, and `SCORERS` holds
the scorers. A scorer reads only answer steps, so it judges the CoT and direct baselines
too, and passes when the scenario sets no expectation for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

import arq

__all__ = [
    "SCHEMAS",
    "SCORERS",
    "UNKNOWN",
    "Argument",
    "FactAnswer",
    "GuidelineCheck",
    "GuidelineMatch",
    "ToolDecision",
]

UNKNOWN = "I don't know."
"""What `FactAnswer` answers when no fact answers the question."""

_SPACES = re.compile(r"\s+")


def _normal(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def _last_customer_message(conversation: str) -> str:
    lines = [line for line in conversation.splitlines() if line.startswith("customer:")]
    return lines[-1].removeprefix("customer:") if lines else conversation


# --- guideline following ---------------------------------------------------------------------


class GuidelineCheck(BaseModel):
    """One guideline, judged on the customer's last message."""

    id: Annotated[str, arq.one_of("guidelines")] = Field(description="The guideline id.")
    holds: bool = Field(description="Does its 'when' condition hold in that last message?")


class GuidelineMatch(arq.Reasoning):
    """Decide which support guidelines the agent's next reply must follow."""

    last_message: Annotated[str, Field(max_length=200), arq.verbatim_in("conversation")] = (
        arq.query(
            "What does the customer say in their last message?",
            instruction="Copy it word for word from the last 'customer:' line.",
            max_chunks=60,
        )
    )
    guidelines: Annotated[list[GuidelineCheck], arq.covers("guidelines")] = arq.query(
        "For each guideline: does its 'when' condition hold in that last message?",
        instruction=(
            "Judge the last message only: a condition that held earlier but not now does not "
            "hold; a guideline followed before must be followed again if it holds again."
        ),
        max_chunks=80,
    )
    apply: Annotated[list[str], arq.one_of("guidelines")] = arq.answer(
        "The ids of the guidelines the next reply must follow ([] if none).", max_chunks=30
    )

    @arq.check("last_message")
    def quotes_the_last_message(last_message: str, context: Mapping[str, Any]) -> None:
        last = _last_customer_message(str(context.get("conversation", "")))
        if _normal(last_message) not in _normal(last):
            raise ValueError("quote the customer's LAST message, the last 'customer:' line")

    @arq.check("guidelines", "apply")
    def apply_what_holds(guidelines: list[GuidelineCheck], apply: list[str]) -> None:
        holding = sorted({g.id for g in guidelines if g.holds})
        if sorted(set(apply)) != holding:
            raise ValueError(f"apply must list exactly the guidelines that hold: {holding or '[]'}")


# --- answering from facts only -----------------------------------------------------------------


class FactAnswer(arq.Reasoning):
    """Answer the customer's question using only the facts given."""

    question: str = arq.query(
        "What exactly does the customer want to know?", max_length=120, max_chunks=40
    )
    fact: Annotated[str, arq.one_of("facts")] | None = arq.query(
        "Which one of the facts answers that question?",
        instruction="Copy the fact exactly as written; null if no fact answers the question.",
        max_chunks=40,
    )
    answer: Annotated[str, Field(max_length=200)] = arq.answer(
        "The answer to the customer.",
        instruction=f"Write the fact you chose word for word; if none answers, write {UNKNOWN}",
        max_chunks=50,
    )

    @arq.check("fact", "answer")
    def answer_from_the_fact(fact: str | None, answer: str) -> None:
        if fact is None and _normal(answer) != _normal(UNKNOWN):
            raise ValueError(f"no fact answers the question: the answer must be {UNKNOWN!r}")
        if fact is not None and _normal(fact) not in _normal(answer):
            raise ValueError(f"the answer must state the chosen fact word for word: {fact!r}")


# --- tool-call decisions -------------------------------------------------------------------------


class Argument(BaseModel):
    """One required argument of the chosen tool."""

    name: str = Field(description="The argument's name.", max_length=30)
    value: Annotated[str, Field(max_length=60), arq.verbatim_in("conversation")] | None = Field(
        description="Its value, copied from the conversation; null if the customer did not give it."
    )


def _required(context: Mapping[str, Any], tool: str) -> list[str]:
    for entry in context.get("tools") or ():
        if isinstance(entry, Mapping) and entry.get("id") == tool:
            return [str(name) for name in entry.get("required") or ()]
    return []


class ToolDecision(arq.Reasoning):
    """Decide whether to call a tool now, or ask the customer for a missing argument first."""

    tool: Annotated[str, arq.one_of("tools")] = arq.answer(
        "Which tool does what the customer asks? Give its id.", max_chunks=12
    )
    arguments: list[Argument] = arq.query(
        "For each required argument of that tool: what value does the customer give?",
        instruction="List each required argument once; null when it is not given. Never guess.",
        max_chunks=80,
    )
    decision: Literal["call", "ask"] = arq.answer(
        "Call the tool now, or ask the customer for what is missing?",
        instruction="Call only when every required argument has a value.",
    )

    @arq.check("tool", "arguments")
    def every_required_argument(
        tool: str, arguments: list[Argument], context: Mapping[str, Any]
    ) -> None:
        required = _required(context, tool)
        if sorted(a.name for a in arguments) != sorted(required):
            raise ValueError(f"list exactly the required arguments of {tool}: {required}")

    @arq.check("arguments", "decision")
    def call_only_when_complete(arguments: list[Argument], decision: str) -> None:
        missing = [a.name for a in arguments if a.value is None]
        if decision == "call" and missing:
            raise ValueError(f"{', '.join(missing)} not given: ask the customer, do not call")
        if decision == "ask" and not missing:
            raise ValueError("every required argument is given: call the tool")


SCHEMAS: dict[str, type[arq.Reasoning]] = {
    "GuidelineMatch": GuidelineMatch,
    "FactAnswer": FactAnswer,
    "ToolDecision": ToolDecision,
}


# --- scorers: (output, scenario) -> bool, reading answer steps only ------------------------------


def guidelines_applied(output: Any, item: Mapping[str, Any]) -> bool:
    """The guidelines to follow are exactly the expected ones."""
    expect = item["expect"]
    return "apply" not in expect or sorted(set(output.apply)) == sorted(expect["apply"])


def answer_grounded(output: Any, item: Mapping[str, Any]) -> bool:
    """The answer states one of the given facts, or says it does not know: nothing invented."""
    if "fact" not in item["expect"]:
        return True
    answer = _normal(output.answer)
    facts = [_normal(f) for f in item["context"]["facts"]]
    return answer == _normal(UNKNOWN) or any(fact in answer for fact in facts)


def answer_correct(output: Any, item: Mapping[str, Any]) -> bool:
    """The answer states the expected fact, or says it does not know when no fact answers."""
    expect = item["expect"]
    if "fact" not in expect:
        return True
    if expect["fact"] is None:
        return bool(_normal(output.answer) == _normal(UNKNOWN))
    return _normal(expect["fact"]) in _normal(output.answer)


def tool_matches(output: Any, item: Mapping[str, Any]) -> bool:
    """The tool chosen is the expected one."""
    expect = item["expect"]
    return "tool" not in expect or bool(output.tool == expect["tool"])


def decision_matches(output: Any, item: Mapping[str, Any]) -> bool:
    """Call or ask, as expected: a missing required argument means ask."""
    expect = item["expect"]
    return "decision" not in expect or bool(output.decision == expect["decision"])


SCORERS: dict[str, Callable[[Any, Mapping[str, Any]], bool]] = {
    "guidelines": guidelines_applied,
    "grounded": answer_grounded,
    "correct_fact": answer_correct,
    "tool": tool_matches,
    "decision": decision_matches,
}
