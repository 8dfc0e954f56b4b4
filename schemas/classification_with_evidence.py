"""Classification with evidence: quote the words that decide, then give the label.

For labelling a text (a ticket's topic, a review's sentiment, a message's intent) where the
label must be backed by the text itself. The model first quotes the evidence, word for
word, then says what it shows, then gives the label and its confidence. The quotes are
checked against the text, at least one is required, and the label must be one of the
labels given.

Context keys:
    text: the text to classify.
    labels: the allowed labels: a list of label ids, or of {"id", "description"} mappings.

`ClassificationWithEvidence` checks the label against the context's labels.
`for_labels(labels)` also makes the label an enum in the JSON Schema, for providers and
grammars that enforce it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import Field, create_model
from pydantic.fields import FieldInfo

import arq

__all__ = ["ClassificationWithEvidence", "for_labels"]

Evidence = Annotated[str, Field(max_length=200), arq.verbatim_in("text")]


class ClassificationWithEvidence(arq.Reasoning):
    """Label the text with one of the given labels, backed by words quoted from the text.

    First quote the words of the text that decide the label, copied exactly. Then say what
    they show, give the label, and say how confident you are.
    """

    evidence: list[Evidence] = arq.query(
        "Which words of the text decide its label?",
        instruction="Copy each quote word for word from the text. Give at least one.",
        min_length=1,
        max_length=4,
    )
    reading: str = arq.query(
        "What do these quotes show about the label?", max_length=200, max_chunks=50
    )
    label: Annotated[str, arq.one_of("labels")] = arq.answer(
        "The label.", instruction="Use exactly one of the labels given."
    )
    confidence: Literal["low", "medium", "high"] = arq.answer(
        "How sure is the label, given the evidence?"
    )


def _label_id(label: Any) -> str:
    return str(label["id"]) if isinstance(label, Mapping) else str(label)


def for_labels(labels: Sequence[Any]) -> type[ClassificationWithEvidence]:
    """`ClassificationWithEvidence` with the label narrowed to an enum of these labels.

    `labels` is the same list the run's context carries under "labels".
    """
    ids = tuple(_label_id(label) for label in labels)
    if not ids:
        raise arq.SchemaError("for_labels: no labels given")
    info = ClassificationWithEvidence.model_fields["label"]
    enum = cast(Any, Literal.__getitem__(ids))
    fields: dict[str, Any] = {"label": (enum, FieldInfo.merge_field_infos(info))}
    return create_model(
        "ClassificationWithEvidence",
        __base__=ClassificationWithEvidence,
        __module__=__name__,
        __doc__=ClassificationWithEvidence.__doc__,
        **fields,
    )
