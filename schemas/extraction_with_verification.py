"""Extraction with verification: extract each field with its quote, verify, then the record.

For pulling named fields out of a document (an invoice, an email, a form) when a wrong
value costs more than a missing one. For each field the model quotes the words of the
text that give it and takes the value from that quote; then it re-states each value and
says whether it appears in its quote; then it writes the final record, keeping only the
values that do. Quotes are checked against the text, the verification is checked against
the extraction (the value must really occur in its quote), and the record against both.

Context keys:
    text: the document to extract from.
    fields: the fields to extract: a list of names, or of {"id", "description"} mappings.

`ExtractionWithVerification` checks the field names against the context's fields.
`for_fields(fields)` narrows all three lists to those fields with `arq.checklist`: names
become an enum and the prompt lists one entry per field with its name filled in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, cast

from pydantic import BaseModel, Field, model_validator

import arq

__all__ = [
    "ExtractedField",
    "ExtractionWithVerification",
    "FieldVerification",
    "RecordEntry",
    "for_fields",
]

Quote = Annotated[str, Field(max_length=300), arq.verbatim_in("text")]
Value = Annotated[str, Field(max_length=200)]


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _in_quote(value: str | None, quote: str | None) -> bool:
    """Does the value occur, word for word, in its quote (case and spacing aside)?"""
    if value is None or quote is None or not value.strip():
        return False
    return _normal(value) in _normal(quote)


class ExtractedField(BaseModel):
    """One field, with the words of the text that give it."""

    name: str = Field(description="The field's name.")
    quote: Quote | None = Field(
        description="The words of the text that give this field, copied exactly; "
        "null if the text does not give it."
    )
    value: Value | None = Field(
        description="The field's value, as written in the quote; null if there is no quote."
    )

    @model_validator(mode="after")
    def value_with_quote(self) -> ExtractedField:
        if (self.quote is None) != (self.value is None):
            raise ValueError(f"{self.name}: give both a quote and a value, or neither")
        return self


class FieldVerification(BaseModel):
    """One extracted value, re-stated and checked against its quote."""

    name: str = Field(description="The field's name.")
    value: Value | None = Field(description="The extracted value, re-stated exactly.")
    in_quote: bool = Field(
        description="Does this value appear word for word in its quote? false if it is null."
    )


class RecordEntry(BaseModel):
    """One field of the final record."""

    name: str = Field(description="The field's name.")
    value: Value | None = Field(
        description="The value, if it appears in its quote; otherwise null."
    )


def _by_name(entries: Sequence[Any]) -> dict[str, Any]:
    return {entry.name: entry for entry in entries}


class ExtractionWithVerification(arq.Reasoning):
    """Extract the requested fields from the text, verify each value, then give the record.

    For each field, copy the words of the text that give it, and take its value from those
    words as they are written. Then re-state each value and check that it appears in its
    quote. Last, give the record: the verified values, and null for every field that was
    not found or did not verify.
    """

    extracted: Annotated[list[ExtractedField], arq.covers("fields", id_field="name")] = arq.query(
        "For each field: which words of the text give it, and what is its value?",
        instruction=(
            "Give every field exactly once. Copy the quote word for word from the text and "
            "the value as written in the quote; null for both if the text does not say."
        ),
    )
    verification: Annotated[list[FieldVerification], arq.covers("fields", id_field="name")] = (
        arq.query(
            "For each field: re-state its value. Does it appear word for word in its quote?",
            instruction="Check every field exactly once, in the same order.",
        )
    )
    record: Annotated[list[RecordEntry], arq.covers("fields", id_field="name")] = arq.answer(
        "The final record: each field with its verified value.",
        instruction="Keep a value only if it appears in its quote; otherwise write null.",
    )

    @arq.check("extracted", "verification")
    def verified_against_the_quote(
        extracted: list[ExtractedField], verification: list[FieldVerification]
    ) -> None:
        found = _by_name(extracted)
        for check in verification:
            source = found[check.name]
            if check.value != source.value:
                exact = json.dumps(source.value)
                raise ValueError(f"{check.name}: re-state the extracted value exactly: {exact}")
            truth = _in_quote(source.value, source.quote)
            if check.in_quote != truth:
                where = "appears" if truth else "does not appear"
                raise ValueError(
                    f"{check.name}: {source.value!r} {where} in its quote {source.quote!r}"
                )

    @arq.check("extracted", "record")
    def record_keeps_verified_values(
        extracted: list[ExtractedField], record: list[RecordEntry]
    ) -> None:
        found = _by_name(extracted)
        for entry in record:
            source = found[entry.name]
            expected = source.value if _in_quote(source.value, source.quote) else None
            if entry.value != expected:
                raise ValueError(
                    f"{entry.name}: the record must hold {json.dumps(expected)}: the extracted "
                    f"value if it appears in its quote, null otherwise"
                )


def _field_item(field: Any) -> tuple[str, str]:
    if isinstance(field, Mapping):
        return str(field["id"]), str(field.get("description") or "")
    return str(field), ""


def for_fields(fields: Sequence[Any]) -> type[ExtractionWithVerification]:
    """`ExtractionWithVerification` narrowed to these fields, one entry per field per list.

    `fields` is the same list the run's context carries under "fields".
    """
    items = [_field_item(field) for field in fields]
    schema: type[arq.Reasoning] = ExtractionWithVerification
    for step in ("extracted", "verification", "record"):
        schema = arq.checklist(schema, step, items, id_field="name")
    return cast(type[ExtractionWithVerification], schema)
