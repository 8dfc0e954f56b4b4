"""Stock reasoning blueprints, installed as `arq.blueprints`.

This folder is the package `arq.blueprints` (`arq/blueprints` links to it), so the
blueprints import under arq's own name and never clash with a user's `schemas` module.
`BLUEPRINTS` maps each stock name (as the CLI accepts it) to its schema.

- guideline-adherence: `GuidelineAdherence` (context: conversation, guidelines)
- tool-call-decision: `ToolCallDecision` (context: conversation, tools)
- grounded-answer: `GroundedAnswer` (context: question, documents)
- classification-with-evidence: `ClassificationWithEvidence` (context: text, labels)
- extraction-with-verification: `ExtractionWithVerification` (context: text, fields)
"""

from __future__ import annotations

from arq.schema import Reasoning

# relative imports: the package is `arq.blueprints` when installed, whatever the folder's name
from .classification_with_evidence import ClassificationWithEvidence
from .extraction_with_verification import ExtractionWithVerification
from .grounded_answer import GroundedAnswer
from .guideline_adherence import GuidelineAdherence
from .tool_call_decision import ToolCallDecision

__all__ = [
    "BLUEPRINTS",
    "ClassificationWithEvidence",
    "ExtractionWithVerification",
    "GroundedAnswer",
    "GuidelineAdherence",
    "ToolCallDecision",
]

BLUEPRINTS: dict[str, type[Reasoning]] = {
    "guideline-adherence": GuidelineAdherence,
    "tool-call-decision": ToolCallDecision,
    "grounded-answer": GroundedAnswer,
    "classification-with-evidence": ClassificationWithEvidence,
    "extraction-with-verification": ExtractionWithVerification,
}
