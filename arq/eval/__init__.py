"""Measure a reasoning schema against its baselines on your own data.

`evaluate(schema, dataset, backend)` runs every item with each strategy (`arq`,
`arq-unchecked`, `cot`, `direct`) and returns an `EvalReport`.
"""

from arq.eval.datasets import load_dataset
from arq.eval.evaluation import Scorer, aevaluate, evaluate
from arq.eval.report import EvalReport, RunOutcome, StrategySummary
from arq.eval.strategies import DEFAULT_STRATEGIES, STRATEGIES, unchecked

__all__ = [
    "DEFAULT_STRATEGIES",
    "STRATEGIES",
    "EvalReport",
    "RunOutcome",
    "Scorer",
    "StrategySummary",
    "aevaluate",
    "evaluate",
    "load_dataset",
    "unchecked",
]
