"""The public surface is what `arq/__init__.py` exports; changing it must be deliberate."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import arq

EXPECTED = [
    "ArqError",
    "Attempt",
    "BackendError",
    "ContextError",
    "ConvergenceError",
    "CrossCheck",
    "DeadlineExceededError",
    "Done",
    "Event",
    "Executor",
    "Finding",
    "Grounding",
    "Message",
    "ObjectCompleted",
    "OutputError",
    "OutputParseError",
    "PromptBuilder",
    "Reasoning",
    "RefusalError",
    "RepairStarted",
    "Request",
    "Result",
    "RetryPolicy",
    "Retrying",
    "SchemaError",
    "Section",
    "Step",
    "StepAccepted",
    "StepChecker",
    "StepCompleted",
    "StepError",
    "StepFailed",
    "StepParser",
    "StepRecord",
    "StepStarted",
    "TemplateError",
    "Trace",
    "TruncatedOutputError",
    "Usage",
    "answer",
    "check",
    "checklist",
    "cot",
    "covers",
    "cross_checks",
    "date_in",
    "direct",
    "json_schema",
    "lint",
    "one_of",
    "parse_tolerant",
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


def test_every_error_is_an_arq_error() -> None:
    errors = [getattr(arq, n) for n in EXPECTED if n.endswith("Error")]
    assert len(errors) == 12
    assert all(issubclass(e, arq.ArqError) for e in errors)


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
