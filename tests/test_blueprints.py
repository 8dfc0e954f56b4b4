"""The stock blueprints in `arq.blueprints`: registered, lint-clean, rendered, and checked
against recorded outputs, good and bad, each bad one failing at the step it names.

The records are in `tests/blueprint_records/<module>.json`: the contexts of a blueprint and
outputs for them, each with what it shows (`why`) and the expected verdict (`"valid"`, or
the failing step and a part of the error). Most were written by hand to hit one check each;
those with a `source` were written by a small local model (a failing attempt holds the steps
up to the one that failed, where reading stopped).

The blueprints are imported as `arq.blueprints` (the folder `schemas/`, which
`arq/blueprints` links to), like any other module.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, UnionType
from typing import Annotated, Any, Union, cast, get_args, get_origin

import pytest
from pydantic import create_model

import arq
from arq.blueprints import BLUEPRINTS
from arq.schema import Reasoning, cross_checks

ROOT = Path(__file__).resolve().parents[1]
RECORDS = Path(__file__).with_name("blueprint_records")
DOC = ROOT / "docs" / "reference" / "blueprints.md"


@dataclass(frozen=True)
class Spec:
    """What the tests know of one blueprint."""

    module: str
    schema: str
    helper: str | None  # the function that narrows it to one context's items
    items: str | None  # the context key that helper takes its items from
    checked: tuple[str, ...]  # the context keys its checks read


SPECS = {
    "guideline-adherence": Spec(
        "guideline_adherence", "GuidelineAdherence", "for_guidelines", "guidelines", ("guidelines",)
    ),
    "tool-call-decision": Spec(
        "tool_call_decision", "ToolCallDecision", "for_tools", "tools", ("conversation", "tools")
    ),
    "grounded-answer": Spec("grounded_answer", "GroundedAnswer", None, None, ("documents",)),
    "classification-with-evidence": Spec(
        "classification_with_evidence",
        "ClassificationWithEvidence",
        "for_labels",
        "labels",
        ("text", "labels"),
    ),
    "extraction-with-verification": Spec(
        "extraction_with_verification",
        "ExtractionWithVerification",
        "for_fields",
        "fields",
        ("text", "fields"),
    ),
}
NAMES = list(SPECS)


def registry() -> dict[str, type[Reasoning]]:
    return BLUEPRINTS


def module_of(name: str) -> ModuleType:
    return importlib.import_module(f"arq.blueprints.{SPECS[name].module}")


def schema_of(name: str) -> type[Reasoning]:
    return cast(type[Reasoning], getattr(module_of(name), SPECS[name].schema))


def narrowed(name: str, context: dict[str, Any]) -> type[Reasoning] | None:
    """The blueprint narrowed to this context's items by its helper (None if it has none)."""
    spec = SPECS[name]
    if spec.helper is None or spec.items is None:
        return None
    helper = getattr(module_of(name), spec.helper)
    return cast(type[Reasoning], helper(context[spec.items]))


def schemas_for(name: str, context: dict[str, Any]) -> list[type[Reasoning]]:
    """The registered blueprint, and its narrowed form when it has one."""
    special = narrowed(name, context)
    return [schema_of(name), *([special] if special is not None else [])]


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RECORDS / f"{SPECS[name].module}.json").read_text())
    return doc


def records(verdict: str) -> list[Any]:
    found = []
    for name in NAMES:
        doc = load(name)
        for record in doc["records"]:
            if (record["expect"] == "valid") == (verdict == "valid"):
                context = doc["contexts"][record["context"]]
                label = f"{name}: {record['why']}"
                found.append(
                    pytest.param(name, context, record["output"], record["expect"], id=label)
                )
    return found


def contexts() -> list[Any]:
    return [
        pytest.param(name, context, id=f"{name}: {key}")
        for name in NAMES
        for key, context in load(name)["contexts"].items()
    ]


# --- registry and packaging -----------------------------------------------------------------


def test_registry_holds_the_five_blueprints_under_kebab_case_names() -> None:
    blueprints = registry()
    assert list(blueprints) == NAMES
    for name, schema in blueprints.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)+", name)
        assert issubclass(schema, Reasoning)
        assert any(step.is_answer for step in arq.steps(schema))


@pytest.mark.parametrize("name", NAMES)
def test_each_blueprint_is_a_module_of_arq_blueprints(name: str) -> None:
    module = module_of(name)
    schema = schema_of(name)
    assert registry()[name] is schema
    assert module.__name__ == f"arq.blueprints.{SPECS[name].module}"
    assert schema.__module__ == module.__name__
    assert schema.__name__ in module.__all__
    # the module docstring names every context key the records use; the class has a task
    assert module.__doc__ is not None
    assert "Context keys:" in module.__doc__
    for key in {k for c in load(name)["contexts"].values() for k in c}:
        assert f"    {key}: " in module.__doc__, key
    assert schema.__doc__ is not None
    assert len(inspect.cleandoc(schema.__doc__)) > 40


@pytest.mark.parametrize("name", NAMES)
def test_records_name_their_blueprint_and_hold_good_and_bad_outputs(name: str) -> None:
    doc = load(name)
    assert doc["blueprint"] == name
    verdicts = [r["expect"] for r in doc["records"]]
    assert "valid" in verdicts
    failing = {v["step"] for v in verdicts if v != "valid"}
    assert failing, "no bad output recorded"
    assert failing <= {step.name for step in arq.steps(schema_of(name))}
    assert {r["context"] for r in doc["records"]} == set(doc["contexts"])


def _run(code: str, cwd: Path, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_blueprints_neither_shadow_nor_need_a_top_level_schemas_module(tmp_path: Path) -> None:
    own = tmp_path / "with_own"
    own.mkdir()
    (own / "schemas.py").write_text('OWNER = "the user"\n')
    for first, second in (("schemas", "arq.blueprints"), ("arq.blueprints", "schemas")):
        code = (
            f"import sys\nimport {first}\nimport {second}\nimport schemas, arq.blueprints\n"
            "print(schemas.OWNER, schemas.__file__ == sys.argv[1])\n"
            "print(arq.blueprints.__name__, len(arq.blueprints.BLUEPRINTS))\n"
            "print(sys.modules['arq.blueprints'] is not sys.modules['schemas'])\n"
        )
        lines = _run(code, own, str(own / "schemas.py"))
        assert lines == ["the user True", "arq.blueprints 5", "True"], (first, second)

    bare = tmp_path / "bare"
    bare.mkdir()
    code = (
        "import sys\nimport arq.blueprints\n"
        "print('schemas' in sys.modules, sorted(arq.blueprints.BLUEPRINTS)[0])\n"
        "try:\n    import schemas\nexcept ModuleNotFoundError:\n    print('no schemas')\n"
    )
    assert _run(code, bare) == ["False classification-with-evidence", "no schemas"]


# --- JSON Schema and prompt -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "context"), contexts())
def test_lint_finds_no_errors_only_the_documented_length_warnings(
    name: str, context: dict[str, Any]
) -> None:
    for schema in schemas_for(name, context):
        findings = arq.lint(schema)
        assert [f for f in findings if f.severity == "error"] == []
        warnings = [f for f in findings if f.severity == "warning"]
        # docs/reference/blueprints.md: maxLength is dropped by strict mode, arq still enforces it
        assert {f.code for f in warnings} <= {"strict-unsupported-keyword"}
        assert all("`maxLength`" in f.message for f in warnings)
        strict = arq.json_schema(schema, "openai-strict")
        assert list(strict["properties"]) == [s.name for s in arq.steps(schema)]


def _unbounded(node: Any, defs: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of strings without maxLength (or enum) and arrays without maxItems."""
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield from _unbounded(defs[ref.removeprefix("#/$defs/")], defs, path)
        return
    if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
        yield path
    if node.get("type") == "array" and "maxItems" not in node:
        yield path
    for key, child in (node.get("properties") or {}).items():
        yield from _unbounded(child, defs, f"{path}.{key}")
    yield from _unbounded(node.get("items"), defs, f"{path}[]")
    for option in node.get("anyOf") or ():
        yield from _unbounded(option, defs, path)


@pytest.mark.parametrize(("name", "context"), contexts())
def test_every_value_is_bounded_so_a_small_model_finishes(
    name: str, context: dict[str, Any]
) -> None:
    # the narrowed form (what a grammar-constrained local run uses) bounds every string and
    # every list; free-text steps also carry a token budget
    schema = schemas_for(name, context)[-1]
    doc = arq.json_schema(schema, "json-schema")
    assert list(_unbounded(doc, doc.get("$defs", {}), "$")) == []
    for step in arq.steps(schema):
        if _is_text(step.annotation):
            assert step.max_chunks is not None, step.name


def _is_text(annotation: Any) -> bool:
    """A free-text value: `str`, possibly annotated, possibly nullable."""
    if annotation is str:
        return True
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType, Annotated) and args:
        return _is_text(args[0]) and (get_origin(annotation) is Annotated or len(args) == 1)
    return False


@pytest.mark.parametrize(("name", "context"), contexts())
def test_prompt_renders_for_a_realistic_context(name: str, context: dict[str, Any]) -> None:
    for schema in schemas_for(name, context):
        request = arq.PromptBuilder().build(schema, context)
        system, user = request.messages
        assert system["role"] == "system"
        assert user["role"] == "user"
        assert schema.__doc__ is not None
        assert system["content"].startswith(inspect.cleandoc(schema.__doc__))
        names = [s.name for s in arq.steps(schema)]
        assert f"exactly these keys, in this order: {', '.join(names)}." in system["content"]
        for step in arq.steps(schema):
            if step.instruction:
                assert step.instruction in system["content"], step.name
        for key in context:
            assert f"## {key}\n" in user["content"]
        assert request.steps == tuple(names)


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n].helper is not None])
def test_narrowed_prompt_lists_one_entry_per_item_with_its_id(name: str) -> None:
    context = next(iter(load(name)["contexts"].values()))
    schema = narrowed(name, context)
    assert schema is not None
    assert issubclass(schema, schema_of(name))
    assert schema.__doc__ == schema_of(name).__doc__
    items = context[SPECS[name].items or ""]
    ids = [str(item["id"]) for item in items]
    output_format = arq.PromptBuilder().render_output_format(schema)
    doc = arq.json_schema(schema, "openai-strict")
    enums = [n["enum"] for n in _nodes(doc) if "enum" in n and n["enum"] != ["call", "ask"]]
    assert ids in enums  # the ids became an enum for providers and grammars
    if name in ("guideline-adherence", "extraction-with-verification"):  # checklists
        key = "id" if name == "guideline-adherence" else "name"
        for item_id in ids:
            assert f'"{key}": "{item_id}"' in output_format


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


# --- recorded outputs ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "context", "output", "expect"), records("valid"))
def test_good_recorded_output_validates(
    name: str, context: dict[str, Any], output: dict[str, Any], expect: object
) -> None:
    assert expect == "valid"
    for schema in schemas_for(name, context):
        result = arq.validate_output(schema, output, context=context)
        assert isinstance(result, schema)
        assert result.model_dump(mode="json") == output


@pytest.mark.parametrize(("name", "context", "output", "expect"), records("invalid"))
def test_bad_recorded_output_fails_at_the_right_step(
    name: str, context: dict[str, Any], output: dict[str, Any], expect: dict[str, str]
) -> None:
    registered, *special = schemas_for(name, context)
    with pytest.raises(arq.StepError) as caught:
        arq.validate_output(registered, output, context=context)
    error = caught.value
    assert error.step == expect["step"]
    assert expect["error"] in str(error)
    question = {s.name: s.question for s in arq.steps(registered)}[error.step]
    assert f"Question: {question}" in error.feedback
    for schema in special:  # the narrowed form rejects it at the same step
        with pytest.raises(arq.StepError) as again:
            arq.validate_output(schema, output, context=context)
        assert again.value.step == expect["step"]


def _record(name: str, why: str) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = load(name)
    record = next(r for r in doc["records"] if r["why"] == why)
    return doc["contexts"][record["context"]], record["output"]


def test_grounded_quotes_are_checked_against_the_documents_not_taken_on_trust() -> None:
    schema = schema_of("grounded-answer")
    why = "each fact quoted from the documents, the answer built from them"
    context, output = _record("grounded-answer", why)
    arq.validate_output(schema, output, context=context)
    # the very same output fails once the documents no longer say it
    changed = json.loads(json.dumps(context).replace("within 30 days", "within 60 days"))
    with pytest.raises(arq.StepError, match="not quoted word for word from the documents") as e:
        arq.validate_output(schema, output, context=changed)
    assert e.value.step == "facts"
    assert e.value.errors[0]["loc"] == ("facts", 0, "quote")


def test_a_call_with_a_guessed_argument_stops_at_the_decision_while_streaming() -> None:
    schema = schema_of("tool-call-decision")
    context, output = _record(
        "tool-call-decision", "a call decided while an argument would be guessed"
    )
    checker = arq.StepChecker(schema, context=context)
    for step in ("request", "tool", "arguments"):
        checker.accept(step, output[step])
    with pytest.raises(arq.StepError) as caught:
        checker.accept("decision", "call")
    assert caught.value.step == "decision"
    assert caught.value.check == "call_only_with_known_arguments"
    assert list(checker.accepted) == ["request", "tool", "arguments"]  # kept for the repair
    assert checker.accept("decision", "ask") == "ask"


def test_extraction_checks_the_verification_against_the_quote_not_the_model() -> None:
    schema = schema_of("extraction-with-verification")
    context, output = _record(
        "extraction-with-verification", "a value claimed to be in its quote when it is not"
    )
    checker = arq.StepChecker(schema, context=context)
    checker.accept("extracted", output["extracted"])
    with pytest.raises(arq.StepError, match="does not appear in its quote") as caught:
        checker.accept("verification", output["verification"])
    assert caught.value.check == "verified_against_the_quote"
    honest = [
        {**v, "in_quote": v["name"] in ("invoice_number", "total")} for v in output["verification"]
    ]
    assert checker.accept("verification", honest)[2].in_quote is False


@pytest.mark.parametrize("name", NAMES)
def test_a_context_without_a_key_the_checks_read_is_a_developer_error(name: str) -> None:
    doc = load(name)
    record = next(r for r in doc["records"] if r["expect"] == "valid")
    context = doc["contexts"][record["context"]]
    arq.validate_output(schema_of(name), record["output"], context=context)
    for key in SPECS[name].checked:
        without = {k: v for k, v in context.items() if k != key}
        with pytest.raises(arq.ContextError, match=key):
            arq.validate_output(schema_of(name), record["output"], context=without)


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n].helper is not None])
def test_helpers_refuse_an_empty_item_list(name: str) -> None:
    helper = getattr(module_of(name), SPECS[name].helper or "")
    with pytest.raises(arq.SchemaError):
        helper([])


def test_for_guidelines_is_an_arq_checklist_of_exact_length() -> None:
    context, output = _record("guideline-adherence", "a guideline left out")
    schema = narrowed("guideline-adherence", context)
    assert schema is not None
    assert [c.name for c in cross_checks(schema)] == [
        "breaches_are_revised",
        "checks_cover_every_item_once",
    ]
    checks = arq.json_schema(schema, "openai-strict")["properties"]["checks"]
    assert checks["minItems"] == checks["maxItems"] == 3
    with pytest.raises(arq.StepError, match="missing tracking") as caught:
        arq.validate_output(schema, output, context=context)
    assert caught.value.step == "checks"
    skeleton = arq.PromptBuilder().render_output_format(schema)
    assert "// When the customer asks for a refund: say you will check the order status" in (
        skeleton
    )


def test_a_subclass_changes_the_task_and_keeps_the_steps_and_checks() -> None:
    base = schema_of("grounded-answer")
    task = "Answer the employee's question using only what the HR handbook says."
    model = create_model("HandbookAnswer", __base__=base, __doc__=task, __module__=__name__)
    handbook = cast(type[Reasoning], model)
    context, output = _record("grounded-answer", "a made-up quote")
    request = arq.PromptBuilder().build(handbook, context)
    assert request.messages[0]["content"].startswith("Answer the employee's question using")
    assert [s.name for s in arq.steps(handbook)] == [s.name for s in arq.steps(base)]
    with pytest.raises(arq.StepError) as caught:
        arq.validate_output(handbook, output, context=context)
    assert caught.value.step == "facts"


# --- docs -----------------------------------------------------------------------------------


def test_usage_snippet_in_docs_runs_as_shown(tmp_path: Path) -> None:
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    script = tmp_path / "blueprint_usage.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    expected = [c.split("# ")[-1] for c in code.splitlines() if c.startswith("print(")]
    assert expected
    assert out.stdout.splitlines() == expected


def test_docs_describe_every_blueprint_and_its_context_keys() -> None:
    doc = DOC.read_text()
    for name in NAMES:
        section = doc.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        assert f"arq.blueprints.{SPECS[name].module}" in section
        for step in arq.steps(schema_of(name)):
            assert f"`{step.name}`" in section, (name, step.name)
        for key in {k for c in load(name)["contexts"].values() for k in c}:
            assert f"`{key}`" in section, (name, key)
