"""The rendered prompt and JSON Schema in docs/concepts/prompt.md are what arq produces today."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import arq

DOC = Path(__file__).resolve().parents[1] / "docs" / "concepts" / "prompt.md"
CONTEXT = {
    "conversation": "customer: My order A-1234 never arrived. Refund me!",
    "guidelines": [
        {"id": "g1", "text": "Never promise a refund before the order status is known."}
    ],
}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    path = tmp_path_factory.mktemp("doc") / "concepts_example.py"
    path.write_text(_blocks("python")[0])
    spec = importlib.util.spec_from_file_location("concepts_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_rendered_prompt_in_docs_is_current(example: ModuleType) -> None:
    request = arq.PromptBuilder().build(example.Reply, context=CONTEXT)
    rendered = "\n".join(f"[{m['role']}]\n{m['content']}" for m in request.messages)
    assert _blocks("text")[0] == rendered + "\n"


def test_json_schema_in_docs_is_current(example: ModuleType) -> None:
    assert json.loads(_blocks("json")[0]) == arq.json_schema(example.Reply)
    assert _blocks("json")[0] == json.dumps(arq.json_schema(example.Reply), indent=2) + "\n"


def test_cross_check_in_docs_example_works(example: ModuleType) -> None:
    checker = arq.StepChecker(example.Reply, context=CONTEXT)
    checker.accept("checks", [{"id": "g1", "applies": True, "compliant": False}])
    with pytest.raises(arq.StepError, match="must be escalated") as caught:
        checker.accept("decision", "reply")
    assert caught.value.check == "escalate_when_not_compliant"
