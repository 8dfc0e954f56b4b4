"""Prompt building: sections, templates and their errors, injection safety, the skeleton."""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, create_model

from arq.errors import TemplateError
from arq.jsonschema import json_schema
from arq.prompt import DEFAULT_SECTIONS, PromptBuilder, Section, render_skeleton
from arq.schema import Reasoning, answer, checklist, query


class GuidelineCheck(BaseModel):
    id: str = Field(description="Guideline id")
    applies: bool = Field(description="Does the guideline apply to this conversation?")
    note: str | None = Field(description="How the reply must honour it, if it applies")


class SupportReply(Reasoning):
    """Answer the customer's latest message while following the support guidelines."""

    request: str = query(
        "What exactly is the customer asking for?",
        instruction="Quote the customer's own words where you can.",
        max_length=300,
    )
    order_id: str | None = query("Which order is this about, if any?", default=None)
    guideline_checks: list[GuidelineCheck] = query(
        "Check every guideline against the conversation.",
        instruction="Check every guideline, even ones that seem irrelevant.",
    )
    urgency: int = query("How urgent is the request?", ge=1, le=5)
    decision: Literal["refund", "replace", "escalate", "answer"] = query(
        "What should we do?", instruction="Escalate whenever the customer mentions legal action."
    )
    reply: str = answer(
        "The reply to send to the customer.",
        instruction="Follow every guideline that applies; never promise delivery dates.",
        max_length=800,
    )


GUIDELINES = [
    ("greet", "Greet the customer by name."),
    {"id": "no-dates", "text": "Never promise delivery dates."},
    "refund-policy",
]
SupportChecklist = checklist(SupportReply, "guideline_checks", GUIDELINES)

CONTEXT: dict[str, Any] = {
    "conversation": [
        {"role": "user", "content": "Hi, my kettle from order A-1042 arrived broken."},
        {"role": "assistant", "content": "Sorry to hear that! Could you send a photo?"},
        {"role": "user", "content": "Sent. I want my money back."},
    ],
    "guidelines": [{"id": "greet", "text": "Greet the customer by name."}],
    "customer_name": "Dana",
}

EXAMPLE = {
    "reply": "Hi Dana, I have refunded order A-1042.",
    "decision": "refund",
    "urgency": 3,
    "guideline_checks": [{"id": "greet", "applies": True, "note": "Use her name."}],
    "order_id": "A-1042",
    "request": "I want my money back.",
}


def one_step(annotation: Any, question: str = "Q?", **kwargs: Any) -> type[Reasoning]:
    """A schema with a single answer step `x` of the given type."""
    return create_model("One", __base__=Reasoning, x=(annotation, answer(question, **kwargs)))


def step_lines(schema: type[Reasoning]) -> list[str]:
    """The skeleton without its outer braces."""
    lines = render_skeleton(schema).splitlines()
    assert (lines[0], lines[-1]) == ("{", "}")
    return lines[1:-1]


def tokens(text: str) -> int:
    """A tokenizer-free token estimate: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


# --- requests and snapshots --------------------------------------------------------------


def test_request_snapshot(snapshot: Any) -> None:
    request = PromptBuilder().build(SupportReply, CONTEXT, examples=[EXAMPLE])
    assert request.to_dict() == snapshot


def test_checklist_request_snapshot(snapshot: Any) -> None:
    request = PromptBuilder().build(SupportChecklist, CONTEXT)
    assert request.to_dict() == snapshot


def test_request_carries_schema_output_schema_and_metadata() -> None:
    request = PromptBuilder().build(SupportReply, CONTEXT)
    assert request.schema is SupportReply
    assert request.output_schema == json_schema(SupportReply, dialect="json-schema")
    assert request.metadata == {
        "schema": "SupportReply",
        "steps": ["request", "order_id", "guideline_checks", "urgency", "decision", "reply"],
        "sections": ["system", "output_format", "context"],
    }
    snapshot = request.to_dict()
    assert snapshot["schema"] == "SupportReply"
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_build_is_deterministic() -> None:
    builder = PromptBuilder()
    first = builder.build(SupportChecklist, CONTEXT, examples=[EXAMPLE]).to_dict()
    assert PromptBuilder().build(SupportChecklist, CONTEXT, examples=[EXAMPLE]).to_dict() == first
    assert builder.build(SupportChecklist, CONTEXT, examples=[EXAMPLE]).to_dict() == first


# --- sections and messages ---------------------------------------------------------------


def test_default_sections_merge_into_system_then_user() -> None:
    assert [s.name for s in PromptBuilder().sections] == [
        "system",
        "output_format",
        "examples",
        "context",
    ]
    request = PromptBuilder().build(SupportReply, CONTEXT)
    assert [m["role"] for m in request.messages] == ["system", "user"]
    system = request.messages[0]["content"]
    assert system.startswith(SupportReply.__doc__ or "-")
    assert system.index("exactly these keys") < system.index("\n\n## Output format\n")
    assert "request, order_id, guideline_checks, urgency, decision, reply." in system
    assert request.messages[1]["content"].startswith("## conversation\n")


def test_sections_with_the_same_role_join_with_a_blank_line() -> None:
    builder = PromptBuilder().add_section(Section("note", "Be brief.", "user"))
    user = builder.build(SupportReply, {"a": "x"}).messages[-1]
    assert user == {"role": "user", "content": "## a\nx\n\nBe brief."}


def test_reordered_roles_are_not_merged() -> None:
    builder = PromptBuilder().reorder(["system", "context", "output_format", "examples"])
    request = builder.build(SupportReply, CONTEXT)
    assert [m["role"] for m in request.messages] == ["system", "user", "system"]
    assert request.messages[2]["content"].startswith("## Output format")


def test_empty_sections_are_dropped() -> None:
    builder = PromptBuilder().add_section(Section("blank", "{# nothing #}\n  \n", "user"))
    request = builder.build(SupportReply, {"a": "x"}, examples=[])
    assert request.metadata["sections"] == ["system", "output_format", "context"]
    assert request.messages[-1]["content"] == "## a\nx"


def test_examples_section_renders_examples_in_step_order() -> None:
    request = PromptBuilder().build(SupportReply, CONTEXT, examples=[EXAMPLE, EXAMPLE])
    system = request.messages[0]["content"]
    assert request.metadata["sections"] == ["system", "output_format", "examples", "context"]
    assert "## Examples\nExample 1:\n{" in system
    assert "\n\nExample 2:\n{" in system
    first = system.split("Example 1:\n")[1].split("\n\nExample 2:")[0]
    assert list(json.loads(first)) == list(SupportReply.model_fields)


def test_model_examples_render_as_json() -> None:
    instance = SupportReply.model_validate(EXAMPLE)
    system = PromptBuilder().build(SupportReply, examples=[instance]).messages[0]["content"]
    rendered = json.loads(system.split("Example 1:\n")[1])
    assert rendered == instance.model_dump(mode="json")


@pytest.mark.parametrize(
    ("example", "problem"),
    [
        ({**EXAMPLE, "mood": "calm"}, "unknown: mood"),
        ({k: v for k, v in EXAMPLE.items() if k != "urgency"}, "missing: urgency"),
    ],
)
def test_examples_must_have_exactly_the_steps(example: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PromptBuilder().build(SupportReply, examples=[example])


def test_add_section_before_and_after() -> None:
    base = PromptBuilder()
    first = Section("first", "First.", "system")
    last = Section("last", "Last.", "user")
    builder = base.add_section(first, before="system").add_section(last, after="context")
    names = [s.name for s in builder.sections]
    assert names == ["first", "system", "output_format", "examples", "context", "last"]
    middle = base.add_section(Section("mid", "Mid.", "system"), after="system")
    assert [s.name for s in middle.sections][:3] == ["system", "mid", "output_format"]
    assert base.sections == DEFAULT_SECTIONS  # the original builder is unchanged


def test_replace_and_remove_sections() -> None:
    builder = (
        PromptBuilder()
        .replace_section("system", Section("task", "Task: {{ task }}", "system"))
        .remove_section("output_format")
    )
    assert [s.name for s in builder.sections] == ["task", "examples", "context"]
    system = builder.build(SupportReply, CONTEXT).messages[0]["content"]
    assert system == f"Task: {SupportReply.__doc__}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.remove_section("nope"), "no section 'nope'; sections are system"),
        (lambda b: b.replace_section("nope", Section("x", "x", "user")), "no section 'nope'"),
        (lambda b: b.add_section(Section("x", "x", "user"), before="nope"), "no section"),
        (
            lambda b: b.add_section(Section("x", "x", "user"), before="system", after="context"),
            "not both",
        ),
        (lambda b: b.add_section(Section("system", "x", "user")), "unique: system"),
        (lambda b: b.reorder(["system", "context"]), "give each section once"),
        (lambda b: b.reorder([*[s.name for s in b.sections], "extra"]), "each section once"),
    ],
)
def test_section_edit_errors(edit: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        edit(PromptBuilder())


def test_section_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role must be"):
        Section("x", "x", "assistant")  # type: ignore[arg-type]


# --- templates ---------------------------------------------------------------------------


def test_templates_override_package_templates() -> None:
    builder = PromptBuilder(templates={"system.jinja": "Task of {{ schema_name }}: {{ task }}"})
    system = builder.build(SupportReply).messages[0]["content"]
    assert system.startswith(f"Task of SupportReply: {SupportReply.__doc__}\n\n## Output format")


def test_template_dir_overrides_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "context.jinja").write_text("Order: {{ context.order }}\n")
    (tmp_path / "system.jinja").write_text("From dir.\n")
    builder = PromptBuilder(template_dir=tmp_path, templates={"system.jinja": "From mapping."})
    request = builder.build(SupportReply, {"order": "A-1"})
    assert request.messages[-1]["content"] == "Order: A-1"
    assert request.messages[0]["content"].startswith("From mapping.\n\n")


def test_user_section_can_name_a_template_file(tmp_path: Path) -> None:
    (tmp_path / "policy.jinja").write_text("{{ steps | length }} steps for {{ schema_name }}")
    builder = PromptBuilder(template_dir=tmp_path).add_section(
        Section("policy", "policy.jinja", "system"), after="system"
    )
    system = builder.build(SupportReply).messages[0]["content"]
    assert "\n\n6 steps for SupportReply\n\n## Output format" in system


def test_compiled_templates_are_cached(tmp_path: Path) -> None:
    path = tmp_path / "system.jinja"
    path.write_text("Cached.")
    builder = PromptBuilder(template_dir=tmp_path)
    assert builder.build(SupportReply).messages[0]["content"].startswith("Cached.")
    path.unlink()  # a second build must not read the file again
    derived = builder.add_section(Section("x", "X.", "user"))
    assert derived.build(SupportReply).messages[0]["content"].startswith("Cached.")


def test_template_dir_errors_give_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "context.jinja").write_text("ok\n\n{{ context.missing }}\n")
    builder = PromptBuilder(template_dir=tmp_path)
    with pytest.raises(TemplateError, match=r"'context\.jinja', line 3: undefined variable"):
        builder.build(SupportReply, {"present": 1})


def test_user_templates_can_format_context_values() -> None:
    source = "{{ context.conversation | as_text }}\n{{ context.order | as_text }}"
    builder = PromptBuilder().add_section(Section("chat", source, "user"))
    context = {"conversation": CONTEXT["conversation"][:1], "order": {"id": "A-1"}}
    user = builder.build(SupportReply, context).messages[-1]["content"]
    assert user.endswith(
        '\n\nuser: Hi, my kettle from order A-1042 arrived broken.\n{\n  "id": "A-1"\n}'
    )


def test_unknown_template_name() -> None:
    builder = PromptBuilder(sections=[Section("a", "absent.jinja", "system")])
    with pytest.raises(TemplateError, match=r"'absent\.jinja' not found") as info:
        builder.build(SupportReply)
    assert info.value.template == "absent.jinja"


@pytest.mark.parametrize(
    ("source", "variable"),
    [
        ("Hello\n{{ customer }}", "'customer' is undefined"),
        ("{{ context.order_id }}", "has no attribute 'order_id'"),
    ],
)
def test_missing_variable_names_template_and_variable(source: str, variable: str) -> None:
    builder = PromptBuilder(templates={"system.jinja": source})
    with pytest.raises(TemplateError, match=r"template 'system\.jinja'") as info:
        builder.build(SupportReply, {"order": "A-1"})
    assert variable in str(info.value)
    assert info.value.template == "system.jinja"


def test_missing_variable_in_inline_section_gives_line() -> None:
    builder = PromptBuilder().add_section(Section("greet", "Hi\nthere {{ name }}", "user"))
    with pytest.raises(TemplateError, match=r"'<section greet>', line 2: .*'name' is undefined"):
        builder.build(SupportReply)


@pytest.mark.parametrize("source", ["a\n{% for x in %}", "a\n{{ oops", "a\n{% endif %}"])
def test_syntax_error_names_template_and_line(source: str) -> None:
    builder = PromptBuilder(templates={"context.jinja": source})
    with pytest.raises(TemplateError, match=r"'context.jinja', line 2: syntax error"):
        builder.build(SupportReply)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ steps[0].field.__class__.__init__.__globals__ }}",
        "{{ context.__class__ }}",
        "{{ schema_name.format.__globals__ }}",
    ],
)
def test_sandbox_blocks_unsafe_access_in_user_templates(source: str) -> None:
    builder = PromptBuilder().add_section(Section("evil", source, "user"))
    with pytest.raises(TemplateError, match="blocked by the sandbox"):
        builder.build(SupportReply, {"a": 1})


# --- context -----------------------------------------------------------------------------

PAYLOADS = ["{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{# hidden #}", "{{ nope }}"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_context_values_and_keys_are_never_template_source(payload: str) -> None:
    context = {
        "note": payload,
        payload: "key",
        "nested": {"list": [payload], payload: {"deeper": payload}},
        "conversation": [{"role": "user", "content": payload}],
    }
    user = PromptBuilder().build(SupportReply, context).messages[-1]["content"]
    assert f"## note\n{payload}\n" in user
    assert f"## {payload}\nkey\n" in user
    assert user.count(payload) == 6  # note, key, 3 nested (one as a key), conversation
    assert f"user: {payload}" in user
    assert "49" not in user


@pytest.mark.parametrize("payload", PAYLOADS)
def test_context_values_are_data_in_user_templates(payload: str) -> None:
    builder = PromptBuilder().add_section(Section("echo", "[{{ context.note }}]", "user"))
    user = builder.build(SupportReply, {"note": payload}).messages[-1]["content"]
    assert user.endswith(f"\n\n[{payload}]")


class Order(BaseModel):
    id: str
    total: float


def test_context_value_rendering() -> None:
    context: dict[str, Any] = {
        "text": "line one\nline two",
        "count": 3,
        "flag": False,
        "tags": ["a", "b"],
        "order": Order(id="A-1", total=9.5),
        "orders": {"open": [Order(id="A-2", total=1.0)]},
        "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    }
    user = PromptBuilder().build(SupportReply, context).messages[-1]["content"]
    blocks = dict(block.split("\n", 1) for block in user.split("\n\n"))
    assert blocks == {
        "## text": "line one\nline two",
        "## count": "3",
        "## flag": "false",
        "## tags": '[\n  "a",\n  "b"\n]',
        "## order": '{\n  "id": "A-1",\n  "total": 9.5\n}',
        "## orders": json.dumps({"open": [{"id": "A-2", "total": 1.0}]}, indent=2),
        "## conversation": "user: hi\nassistant: yo",
    }


@pytest.mark.parametrize("context", [None, {}])
def test_empty_context_says_so(context: dict[str, Any] | None) -> None:
    request = PromptBuilder().build(SupportReply, context)
    assert request.messages[-1] == {"role": "user", "content": "No context was given."}


# --- the output-format skeleton ----------------------------------------------------------


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    city: str = Field(description="Which city?")
    zip_code: str


@pytest.mark.parametrize(
    ("annotation", "kwargs", "line"),
    [
        (str, {}, '"x": "<Q?>"'),
        (str, {"max_length": 200}, '"x": "<Q? (at most 200 characters)>"'),
        (
            str,
            {"min_length": 2, "pattern": "^[A-Z]+$"},
            '"x": "<Q? (at least 2 characters, matching ^[A-Z]+$)>"',
        ),
        (int, {}, '"x": <integer: Q?>'),
        (int, {"ge": 0}, '"x": <integer >= 0: Q?>'),
        (float, {"ge": 0, "le": 1}, '"x": <number 0 to 1: Q?>'),
        (float, {"gt": 0, "multiple_of": 0.5}, '"x": <number > 0, multiple of 0.5: Q?>'),
        (bool, {}, '"x": <true or false: Q?>'),
        (Literal["a", "b"], {}, '"x": <one of "a", "b": Q?>'),
        (Color, {}, '"x": <one of "red", "green": Q?>'),
        (int | None, {"default": None}, '"x": <integer: Q?> or null'),
        (Literal["a"] | None, {}, '"x": <one of "a": Q?> or null'),
        (list[str], {}, '"x": ["<Q?>", ...]'),
        (list[int], {"max_length": 3}, '"x": [<integer: Q?>, ... (at most 3 items)]'),
        (dict[str, int], {}, '"x": {"<key>": <integer: Q?>, ...}'),
        (dict[str, list[str]], {}, '"x": {"<key>": ["<Q?>", ...], ...}'),
    ],
)
def test_skeleton_scalar_types(annotation: Any, kwargs: dict[str, Any], line: str) -> None:
    assert step_lines(one_step(annotation, **kwargs)) == [f"  {line}"]


def test_skeleton_nested_model_uses_descriptions_or_names() -> None:
    assert step_lines(one_step(Address, "Where to ship?")) == [
        '  "x": {  // Where to ship?',
        '    "city": "<Which city?>",',
        '    "zip_code": "<zip_code>"',
        "  }",
    ]


def test_skeleton_list_of_models() -> None:
    assert step_lines(one_step(list[Address], "Which addresses?", max_length=2)) == [
        '  "x": [  // Which addresses?',
        "    {",
        '      "city": "<Which city?>",',
        '      "zip_code": "<zip_code>"',
        "    },",
        "    ... (at most 2 items)",
        "  ]",
    ]


def test_skeleton_recursive_model_terminates() -> None:
    class Node(BaseModel):
        name: str = Field(description="Name?")
        children: list[Node] = Field(description="Children?")

    assert step_lines(one_step(Node, "Tree?")) == [
        '  "x": {  // Tree?',
        '    "name": "<Name?>",',
        '    "children": [<Node object as above: Children?>, ...]',
        "  }",
    ]


def test_skeleton_restates_instructions_beside_their_question() -> None:
    lines = step_lines(SupportReply)
    assert lines[0] == (
        '  "request": "<What exactly is the customer asking for? (at most 300 characters)>",'
        "  // Quote the customer's own words where you can."
    )
    assert lines[1] == '  "order_id": "<Which order is this about, if any?>" or null,'
    assert lines[2] == (
        '  "guideline_checks": [  // Check every guideline against the conversation.'
        " Check every guideline, even ones that seem irrelevant."
    )
    assert lines[-1].endswith(
        "  // Follow every guideline that applies; never promise delivery dates."
    )


def test_skeleton_states_token_budgets() -> None:
    schema = one_step(str, max_chunks=50)
    assert step_lines(schema) == ['  "x": "<Q?>"  // At most about 50 tokens.']


def test_checklist_skeleton_prefills_ids() -> None:
    lines = step_lines(SupportChecklist)
    start = lines.index(
        '  "guideline_checks": [  // Check every guideline against the conversation.'
        " Check every guideline, even ones that seem irrelevant."
    )
    assert lines[start + 1 : start + 5] == [
        '    {"id": "greet", "applies": <true or false: Does the guideline apply to this'
        ' conversation?>, "note": "<How the reply must honour it, if it applies>" or null},'
        "  // Greet the customer by name.",
        '    {"id": "no-dates", "applies": <true or false>, "note": "<text>" or null},'
        "  // Never promise delivery dates.",
        '    {"id": "refund-policy", "applies": <true or false>, "note": "<text>" or null}',
        "  ],",
    ]


@pytest.mark.parametrize("schema", [SupportReply, SupportChecklist])
def test_output_format_is_much_smaller_than_the_json_schema(schema: type[Reasoning]) -> None:
    output_format = PromptBuilder().render_output_format(schema)
    pasted = json.dumps(json_schema(schema))
    assert tokens(output_format) < 0.7 * tokens(pasted)
    assert len(output_format) < 0.8 * len(pasted)


def test_render_output_format_matches_the_built_section() -> None:
    builder = PromptBuilder()
    output_format = builder.render_output_format(SupportReply)
    assert output_format.startswith("## Output format\n")
    assert output_format.endswith(render_skeleton(SupportReply))
    assert f"\n\n{output_format}" in builder.build(SupportReply).messages[0]["content"]
    bare = builder.remove_section("output_format").render_output_format(SupportReply)
    assert bare == render_skeleton(SupportReply)


def test_schema_without_docstring_has_no_task_line() -> None:
    schema = one_step(str)
    system = PromptBuilder().build(schema).messages[0]["content"]
    assert system.startswith("Think the task through")
