"""Measure ARQ against its baselines on your own data, from one schema.

```python
from arq.eval import evaluate, load_dataset

def decision(output, item):  # a scorer: read answer steps, compare with the expectation
    return output.decision == item["expect"]["decision"]

report = evaluate(Schema, load_dataset("cases.jsonl"), backend=backend, repeats=3,
                  strategies=("arq", "arq-unchecked", "cot", "direct"), scorers=[decision])
print(report.to_markdown())
report.plot("report.png")
```

Each strategy (`arq.eval.strategies`) runs a schema derived from the one given. Unchecked
strategies are single-pass, as the baselines are used in practice; whether their output
would have passed the schema's checks is measured afterwards (`checks passed`). A run
succeeds when it produced an output and every scorer passes on it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

from pydantic import BaseModel

from arq.backends.base import Backend
from arq.errors import (
    ArqError,
    ConvergenceError,
    DatasetError,
    InvalidArgumentError,
    OutputParseError,
    StepError,
)
from arq.eval.datasets import check_unique, parse_item
from arq.eval.metering import MeteredBackend, ProgressBar, Tally
from arq.eval.report import EvalReport, RunOutcome
from arq.eval.strategies import (
    DEFAULT_STRATEGIES,
    STRATEGIES,
    Plan,
    Strategy,
    strategy_named,
)
from arq.executor import Executor
from arq.outcome import Unconverged, UnconvergedPolicy
from arq.schema import Reasoning
from arq.trace import Result, Trace
from arq.validation import validate_output

__all__ = ["Scorer", "aevaluate", "check_dataset", "evaluate", "named_scorers"]

Scorer = Callable[[Any, Mapping[str, Any]], bool]
"""`(output, item) -> bool`: the output (the answer steps, for `cot` and `direct`) and the
dataset item (with its `context` and `expect`)."""
Schemas = type[Reasoning] | Mapping[str, type[Reasoning]]
Outcome = Result[Any] | Unconverged[Any] | ArqError


# --- evaluating ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """An evaluation, its arguments checked: what runs, how often, how it calls the model."""

    schemas: dict[str, type[Reasoning]]
    items: list[dict[str, Any]]
    scorers: dict[str, Scorer]
    strategies: tuple[Strategy, ...]
    repeats: int
    concurrency: int
    temperature: float | None
    repair_temperature: float | None
    seed: int | None
    max_repairs: int
    max_tokens: int | None
    unconverged: UnconvergedPolicy = "raise"

    def seed_of(self, repeat: int) -> int | None:
        """The sampling seed of a repeat: the base seed + `repeat`, or None."""
        return None if self.seed is None else self.seed + repeat

    def settings(self, model: str) -> dict[str, Any]:
        """How the evaluation runs, as its report states it."""
        temperature, repair = self.temperature, self.repair_temperature
        return {
            "model": model,
            "schemas": [s.__name__ for s in self.schemas.values()],
            "strategies": [s.name for s in self.strategies],
            "repeats": self.repeats,
            "temperature": temperature,
            "repair_temperature": temperature if repair is None else repair,
            "seed": self.seed,
            "seeds": [self.seed_of(r) for r in range(self.repeats)],
            "max_repairs": self.max_repairs,
            "max_tokens": self.max_tokens,
            "unconverged": self.unconverged,
            "concurrency": self.concurrency,
            "items": len(self.items),
            "scorers": list(self.scorers),
        }

    async def run(self, metered: MeteredBackend, bar: ProgressBar) -> list[RunOutcome]:
        """Every strategy's repeats over the dataset; each repeat's outcomes in item order."""
        outcomes: list[RunOutcome] = []
        groups = _groups(self.items, self.schemas)
        order = {item["id"]: i for i, item in enumerate(self.items)}
        for strategy in self.strategies:
            plans = {name: strategy.plan(s) for name, s in self.schemas.items()}
            for repeat in range(self.repeats):
                executor = Executor(
                    metered,
                    max_repairs=self.max_repairs if strategy.checked else 0,
                    temperature=self.temperature,
                    repair_temperature=self.repair_temperature,
                    max_tokens=self.max_tokens,
                    seed=self.seed_of(repeat),
                    unconverged=self.unconverged,
                )
                label = f"{strategy.name} r{repeat + 1}/{self.repeats}"
                run = _Run(strategy, repeat, self.seed_of(repeat), plans, self.scorers, metered)
                for name, group in groups.items():
                    contexts = [item["context"] for item in group]
                    await executor.amap(
                        plans[name].run,
                        contexts,
                        concurrency=self.concurrency,
                        on_result=run.on_result(group, bar, label),
                    )
                outcomes += sorted(run.outcomes, key=lambda o: order[o.item])
        return outcomes


@dataclass
class _Run:
    """One strategy's repeat over the dataset: its settings and the outcomes so far."""

    strategy: Strategy
    repeat: int
    seed: int | None
    plans: dict[str, Plan]
    scorers: dict[str, Scorer]
    metered: MeteredBackend
    outcomes: list[RunOutcome] = field(default_factory=list)

    def plan(self, item: Mapping[str, Any]) -> Plan:
        """The plan of the item's schema."""
        return self.plans[item.get("schema", "") if "" not in self.plans else ""]

    def on_result(
        self, group: Sequence[dict[str, Any]], bar: ProgressBar, label: str
    ) -> Callable[[int, Outcome], None]:
        """The `amap` callback for one group of items: score the run, tick the bar."""

        def done(index: int, outcome: Outcome) -> None:
            result = _outcome(self, group[index], outcome, self.metered.take())
            self.outcomes.append(result)
            bar.tick(result.success, label)

        return done


def evaluate(
    schema: Schemas,
    dataset: Iterable[Mapping[str, Any]],
    *,
    backend: Backend,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    repeats: int = 1,
    scorers: Mapping[str, Scorer] | Sequence[Scorer] = (),
    concurrency: int = 8,
    temperature: float | None = 0.7,
    repair_temperature: float | None = None,
    seed: int | None = 0,
    max_repairs: int = 2,
    max_tokens: int | None = None,
    progress: bool | TextIO = True,
    unconverged: UnconvergedPolicy = "raise",
) -> EvalReport:
    """Run every strategy `repeats` times on every item and score the outputs.

    Args:
        schema: The reasoning schema, or a mapping of names to schemas; then each item
            names its schema with its `schema` key.
        dataset: Items `{"id", "context", "expect"}` (see `load_dataset`).
        backend: The model service. It is not closed.
        strategies: Any of `STRATEGIES`, run in this order.
        repeats: k: runs per item and strategy; repeat r samples with seed `seed + r`.
        scorers: Named `(output, item) -> bool` callables (a list is named by `__name__`).
        concurrency: Runs at once (`Executor.amap`); 1 suits an embedded model.
        temperature: The sampling temperature of every call (as `arq.Executor`'s).
        repair_temperature: The temperature of the step a repair redoes (as
            `arq.Executor`'s).
        max_tokens: The output token limit of every call.
        seed: The base seed; None leaves sampling unseeded.
        max_repairs: Repairs allowed to `arq` (the unchecked strategies get none).
        progress: A progress bar on stderr (True), on a given stream, or none (False).
        unconverged: The executor's policy when repairs do not converge (as
            `arq.Executor`'s): with "return", such a run is recorded with its error type
            `Unconverged`, its accepted steps and last values in `RunOutcome.unconverged`,
            and no output (it is not answered).

    Raises:
        DatasetError: an item is malformed or names a schema that was not given.
        InvalidArgumentError: an unknown strategy, no scorer, or a bad count.
    """
    call = aevaluate(
        schema,
        dataset,
        backend=backend,
        strategies=strategies,
        repeats=repeats,
        scorers=scorers,
        concurrency=concurrency,
        temperature=temperature,
        repair_temperature=repair_temperature,
        seed=seed,
        max_repairs=max_repairs,
        max_tokens=max_tokens,
        progress=progress,
        unconverged=unconverged,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call)
    with ThreadPoolExecutor(1) as pool:  # a loop runs in this thread (a notebook)
        return pool.submit(asyncio.run, call).result()


async def aevaluate(
    schema: Schemas,
    dataset: Iterable[Mapping[str, Any]],
    *,
    backend: Backend,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    repeats: int = 1,
    scorers: Mapping[str, Scorer] | Sequence[Scorer] = (),
    concurrency: int = 8,
    temperature: float | None = 0.7,
    repair_temperature: float | None = None,
    seed: int | None = 0,
    max_repairs: int = 2,
    max_tokens: int | None = None,
    progress: bool | TextIO = True,
    unconverged: UnconvergedPolicy = "raise",
) -> EvalReport:
    """`evaluate`, on the running event loop."""
    schemas = _schemas(schema)
    items = _items(dataset, schemas)
    named = named_scorers(scorers)
    chosen = _strategies(strategies)
    if repeats < 1 or concurrency < 1 or max_repairs < 0:
        raise InvalidArgumentError(
            "repeats and concurrency must be at least 1, max_repairs at least 0"
        )
    job = _Job(
        schemas=schemas,
        items=items,
        scorers=named,
        strategies=chosen,
        repeats=repeats,
        concurrency=concurrency,
        temperature=temperature,
        repair_temperature=repair_temperature,
        seed=seed,
        max_repairs=max_repairs,
        max_tokens=max_tokens,
        unconverged=unconverged,
    )
    stream = sys.stderr if progress is True else (progress or None)
    bar = ProgressBar(len(chosen) * repeats * len(items), stream)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    outcomes = await job.run(MeteredBackend(backend), bar)
    settings = job.settings(backend.name) | {
        "started": started.isoformat(timespec="seconds"),
        "elapsed": round(time.monotonic() - clock, 3),
    }
    return EvalReport(settings, outcomes)


def _strategies(names: Sequence[str]) -> tuple[Strategy, ...]:
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names or len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"strategies must be distinct names of {STRATEGIES}, not {names}"
        )
    return tuple(strategy_named(name) for name in names)


def _schemas(schema: Schemas) -> dict[str, type[Reasoning]]:
    if isinstance(schema, type) and issubclass(schema, Reasoning):
        return {"": schema}
    if isinstance(schema, Mapping) and schema:
        for name, value in schema.items():
            if not (isinstance(value, type) and issubclass(value, Reasoning)):
                raise InvalidArgumentError(
                    f"schema {name!r} is {value!r}, not an arq.Reasoning subclass"
                )
        return {str(name): value for name, value in schema.items()}
    raise InvalidArgumentError(
        f"schema must be an arq.Reasoning subclass or a mapping of them: {schema!r}"
    )


def check_dataset(schema: Schemas, dataset: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The dataset's items, parsed and checked against the schemas evaluated (before any
    model runs). Raises `DatasetError` for a malformed item or an unknown schema name."""
    return _items(dataset, _schemas(schema))


def _items(
    dataset: Iterable[Mapping[str, Any]], schemas: Mapping[str, type[Reasoning]]
) -> list[dict[str, Any]]:
    items = [parse_item(dict(data), str(i + 1), f"item {i + 1}") for i, data in enumerate(dataset)]
    if not items:
        raise DatasetError("the dataset holds no items")
    check_unique(items, "the dataset")
    for item in items:
        name = item.get("schema")
        if "" in schemas:
            if name is not None and name != schemas[""].__name__:
                raise DatasetError(
                    f"item {item['id']!r} names schema {name!r}, but {schemas[''].__name__} is "
                    "evaluated: give a mapping of schemas, or drop the item's 'schema' key"
                )
        elif name not in schemas:
            raise DatasetError(
                f"item {item['id']!r} names schema {name!r}; the schemas given: "
                f"{', '.join(schemas)}"
            )
    return items


def _groups(
    items: Sequence[dict[str, Any]], schemas: Mapping[str, type[Reasoning]]
) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in schemas}
    for item in items:
        groups["" if "" in schemas else item["schema"]].append(item)
    return {name: group for name, group in groups.items() if group}


def named_scorers(scorers: Mapping[str, Scorer] | Sequence[Scorer]) -> dict[str, Scorer]:
    """Scorers by name: a mapping as given, a list named by each function's `__name__`."""
    if isinstance(scorers, Mapping):
        named = {str(name): scorer for name, scorer in scorers.items()}
    else:
        named = {getattr(s, "__name__", f"scorer{i + 1}"): s for i, s in enumerate(scorers)}
    if not named:
        raise InvalidArgumentError("give at least one scorer: (output, item) -> bool")
    for name, scorer in named.items():
        if not callable(scorer):
            raise InvalidArgumentError(f"scorer {name!r} is {scorer!r}, not a callable")
    return named


def _outcome(run: _Run, item: dict[str, Any], outcome: Outcome, tally: Tally | None) -> RunOutcome:
    plan = run.plan(item)
    common = _measures(run, plan, item, outcome, tally)
    if isinstance(outcome, Unconverged):
        last = outcome.last_error
        return RunOutcome(
            **common,
            success=False,
            error_type="Unconverged",
            error=outcome.reason,
            failed_step=last.step if isinstance(last, StepError | OutputParseError) else None,
            unconverged={**_json(outcome.accepted), **outcome.remaining},
        )
    if isinstance(outcome, ArqError):
        failure = outcome.last_error if isinstance(outcome, ConvergenceError) else outcome
        step = failure.step if isinstance(failure, StepError | OutputParseError) else None
        return RunOutcome(
            **common,
            success=False,
            error_type=type(outcome).__name__,
            error=str(outcome),
            failed_step=step,
        )
    output = outcome.output.model_dump(mode="json")
    failed_step, passed = None, True
    if not run.strategy.checked:
        failed_step, passed = _checks_after(plan.reference, output, item["context"])
    scores, errors = _scores(run.scorers, outcome.output, item)
    return RunOutcome(
        **common,
        success=all(scores.values()),
        output=output,
        failed_step=failed_step,
        checks_passed=passed,
        scores=scores,
        scorer_errors=errors,
    )


def _measures(
    run: _Run,
    plan: Plan,
    item: dict[str, Any],
    outcome: Outcome,
    tally: Tally | None,
) -> dict[str, Any]:
    """What every outcome records: the run, and its cost from the trace or else the tally."""
    latency = None if tally is None else asyncio.get_running_loop().time() - tally.started
    common: dict[str, Any] = {
        "item": item["id"],
        "schema": plan.schema.__name__,
        "strategy": run.strategy.name,
        "repeat": run.repeat,
        "seed": run.seed,
        "latency": latency,
        "calls": 0 if tally is None else tally.calls,
        "output_tokens": 0 if tally is None else max(tally.reported, tally.chunks),
    }
    trace = outcome.trace if isinstance(outcome, Result | ConvergenceError | Unconverged) else None
    if isinstance(trace, Trace):
        usage = trace.usage
        common |= {
            "calls": len(trace.attempts),
            "repairs": trace.repairs,
            "repaired_steps": tuple(
                a.request.steps[0]
                for a in trace.attempts
                if a.kind in ("repair", "continuation") and a.request.steps
            ),
            "prompt_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "tokens_estimated": usage.estimated,
        }
    return common


def _checks_after(
    reference: type[Reasoning], output: dict[str, Any], context: Mapping[str, Any]
) -> tuple[str | None, bool]:
    """Whether an unchecked run's output passes the checks, and the first step that fails."""
    try:
        validate_output(reference, output, context=context)
    except StepError as error:
        return error.step, False
    except ArqError:
        return None, False
    return None, True


def _scores(
    scorers: Mapping[str, Scorer], output: Any, item: Mapping[str, Any]
) -> tuple[dict[str, bool], dict[str, str]]:
    """Each scorer's verdict, and the errors of those that raised (a raise fails the score)."""
    scores, errors = {}, {}
    for name, scorer in scorers.items():
        try:
            scores[name] = bool(scorer(output, item))
        except Exception as exc:
            scores[name], errors[name] = False, f"{type(exc).__name__}: {exc}"
    return scores, errors


def _json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validated step values as JSON-like data (a nested model as a dict)."""
    return {
        name: value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        for name, value in values.items()
    }
