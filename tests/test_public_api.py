"""The public surface is what `arq/__init__.py` exports; changing it must be deliberate."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import arq

EXPECTED = [
    "ArqError",
    "BackendError",
    "ContextError",
    "ConvergenceError",
    "DeadlineExceededError",
    "Executor",
    "OutputError",
    "OutputParseError",
    "PromptBuilder",
    "Reasoning",
    "RefusalError",
    "Result",
    "RetryPolicy",
    "SchemaError",
    "StepChecker",
    "StepError",
    "StepParser",
    "TemplateError",
    "TruncatedOutputError",
    "Unconverged",
    "answer",
    "check",
    "checklist",
    "cot",
    "covers",
    "date_in",
    "direct",
    "json_schema",
    "lint",
    "one_of",
    "query",
    "steps",
    "validate_output",
    "verbatim_in",
]

ROOT = Path(__file__).resolve().parents[1]


def test_public_surface_is_locked() -> None:
    assert arq.__all__ == EXPECTED
    assert sorted(arq.__all__) == arq.__all__
    for name in EXPECTED:
        assert getattr(arq, name) is not None


def test_the_public_surface_is_small() -> None:
    assert len(arq.__all__) <= 35


def test_every_error_is_an_arq_error() -> None:
    errors = [getattr(arq, n) for n in EXPECTED if n.endswith("Error")]
    assert len(errors) == 12
    assert all(issubclass(e, arq.ArqError) for e in errors)


def test_every_exception_class_arq_defines_is_an_arq_error_in_errors_py() -> None:
    defined = [
        (module.__name__, value)
        for module in _modules()
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    ]
    assert len(defined) >= 17  # the tree in arq.errors; beside it only private signals
    strays = [
        f"{name}.{cls.__name__}"
        for name, cls in defined
        if name != "arq.errors" and not cls.__name__.startswith("_")
    ]
    assert strays == []
    assert all(issubclass(cls, arq.ArqError) for _, cls in defined)


def _modules() -> list[ModuleType]:
    names = sorted(_module_names())
    optional = {"arq.backends.llamacpp", "arq.testing.plugin"}  # need optional extras
    found = []
    for name in names:
        needs_extra = any(name == o or name.startswith(o + ".") for o in optional)
        if needs_extra and importlib.util.find_spec("llama_cpp") is None:
            continue
        found.append(importlib.import_module(name))
    return found


def _module_names() -> dict[str, Path]:
    """Every module of the package, by dotted name (`arq/blueprints` links to `schemas/`)."""
    names = {}
    for path in (ROOT / "arq").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _runtime_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The arq modules a module imports when it runs: at load time or inside a function.
    Imports under `if TYPE_CHECKING:` are annotations only and never run, so they are left
    out (`ConvergenceError.trace` names `arq.trace.Trace` that way)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                up = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{up}.{base}" if base else up
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return {module for module in found if module in known and module != name}


def test_the_package_has_no_import_cycle() -> None:
    paths = _module_names()
    known = set(paths)
    graph = {name: _runtime_imports(path, name, known) for name, path in paths.items()}
    assert len(graph) > 40  # the walk sees the package
    assert sum(map(len, graph.values())) > 100

    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    assert cycles == []


def test_no_module_is_over_500_lines() -> None:
    long = {
        name: n
        for name, path in _module_names().items()
        if (n := len(path.read_text().splitlines())) > 500
    }
    assert long == {}


def test_import_stays_light() -> None:
    code = "import sys, arq; print(sorted(m for m in ('openai', 'llama_cpp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_the_openai_backend_imports_openai() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "arq").rglob("*.py")
        if re.search(r"^\s*(import openai|from openai)", path.read_text(), re.M)
        and path.name != "openai.py"
    ]
    assert offenders == []


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    script = tmp_path / "example.py"
    script.write_text(readme.split("```python\n", 1)[1].split("```", 1)[0])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # the example feeds an order id that the conversation does not contain
    assert out.stdout.startswith('The value of "order_id" was rejected:\n- order_id:')
    assert "Instruction: Copy it exactly from the conversation" in out.stdout


def test_bad_arguments_raise_arq_errors_that_are_also_value_and_type_errors() -> None:
    from arq.testing import ScriptedBackend

    with pytest.raises(arq.ArqError, match="max_repairs must not be negative") as caught:
        arq.Executor(ScriptedBackend("{}"), max_repairs=-1)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(arq.ArqError, match=r"must implement arq\.backends\.Backend") as caught:
        arq.Executor(object())  # type: ignore[arg-type]
    assert isinstance(caught.value, TypeError)
    with pytest.raises(arq.ArqError, match="attempts must be at least 1"):
        arq.RetryPolicy(attempts=0)
