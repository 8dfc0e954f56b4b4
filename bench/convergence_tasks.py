"""A task family with N checkable steps, generated from a seed, for `bench/convergence.py`.

Each task is a record of N facts and a form to fill in from it, one step per fact, in the
record's order. Every step is held by a check that reads the record from the run's context:

- name ("Tenant: Maria Keller"): copied exactly from the record, whole words within one
  line (`arq.verbatim_in("record", normalize_whitespace=False, whole_words=True)`), and
  the one the record gives for that role;
- id ("Permit id: F-478"): one of the listed ids (`arq.one_of`), and the one the record
  gives;
- date ("Signed on: 2021/03/04" or "2021.03.04"): asked for in ISO form, 2021-03-04, one
  of the record's dates (`arq.date_in`), and the same day as the record's line;
- number ("Weight: between 26 and 43 kg"): any whole number inside the record's range.

Kinds come in equal shares, shuffled. Values are short and bounded (patterns sit inside
`Annotated`, so they reach the JSON Schema and hence a grammar): a 32-step answer is about
400 tokens of the embedded model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, create_model

import arq

__all__ = ["KINDS", "NS", "Fact", "Task", "make_task", "make_tasks", "record_values"]

Kind = Literal["name", "id", "date", "number"]
KINDS: tuple[Kind, ...] = ("name", "id", "date", "number")
NS = (2, 4, 8, 16, 32)

ROLES = (
    "buyer", "seller", "courier", "inspector", "auditor", "witness",
    "manager", "driver", "clerk", "notary", "tenant", "landlord",
)  # fmt: skip
ID_THINGS = (
    "warehouse", "depot", "account", "route", "invoice", "contract",
    "batch", "permit", "vehicle", "ticket", "parcel", "licence",
)  # fmt: skip
EVENTS = (
    "signed", "shipped", "delivered", "invoiced", "paid", "inspected",
    "renewed", "opened", "closed", "audited", "registered", "returned",
)  # fmt: skip
MEASURES = (
    ("weight", "kg"), ("length", "cm"), ("width", "cm"), ("height", "cm"),
    ("price", "euros"), ("volume", "litres"), ("distance", "km"), ("duration", "days"),
    ("capacity", "seats"), ("speed", "km/h"), ("pressure", "bar"), ("power", "kW"),
)  # fmt: skip
FIRST = (
    "Maria", "John", "Aiko", "Pierre", "Fatima", "Lars", "Chen", "Olga", "Diego", "Nina",
    "Samuel", "Priya", "Tomas", "Lea", "Omar", "Ingrid", "Rafael", "Yuki", "Anna", "Kofi",
)  # fmt: skip
LAST = (
    "Lopez", "Smith", "Tanaka", "Moreau", "Haddad", "Berg", "Wang", "Ivanova", "Ramos",
    "Keller", "Okafor", "Patel", "Novak", "Fischer", "Nasser", "Holm", "Costa", "Sato",
)  # fmt: skip
PER_KIND = 12  # labels of each kind: up to 48 steps
ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
ID_PATTERN = r"^[A-Z]-[0-9]{3}$"
NAME_PATTERN = r"^[A-Z][a-z]{1,10} [A-Z][a-z]{1,10}$"  # bounded: the grammar ends it

_LINE = re.compile(r"^(?P<label>[^:]+): (?P<text>.+)$")
_RANGE = re.compile(r"^between (\d+) and (\d+) ")


@dataclass(frozen=True)
class Fact:
    """One fact of a record and the step that asks for it.

    Attributes:
        key: The step name.
        kind: Which check holds the step.
        label: The record's label for the fact ("Tenant", "Signed on", ...).
        text: How the record writes the fact.
        truth: A correct answer.
    """

    key: str
    kind: Kind
    label: str
    text: str
    truth: str | int


@dataclass(frozen=True)
class Task:
    """A generated task: the schema to run, its context and the facts it was made from."""

    n: int
    seed: int
    facts: tuple[Fact, ...]
    schema: type[arq.Reasoning]
    context: dict[str, Any]

    @property
    def truth(self) -> dict[str, str | int]:
        """A correct answer, in step order."""
        return {fact.key: fact.truth for fact in self.facts}

    @property
    def kinds(self) -> dict[str, Kind]:
        """Each step's kind."""
        return {fact.key: fact.kind for fact in self.facts}


def record_values(record: str) -> dict[str, str]:
    """The record's facts by label."""
    found = (_LINE.match(line.strip()) for line in record.splitlines())
    return {m["label"]: m["text"] for m in found if m is not None}


def _record_text(info: ValidationInfo, label: str) -> str:
    context = info.context
    if not isinstance(context, Mapping) or "record" not in context:
        raise arq.ContextError("the form's checks need context={'record': ...}")
    return record_values(str(context["record"])).get(label, "")


def _same_text(label: str, what: str) -> AfterValidator:
    def validate(value: str, info: ValidationInfo) -> str:
        if value != _record_text(info, label):
            raise ValueError(f"that is not the {what} on the record's {label!r} line")
        return value

    return AfterValidator(validate)


def _same_date(label: str) -> AfterValidator:
    def validate(value: str, info: ValidationInfo) -> str:
        try:
            given = date.fromisoformat(value)
        except ValueError:
            raise ValueError("that is not a calendar date written as YYYY-MM-DD") from None
        year, month, day = re.split(r"[/.]", _record_text(info, label) or "0/0/0")
        if given != date(int(year), int(month), int(day)):
            raise ValueError(f"that is not the date on the record's {label!r} line")
        return value

    return AfterValidator(validate)


def _in_range(label: str) -> AfterValidator:
    def validate(value: int, info: ValidationInfo) -> int:
        found = _RANGE.match(_record_text(info, label))
        if found is None or not int(found[1]) <= value <= int(found[2]):
            raise ValueError(f"that is outside the range on the record's {label!r} line")
        return value

    return AfterValidator(validate)


def _code(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGHKLMNPRSTVW')}-{rng.randint(100, 999)}"


def _facts(n: int, rng: random.Random) -> list[Fact]:
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    labels = {kind: rng.sample(range(PER_KIND), PER_KIND) for kind in KINDS}
    names = rng.sample([f"{first} {last}" for first in FIRST for last in LAST], n)
    codes: list[str] = []
    while len(codes) < n:
        codes.extend(c for c in [_code(rng)] if c not in codes)
    facts = []
    for i, kind in enumerate(kinds):
        j = labels[kind].pop()
        if kind == "name":
            facts.append(Fact(ROLES[j], kind, ROLES[j].capitalize(), names[i], names[i]))
        elif kind == "id":
            key, label = f"{ID_THINGS[j]}_id", f"{ID_THINGS[j].capitalize()} id"
            facts.append(Fact(key, kind, label, codes[i], codes[i]))
        elif kind == "date":
            day = date(rng.randint(2015, 2024), rng.randint(1, 12), rng.randint(1, 28))
            text = f"{day.year}{{0}}{day.month:02d}{{0}}{day.day:02d}".format(rng.choice("/."))
            label = f"{EVENTS[j].capitalize()} on"
            facts.append(Fact(f"{EVENTS[j]}_on", kind, label, text, day.isoformat()))
        else:
            measure, unit = MEASURES[j]
            low = rng.randint(5, 80)
            high = low + rng.randint(5, 40)
            key = f"{measure}_{unit.replace('/', '_per_')}".lower()
            text = f"between {low} and {high} {unit}"
            facts.append(Fact(key, kind, measure.capitalize(), text, (low + high) // 2))
    return facts


def _step(fact: Fact, *, last: bool) -> tuple[Any, Any]:
    """The annotation and the step field of one fact (the last step is the answer step)."""
    step = arq.answer if last else arq.query
    if fact.kind == "name":
        same = _same_text(fact.label, "name")
        annotation: Any = Annotated[
            str,
            Field(pattern=NAME_PATTERN),
            arq.verbatim_in("record", normalize_whitespace=False, whole_words=True),
            same,
        ]
        return annotation, step(f"The {fact.key}'s name, copied from the record.", max_chunks=14)
    if fact.kind == "id":
        thing = fact.label.removesuffix(" id").lower()
        same = _same_text(fact.label, "id")
        annotation = Annotated[str, Field(pattern=ID_PATTERN), arq.one_of("ids"), same]
        return annotation, step(f"The {thing} id, one of the ids.", max_chunks=10)
    if fact.kind == "date":
        event = fact.label.removesuffix(" on").lower()
        annotation = Annotated[
            str, Field(pattern=ISO_DATE), arq.date_in("record"), _same_date(fact.label)
        ]
        return annotation, step(f"The date it was {event}, as YYYY-MM-DD.", max_chunks=16)
    measure, unit = fact.label.lower(), fact.text.rsplit(" ", 1)[-1]
    annotation = Annotated[int, Field(ge=0, le=999), _in_range(fact.label)]
    # the grammar holds it to three digits; the budget stays, as the prompt notes did: a
    # run without them was faster, and its repairs fixed fewer steps (convergence.md)
    return annotation, step(
        f"A number of {unit} inside the record's {measure} range.", max_chunks=8
    )


def make_task(n: int, seed: int) -> Task:
    """The task of `n` steps for `seed`: the same arguments always give the same task."""
    if not 1 <= n <= PER_KIND * len(KINDS):
        raise ValueError(f"a task has 1 to {PER_KIND * len(KINDS)} steps, not {n}")
    rng = random.Random(f"convergence-{n}-{seed}")
    facts = _facts(n, rng)
    ids = [f.text for f in facts if f.kind == "id"]
    while len(ids) < 2 * max(1, sum(f.kind == "id" for f in facts)):  # half are distractors
        ids.extend(c for c in [_code(rng)] if c not in ids)
    rng.shuffle(ids)
    fields: dict[str, Any] = {f.key: _step(f, last=i == n - 1) for i, f in enumerate(facts)}
    schema: type[arq.Reasoning] = create_model(
        f"Form{n}",
        __base__=arq.Reasoning,
        __doc__="Fill in the form from the record: copy or convert each value it gives.",
        __module__=__name__,
        **fields,
    )
    record = "\n".join(f"{fact.label}: {fact.text}" for fact in facts)
    return Task(n, seed, tuple(facts), schema, {"ids": ids, "record": record})


def make_tasks(n: int, count: int, *, first_seed: int = 0) -> list[Task]:
    """`count` tasks of `n` steps, with seeds `first_seed`, `first_seed + 1`, ..."""
    return [make_task(n, seed) for seed in range(first_seed, first_seed + count)]
