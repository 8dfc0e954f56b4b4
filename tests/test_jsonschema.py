"""JSON Schema export (plain and OpenAI strict) and its portability lint."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from enum import Enum
from typing import Any, Literal, cast

import pytest
from pydantic import AnyUrl, BaseModel, Field, create_model

from arq.errors import SchemaError
from arq.jsonschema import Dialect, Finding, json_schema, lint
from arq.schema import Reasoning, answer, checklist, query

DIALECTS: tuple[Dialect, ...] = ("openai-strict", "json-schema")


class Source(BaseModel):
    """Where a claim comes from."""

    quote: str = Field(description="The exact words.")
    page: int | None = Field(None, description="The page, if known.")


class Check(BaseModel):
    id: str = Field(description="The guideline id.")
    applies: bool = Field(description="Does it apply here?")
    decision: Literal["follow", "skip"] = Field(description="Follow it or skip it?")


class Ordered(Reasoning):
    """Think it through in order."""

    zulu: str = query("What is asked?", instruction="Be brief.")
    alpha: list[Check] = query("Which guidelines apply?")
    mike: Source = query("Where is it written?")
    bravo: str | None = query("Anything to add?", default=None)
    answer: str = answer("The reply.")


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every subschema of a schema, the node itself included (never enum/default data)."""
    yield node
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _nodes(node[key])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for child in node.get(key, ()):
            yield from _nodes(child)
    for key in ("properties", "$defs"):
        for child in node.get(key, {}).values():
            yield from _nodes(child)


def _codes(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.code, f.path) for f in findings]


# --- order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_properties_follow_step_order(dialect: Dialect) -> None:
    doc = json_schema(Ordered, dialect)
    assert list(doc["properties"]) == ["zulu", "alpha", "mike", "bravo", "answer"]


def test_required_follows_step_order() -> None:
    assert json_schema(Ordered)["required"] == ["zulu", "alpha", "mike", "bravo", "answer"]
    plain = json_schema(Ordered, "json-schema")
    assert plain["required"] == ["zulu", "alpha", "mike", "answer"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_list_of_models_refers_to_a_definition_in_field_order(dialect: Dialect) -> None:
    doc = json_schema(Ordered, dialect)
    assert doc["properties"]["alpha"] == {
        "description": "Which guidelines apply?",
        "items": {"$ref": "#/$defs/Check"},
        "type": "array",
    }
    check = doc["$defs"]["Check"]
    assert list(check["properties"]) == ["id", "applies", "decision"]
    assert check["required"] == ["id", "applies", "decision"]
    assert list(doc)[-1] == "$defs"


def test_plain_dialect_keeps_defs_and_ref_descriptions() -> None:
    doc = json_schema(Ordered, "json-schema")
    assert doc["properties"]["mike"] == {
        "$ref": "#/$defs/Source",
        "description": "Where is it written?",
    }
    assert list(doc["$defs"]) == ["Check", "Source"]
    source = doc["$defs"]["Source"]
    assert list(source["properties"]) == ["quote", "page"]
    assert source["required"] == ["quote"]
    assert source["properties"]["page"]["default"] is None
    assert "additionalProperties" not in source  # plain JSON Schema: as Pydantic says


def test_strict_inlines_a_ref_that_carries_the_question() -> None:
    doc = json_schema(Ordered)
    mike = doc["properties"]["mike"]
    assert mike["description"] == "Where is it written?"  # the step's, not the docstring
    assert mike["type"] == "object"
    assert list(mike["properties"]) == ["quote", "page"]
    assert mike["required"] == ["quote", "page"]
    for node in _nodes(doc):
        if "$ref" in node:
            assert list(node) == ["$ref"]


# --- strict rules --------------------------------------------------------------------------


def test_strict_optional_becomes_required_and_nullable() -> None:
    doc = json_schema(Ordered)
    assert doc["properties"]["bravo"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "Anything to add?",
    }
    page = doc["properties"]["mike"]["properties"]["page"]
    assert page == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "description": "The page, if known.",
    }
    assert not [node for node in _nodes(doc) if "default" in node]


def test_strict_default_without_null_stays_required_and_not_nullable() -> None:
    class Tone(Reasoning):
        tone: str = query("Which tone?", default="formal")
        answer: str = answer("The reply.")

    doc = json_schema(Tone)
    assert doc["required"] == ["tone", "answer"]
    assert doc["properties"]["tone"] == {"description": "Which tone?", "type": "string"}
    assert ("strict-optional-not-nullable", "tone") in _codes(lint(Tone))


@pytest.mark.parametrize("schema_name", ["Ordered", "SupportReply", "Outline", "Tree"])
def test_strict_closes_every_object_and_requires_every_property(schema_name: str) -> None:
    doc = json_schema(SCHEMAS[schema_name])
    objects = [node for node in _nodes(doc) if node.get("type") == "object"]
    assert objects
    for node in objects:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])


def test_strict_root_is_an_object_not_a_union_or_ref() -> None:
    for schema in SCHEMAS.values():
        doc = json_schema(schema)
        assert doc["type"] == "object"
        assert "anyOf" not in doc
        assert "$ref" not in doc


def test_strict_turns_a_discriminated_union_into_any_of() -> None:
    class Refund(BaseModel):
        kind: Literal["refund"] = Field(description="Kind.")
        amount: float = Field(description="How much?")

    class Replace(BaseModel):
        kind: Literal["replace"] = Field(description="Kind.")
        item: str = Field(description="Which item?")

    class Remedy(Reasoning):
        remedy: Refund | Replace = Field(discriminator="kind", description="Which remedy?")
        answer: str = answer("The reply.")

    plain = json_schema(Remedy, "json-schema")["properties"]["remedy"]
    assert "oneOf" in plain
    strict = json_schema(Remedy)["properties"]["remedy"]
    assert strict == {
        "anyOf": [{"$ref": "#/$defs/Refund"}, {"$ref": "#/$defs/Replace"}],
        "description": "Which remedy?",
    }


# --- descriptions ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_descriptions_carry_question_and_instruction(dialect: Dialect) -> None:
    doc = json_schema(Ordered, dialect)
    assert doc["description"] == "Think it through in order."
    assert doc["properties"]["zulu"]["description"] == "What is asked? Instruction: Be brief."
    assert doc["properties"]["answer"]["description"] == "The reply."


def test_no_docstring_means_no_root_description() -> None:
    class Bare(Reasoning):
        answer: str = answer("The reply.")

    assert "description" not in json_schema(Bare)
    assert "description" not in json_schema(Bare, "json-schema")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_titles_are_dropped_but_a_field_named_title_stays(dialect: Dialect) -> None:
    class Article(Reasoning):
        title: str = query("What is the title?")
        sources: list[Source] = query("Which sources?")
        answer: str = answer("The summary.")

    doc = json_schema(Article, dialect)
    assert list(doc["properties"]) == ["title", "sources", "answer"]
    assert not [node for node in _nodes(doc) if "title" in node]


# --- types -----------------------------------------------------------------------------------


class Priority(str, Enum):
    LOW = "low"
    HIGH = "high"


class Triage(Reasoning):
    priority: Priority = query("How urgent?")
    decision: Literal["reply", "escalate"] = answer("Reply or escalate?")
    channel: Literal["email"] = answer("Which channel?")


def test_literal_and_enum_in_plain_dialect() -> None:
    doc = json_schema(Triage, "json-schema")
    assert doc["properties"]["priority"] == {
        "$ref": "#/$defs/Priority",
        "description": "How urgent?",
    }
    assert doc["$defs"]["Priority"] == {"enum": ["low", "high"], "type": "string"}
    assert doc["properties"]["decision"]["enum"] == ["reply", "escalate"]


def test_literal_and_enum_in_strict_dialect() -> None:
    props = json_schema(Triage)["properties"]
    assert props["priority"] == {
        "enum": ["low", "high"],
        "type": "string",
        "description": "How urgent?",
    }
    assert props["decision"] == {
        "description": "Reply or escalate?",
        "enum": ["reply", "escalate"],
        "type": "string",
    }
    assert props["channel"] == {"const": "email", "description": "Which channel?", "type": "string"}


class Tree(Reasoning):
    """A node of a plan."""

    label: str = query("What is this step?")
    children: list[Tree] = answer("Which sub-steps?")


class Section(BaseModel):
    heading: str = Field(description="The heading.")
    subsections: list[Section] = Field(description="Its subsections.")


class Outline(Reasoning):
    sections: list[Section] = answer("The sections.")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_recursive_root_refers_to_the_root(dialect: Dialect) -> None:
    doc = json_schema(Tree, dialect)
    assert doc["type"] == "object"
    assert doc["description"] == "A node of a plan."
    assert doc["properties"]["children"]["items"] == {"$ref": "#"}
    assert "$defs" not in doc
    assert "$ref" not in doc


@pytest.mark.parametrize("dialect", DIALECTS)
def test_recursive_definition_refers_to_itself(dialect: Dialect) -> None:
    section = json_schema(Outline, dialect)["$defs"]["Section"]
    assert section["properties"]["subsections"]["items"] == {"$ref": "#/$defs/Section"}


def test_strict_inlining_stops_at_a_definition_inside_itself() -> None:
    class Loop(BaseModel):
        label: str = Field(description="The label.")
        inner: Loop | None = Field(description="The inner loop.")
        again: Loop = Field(description="Required self-reference, described.")

    class Looped(Reasoning):
        loop: Loop = answer("The loop.")

    loop = json_schema(Looped)["properties"]["loop"]
    assert loop["description"] == "The loop."
    assert loop["properties"]["again"] == {"$ref": "#/$defs/Loop"}
    assert loop["properties"]["inner"]["anyOf"] == [{"$ref": "#/$defs/Loop"}, {"type": "null"}]


class Guideline(BaseModel):
    id: str = Field(description="The guideline id.")
    compliant: bool = Field(description="Is the draft compliant?")


class Guided(Reasoning):
    checks: list[Guideline] = query("For each guideline: is the draft compliant?")
    answer: str = answer("The reply.")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_checklist_schema_constrains_ids_to_an_enum(dialect: Dialect) -> None:
    narrowed = checklist(Guided, "checks", [("refunds", "..."), ("tone", "...")])
    doc = json_schema(narrowed, dialect)
    item = doc["$defs"][doc["properties"]["checks"]["items"]["$ref"].split("/")[-1]]
    assert item["properties"]["id"] == {
        "description": "The guideline id.",
        "enum": ["refunds", "tone"],
        "type": "string",
    }
    assert list(item["properties"]) == ["id", "compliant"]
    assert [f for f in lint(narrowed) if f.severity != "info"] == []


# --- copies and caching ----------------------------------------------------------------------


def test_does_not_mutate_pydantic_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fresh(Reasoning):
        source: Source = query("Where?")
        note: str | None = query("Note?", default=None)
        answer: str = answer("The reply.")

    shared = Fresh.model_json_schema()
    before = copy.deepcopy(shared)
    monkeypatch.setattr(Fresh, "model_json_schema", classmethod(lambda cls: shared))
    for dialect in DIALECTS:
        json_schema(Fresh, dialect)
    lint(Fresh)
    assert shared == before


def test_each_call_returns_a_fresh_copy() -> None:
    first = json_schema(Ordered)
    first["properties"]["zulu"]["description"] = "changed"
    first["required"].clear()
    again = json_schema(Ordered)
    assert again["properties"]["zulu"]["description"] == "What is asked? Instruction: Be brief."
    assert again["required"] == ["zulu", "alpha", "mike", "bravo", "answer"]
    findings = lint(Ordered)
    findings.clear()
    assert lint(Ordered)


def test_computed_once_per_class_and_dialect(monkeypatch: pytest.MonkeyPatch) -> None:
    class Counted(Reasoning):
        answer: str = answer("The reply.")

    real = Counted.model_json_schema
    calls: list[int] = []

    def counting(cls: type[Reasoning]) -> dict[str, Any]:
        calls.append(1)
        return real()

    monkeypatch.setattr(Counted, "model_json_schema", classmethod(counting))
    assert json_schema(Counted) == json_schema(Counted)
    assert len(calls) == 1
    json_schema(Counted, "json-schema")
    json_schema(Counted, "json-schema")
    assert len(calls) == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown dialect"):
        json_schema(Ordered, cast(Dialect, "gemini"))
    with pytest.raises(ValueError, match="unknown dialect"):
        lint(Ordered, dialect=cast(Dialect, "gemini"))
    with pytest.raises(SchemaError):
        json_schema(cast(type[Reasoning], Source))


# --- lint ------------------------------------------------------------------------------------


def test_clean_schema_has_only_infos() -> None:
    assert _codes(lint(Ordered)) == [
        ("strict-optional-nullable", "mike.page"),
        ("strict-optional-nullable", "bravo"),
        ("key-order", "$"),
    ]


def test_key_order_finding_is_always_there_once() -> None:
    for schema in SCHEMAS.values():
        for dialect in DIALECTS:
            found = [f for f in lint(schema, dialect=dialect) if f.code == "key-order"]
            assert len(found) == 1
            assert found[0].severity == "info"
            assert "propertyOrdering" in found[0].fix


def test_plain_dialect_lint_keeps_only_portability_findings() -> None:
    assert _codes(lint(Tree, dialect="json-schema")) == [
        ("recursive-schema", "children[]"),
        ("key-order", "$"),
    ]
    assert _codes(lint(Outline, dialect="json-schema")) == [
        ("recursive-schema", "sections[].subsections[]"),
        ("key-order", "$"),
    ]


class Loose(Reasoning):
    anything: Any = query("Anything?")
    counts: dict[str, int] = query("Counts per topic?")
    pair: tuple[int, str] = query("Which pair?")
    patterned: dict[str, str] = Field(
        description="Codes?", json_schema_extra={"patternProperties": {"^x": {"type": "string"}}}
    )
    both: str = Field(
        description="Both?",
        json_schema_extra={"allOf": [{"minLength": 1}, {"maxLength": 9}], "not": {"const": "x"}},
    )
    code: str = query("Which code?", min_length=3, examples=["abc"])
    tags: set[str] = query("Which tags?")
    link: AnyUrl = query("Which link?")
    day: date = query("Which day?")
    answer: str = answer("The reply.")


def test_lint_reports_what_strict_mode_rejects_or_ignores() -> None:
    found = lint(Loose)
    assert [f.severity for f in found] == sorted(
        (f.severity for f in found), key=["error", "warning", "info"].index
    )
    codes = _codes(found)
    errors = [
        ("strict-untyped", "anything"),
        ("strict-open-object", "counts"),
        ("strict-tuple", "pair"),
        ("strict-pattern-properties", "patterned"),
        ("strict-open-object", "patterned"),
        ("strict-all-of", "both"),
    ]
    assert [c for c in codes if c[0] in {e[0] for e in errors}] == errors
    warnings = [(f.code, f.path, f.message.split("`")[1]) for f in found if f.severity == "warning"]
    assert warnings == [
        ("strict-unsupported-keyword", "both", "not"),
        ("strict-unsupported-keyword", "code", "minLength"),
        ("strict-unsupported-keyword", "tags", "uniqueItems"),
        ("strict-unsupported-keyword", "link", "minLength"),
        ("strict-unsupported-format", "link", "uri"),
    ]
    assert ("strict-dropped-keyword", "code") in codes
    assert not [c for c in codes if c[1] == "day"]  # date is a supported format
    assert all(f.fix and f.message for f in found)


def test_strict_schema_leaves_out_what_lint_says_it_leaves_out() -> None:
    strict = json_schema(Loose)["properties"]
    plain = json_schema(Loose, "json-schema")["properties"]
    assert plain["code"]["minLength"] == 3
    assert plain["code"]["examples"] == ["abc"]
    assert strict["code"] == {"description": "Which code?", "type": "string"}
    assert plain["tags"]["uniqueItems"] is True
    assert "uniqueItems" not in strict["tags"]
    assert plain["link"]["format"] == "uri"
    assert "format" not in strict["link"]
    assert strict["day"]["format"] == "date"
    assert "not" in plain["both"]
    assert "not" not in strict["both"]
    # What cannot be left out without changing the shape stays, for the API to reject.
    assert "prefixItems" in strict["pair"]
    assert strict["counts"]["additionalProperties"] == {"type": "integer"}


def _with_ids(ids: list[str]) -> type[Reasoning]:
    return checklist(Guided, "checks", ids)


def test_lint_limit_on_enum_values() -> None:
    assert ("strict-too-many-enum-values", "$") in _codes(
        lint(_with_ids([f"g{i}" for i in range(1001)]))
    )
    assert "strict-too-many-enum-values" not in {
        f.code for f in lint(_with_ids([f"g{i}" for i in range(1000)]))
    }


def test_lint_limit_on_one_large_enum() -> None:
    long_ids = [f"{i:04d}".ljust(60, "x") for i in range(251)]  # 251 values, 15,060 chars
    assert _codes(lint(_with_ids(long_ids)))[0] == ("strict-enum-too-long", "checks[].id")
    fewer = lint(_with_ids(long_ids[:250]))  # 250 values: no length limit applies
    assert [f for f in fewer if f.severity == "error"] == []


def test_lint_limit_on_total_text() -> None:
    def choices(prefix: str) -> Any:
        return Literal.__getitem__(tuple(f"{prefix}{i:03d}".ljust(121, "x") for i in range(250)))

    fields: dict[str, Any] = {f"f{n}": (choices(f"{n}"), query(f"Q{n}?")) for n in range(4)}
    wide = create_model("Wide", __base__=Reasoning, answer=(str, answer("A.")), **fields)
    errors = [f for f in lint(wide) if f.severity == "error"]
    assert _codes(errors) == [("strict-too-much-text", "$")]  # 1,000 values of 121 chars
    assert "has 121014 characters" in errors[0].message


def test_lint_limit_on_properties() -> None:
    fields: dict[str, Any] = {f"s{i}": (str, query(f"Step {i}?")) for i in range(5000)}
    big = create_model("Big", __base__=Reasoning, answer=(str, answer("A.")), **fields)
    assert _codes(lint(big))[0] == ("strict-too-many-properties", "$")
    del fields["s0"]
    fits = create_model("Fits", __base__=Reasoning, answer=(str, answer("A.")), **fields)
    assert [f for f in lint(fits) if f.severity == "error"] == []


def _nested(levels: int) -> type[Reasoning]:
    """A schema whose objects nest `levels` deep, the root counting as one."""
    models: list[type[BaseModel]] = [create_model("L0", leaf=(str, Field(description="Leaf?")))]
    for n in range(1, levels - 1):
        models.append(create_model(f"L{n}", next=(models[-1], Field(description="Next?"))))
    return create_model("Deep", __base__=Reasoning, next=(models[-1], answer("Next?")))


def test_lint_limit_on_nesting_depth() -> None:
    assert [f for f in lint(_nested(10)) if f.severity == "error"] == []
    found = [f for f in lint(_nested(11)) if f.severity == "error"]
    assert _codes(found) == [("strict-too-deep", ".".join(["next"] * 10))]


# --- snapshot --------------------------------------------------------------------------------


class PolicyCheck(BaseModel):
    """One guideline, re-stated before it is decided."""

    id: str = Field(description="The guideline id.")
    condition: str = Field(description="When does this guideline apply?")
    applies: bool = Field(description="Does its condition hold now?")
    compliant: bool = Field(description="Would the draft reply follow it?")


class SupportReply(Reasoning):
    """Answer the customer while following the support guidelines."""

    request: str = query("What exactly is the customer asking for in the last message?")
    order_id: str | None = query(
        "Which order id does the customer give, quoted from the conversation?",
        instruction="Copy the id exactly; null if the customer gives none.",
        default=None,
    )
    applicable: list[str] = query("Which guideline ids apply to this request?")
    checks: list[PolicyCheck] = query(
        "For each applicable guideline: is the draft compliant?",
        instruction="Never promise a refund before the order status is known.",
    )
    decision: Literal["reply", "escalate"] = answer("Reply now, or escalate to a human?")
    answer: str = answer("The reply to send.", max_length=400, max_chunks=120)


SCHEMAS: dict[str, type[Reasoning]] = {
    "Ordered": Ordered,
    "SupportReply": SupportReply,
    "Outline": Outline,
    "Tree": Tree,
}


def test_support_reply_strict_schema(snapshot: Any) -> None:
    # JSON text, not the dict: the snapshot must show key order, which is the point.
    assert json.dumps(json_schema(SupportReply), indent=2) == snapshot


def test_support_reply_lint(snapshot: Any) -> None:
    assert [str(f) for f in lint(SupportReply)] == snapshot
