"""Grounded answer: quote the facts from the documents, then answer from them alone.

For question answering over given documents (retrieval results, a policy, a manual). Every
fact is written next to its source, quoted word for word from the documents, and the check
on each quote reads the documents themselves: a made-up or paraphrased quote fails,
whatever the model says about it. Numbers are held to the quotes too: a number in a fact
must be in its quote, and a number in the answer must be in a quote (or in the question).

Context keys:
    question: the question to answer.
    documents: the text to answer from (a string, a list of strings, or a list of
        {"id", "text"} mappings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

import arq

__all__ = ["GroundedAnswer", "GroundedFact"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _numbers(text: str) -> set[str]:
    """The numbers written in `text`, with thousands separators dropped (1,000 = 1000)."""
    return {number.replace(",", "") for number in _NUMBER.findall(text)}


def _by_value(number: str) -> tuple[int, str]:
    return len(number.split(".")[0]), number


class GroundedFact(BaseModel):
    """One fact, with the words of the documents that say it."""

    quote: Annotated[str, Field(max_length=300), arq.verbatim_in("documents")] = Field(
        description="The words of the documents that state the fact, copied exactly."
    )
    fact: str = Field(
        description="The fact, in one short sentence, saying only what the quote says.",
        max_length=200,
    )

    @model_validator(mode="after")
    def numbers_from_the_quote(self) -> GroundedFact:
        invented = sorted(_numbers(self.fact) - _numbers(self.quote), key=_by_value)
        if invented:
            raise ValueError(f"the fact gives {', '.join(invented)}, which its quote does not")
        return self


class GroundedAnswer(arq.Reasoning):
    """Answer the question using only what the documents say.

    First say what the question asks for. Then list the facts that answer it, each with
    the words of the documents that state it, copied exactly. Then decide whether those
    facts answer the question, and answer from them alone. When they do not, say that the
    documents do not give the answer instead of guessing.
    """

    need: str = arq.query("What exactly does the question ask for?", max_length=200, max_chunks=50)
    facts: list[GroundedFact] = arq.query(
        "Which facts in the documents answer it? Give each with its quote.",
        instruction=(
            "Copy each quote word for word from the documents. Leave the list empty if the "
            "documents do not say."
        ),
        max_length=6,
    )
    answerable: bool = arq.query("Do these facts answer the question?")
    answer: str = arq.answer(
        "The answer to the question.",
        instruction=(
            "Use only the facts above. If they do not answer the question, say that the "
            "documents do not say."
        ),
        max_length=500,
        max_chunks=120,
    )

    @arq.check("facts", "answerable")
    def answerable_needs_facts(facts: list[GroundedFact], answerable: bool) -> None:
        if answerable and not facts:
            raise ValueError("no fact is quoted, so the documents do not answer the question")

    @arq.check("facts", "answer")
    def numbers_from_the_quotes(
        facts: list[GroundedFact], answer: str, context: Mapping[str, Any]
    ) -> None:
        # the question's own numbers may be repeated ("not after 45 days")
        known = _numbers(str(context.get("question") or ""))
        for fact in facts:
            known |= _numbers(fact.quote)
        invented = sorted(_numbers(answer) - known, key=_by_value)
        if invented:
            raise ValueError(
                f"the answer gives {', '.join(invented)}, which no quoted fact says: "
                f"use only the facts above"
            )
