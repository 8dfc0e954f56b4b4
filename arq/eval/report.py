"""What an evaluation leaves behind: one outcome per run, figures per strategy, and reports.

`EvalReport` holds the settings of an evaluation and every run's `RunOutcome` (item,
strategy, repeat, seed, output, scores, tokens, latency). `summary(strategy)` computes the
figures (success rate, pass^k, repair rate, failures per step, tokens, latency, errors by
type); `to_markdown()`, `to_json()` and `plot(path)` write them out. The `arq eval`
command lives in `arq.cli.eval`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from arq.trace import replacing

if TYPE_CHECKING:
    pass

__all__ = [
    "PLOT_EXTRA",
    "EvalReport",
    "RunOutcome",
    "StrategySummary",
    "percentile",
]

PLOT_EXTRA = "pip install 'arq-reasoning[plot]'"


@dataclass(frozen=True)
class RunOutcome:
    """One run: one item, one strategy, one repeat.

    Attributes:
        item: The item's id.
        schema: The name of the schema the item was run with.
        strategy: The strategy's name, one of `arq.eval.STRATEGIES`.
        repeat: 0 to k-1.
        seed: The sampling seed of the run (the base seed + `repeat`), or None.
        success: The run produced an output and every scorer passed on it.
        output: The output as JSON, or None when the run produced none.
        error_type: The exception that ended a run without output (e.g. ConvergenceError).
        error: Its message.
        failed_step: The step that kept the output from passing the schema's checks: where
            a run gave up, or, for an unchecked strategy, the first step whose checks its
            output breaks. None when there is none (or the error names no step).
        checks_passed: Whether the output passes the schema's checks (always, for `arq`);
            None when there is no output.
        scores: Each scorer's verdict on the output (empty when there is no output).
        scorer_errors: Scorers that raised, with the error; they count as failed.
        calls: Model calls made (first call, repairs, retries).
        repairs: Repair calls made.
        repaired_steps: The step each repair redid, in order.
        prompt_tokens: Prompt tokens over every call.
        output_tokens: Output tokens over every call.
        tokens_estimated: Some count was estimated (a stream closed early reports none).
        latency: Seconds from the run's first call to its end; None when no call was made.
        unconverged: With the `unconverged="return"` policy, a run whose repairs did not
            converge: its accepted steps and the last value of each other step (not
            validated; `output` stays None). None otherwise.
    """

    item: str
    schema: str
    strategy: str
    repeat: int
    seed: int | None
    success: bool
    output: dict[str, Any] | None = None
    error_type: str | None = None
    error: str | None = None
    failed_step: str | None = None
    checks_passed: bool | None = None
    scores: dict[str, bool] = field(default_factory=dict)
    scorer_errors: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    repairs: int = 0
    repaired_steps: tuple[str, ...] = ()
    prompt_tokens: int = 0
    output_tokens: int = 0
    tokens_estimated: bool = False
    latency: float | None = None
    unconverged: dict[str, Any] | None = None


@dataclass(frozen=True)
class StrategySummary:
    """The figures of one strategy over every item and repeat.

    Rates are fractions in [0, 1]. `pass_k` is the share of items whose k repeats all
    succeeded, `pass_any` the share with at least one success. `answered_rate` is the share
    of runs that produced an output, and `precision` the share of those that succeeded.
    Latencies are in seconds (None when no run made a call).
    """

    strategy: str
    runs: int
    items: int
    repeats: int
    successes: int
    success_rate: float
    pass_k: float
    pass_any: float
    answered_rate: float
    precision: float
    checks_passed_rate: float
    repair_rate: float
    failed_steps: dict[str, int]
    repaired_steps: dict[str, int]
    scorer_failures: dict[str, int]
    errors: dict[str, int]
    output_tokens_total: int
    output_tokens_mean: float
    prompt_tokens_total: int
    tokens_estimated: bool
    latency_p50: float | None
    latency_p95: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-quantile (0..1) of `values`, interpolated linearly; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _counts(names: Iterable[str]) -> dict[str, int]:
    return dict(Counter(names).most_common())


def summarize(strategy: str, outcomes: Sequence[RunOutcome], repeats: int) -> StrategySummary:
    """The figures of `strategy` from its outcomes."""
    runs = [o for o in outcomes if o.strategy == strategy]
    by_item: dict[str, list[bool]] = {}
    for outcome in runs:
        by_item.setdefault(outcome.item, []).append(outcome.success)
    latencies = [o.latency for o in runs if o.latency is not None]
    output_tokens = sum(o.output_tokens for o in runs)
    successes = sum(o.success for o in runs)
    answered = sum(o.output is not None for o in runs)
    return StrategySummary(
        strategy=strategy,
        runs=len(runs),
        items=len(by_item),
        repeats=repeats,
        successes=successes,
        success_rate=_rate(successes, len(runs)),
        pass_k=_rate(sum(all(v) for v in by_item.values()), len(by_item)),
        pass_any=_rate(sum(any(v) for v in by_item.values()), len(by_item)),
        answered_rate=_rate(answered, len(runs)),
        precision=_rate(successes, answered),
        checks_passed_rate=_rate(sum(bool(o.checks_passed) for o in runs), len(runs)),
        repair_rate=_rate(sum(o.repairs > 0 for o in runs), len(runs)),
        failed_steps=_counts(o.failed_step for o in runs if o.failed_step),
        repaired_steps=_counts(step for o in runs for step in o.repaired_steps),
        scorer_failures=_counts(
            name for o in runs if o.output is not None for name, ok in o.scores.items() if not ok
        ),
        errors=_counts(o.error_type for o in runs if o.error_type),
        output_tokens_total=output_tokens,
        output_tokens_mean=output_tokens / len(runs) if runs else 0.0,
        prompt_tokens_total=sum(o.prompt_tokens for o in runs),
        tokens_estimated=any(o.tokens_estimated for o in runs),
        latency_p50=percentile(latencies, 0.5),
        latency_p95=percentile(latencies, 0.95),
    )


@dataclass
class EvalReport:
    """Every run of an evaluation, with its settings.

    Attributes:
        settings: How the evaluation ran: model, schemas, strategies, repeats, temperature,
            repair temperature, base seed and the seed of each repeat, max repairs, max
            tokens, concurrency, number of items, start time and seconds taken.
        outcomes: One `RunOutcome` per item, strategy and repeat.
    """

    settings: dict[str, Any]
    outcomes: list[RunOutcome]

    @property
    def strategies(self) -> list[str]:
        """The strategies evaluated, in the order they ran."""
        return list(self.settings["strategies"])

    def summary(self, strategy: str) -> StrategySummary:
        """The figures of one strategy."""
        if strategy not in self.strategies:
            raise KeyError(f"no strategy {strategy!r} in this report: {self.strategies}")
        return summarize(strategy, self.outcomes, int(self.settings["repeats"]))

    def summaries(self) -> list[StrategySummary]:
        """The figures of every strategy, in order."""
        return [self.summary(s) for s in self.strategies]

    def to_dict(self) -> dict[str, Any]:
        """Everything: settings, per-strategy figures, and every run's outcome."""
        return {
            "settings": dict(self.settings),
            "summary": {s.strategy: asdict(s) for s in self.summaries()},
            "outcomes": [asdict(o) for o in self.outcomes],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """`to_dict()` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> EvalReport:
        """A report read back from `to_json()` (to render or plot it again)."""
        data = json.loads(text)
        outcomes = [
            RunOutcome(**{**o, "repaired_steps": tuple(o["repaired_steps"])})
            for o in data["outcomes"]
        ]
        return cls(data["settings"], outcomes)

    def to_markdown(self) -> str:
        """The settings, one table row per strategy, then failures, errors and scorers."""
        s = self.settings
        k = int(s["repeats"])
        lines = [
            f"Model `{s['model']}`, schema {', '.join(f'`{n}`' for n in s['schemas'])}: "
            f"{s['items']} items x {k} repeats per strategy, {_settings_text(s)}.",
            "",
            f"| strategy | success | pass^{k} | answered | success when answered "
            "| checks passed | repair rate | output tokens mean | output tokens total "
            "| latency p50 | latency p95 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        summaries = self.summaries()
        for m in summaries:
            estimated = "~" if m.tokens_estimated else ""
            lines.append(
                f"| {m.strategy} | {_pct(m.success_rate)} ({m.successes}/{m.runs}) "
                f"| {_pct(m.pass_k)} | {_pct(m.answered_rate)} | {_pct(m.precision)} "
                f"| {_pct(m.checks_passed_rate)} | {_pct(m.repair_rate)} "
                f"| {estimated}{m.output_tokens_mean:.1f} | {estimated}{m.output_tokens_total} "
                f"| {_seconds(m.latency_p50)} | {_seconds(m.latency_p95)} |"
            )
        lines += ["", "| strategy | failed steps | repaired steps | scorer failures | errors |"]
        lines.append("|---|---|---|---|---|")
        for m in summaries:
            cells = (m.failed_steps, m.repaired_steps, m.scorer_failures, m.errors)
            lines.append(f"| {m.strategy} | " + " | ".join(_tally(c) for c in cells) + " |")
        if len(self.settings["schemas"]) > 1:
            lines += ["", "Success by schema:", "", *self._by_schema()]
        if any(m.tokens_estimated for m in summaries):
            lines += ["", "~: some token counts are estimated (streams closed early report none)."]
        return "\n".join(lines) + "\n"

    def _by_schema(self) -> list[str]:
        names = list(self.settings["schemas"])
        rows = ["| strategy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for strategy in self.strategies:
            cells = []
            for name in names:
                runs = [o for o in self.outcomes if (o.strategy, o.schema) == (strategy, name)]
                wins = sum(o.success for o in runs)
                cells.append(f"{_pct(_rate(wins, len(runs)))} ({wins}/{len(runs)})")
            rows.append(f"| {strategy} | " + " | ".join(cells) + " |")
        return rows

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Write a PNG: success, pass^k, answered and checks passed per strategy, with the
        mean output tokens and the latency beside them. Needs matplotlib (the `plot` extra)."""
        try:
            import matplotlib
        except ImportError as exc:
            raise ImportError(f"EvalReport.plot needs matplotlib: {PLOT_EXTRA}") from exc
        matplotlib.use("Agg")
        from matplotlib import pyplot

        summaries = self.summaries()
        names = [m.strategy for m in summaries]
        k = int(self.settings["repeats"])
        figure, (rates, tokens, latency) = pyplot.subplots(
            1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2, 1, 1]}
        )
        width = 0.2
        series = [
            ("success", [m.success_rate for m in summaries]),
            (f"pass^{k}", [m.pass_k for m in summaries]),
            ("answered", [m.answered_rate for m in summaries]),
            ("checks passed", [m.checks_passed_rate for m in summaries]),
        ]
        for offset, (label, values) in enumerate(series):
            xs = [i + (offset - 1.5) * width for i in range(len(names))]
            bars = rates.bar(xs, [100 * v for v in values], width, label=label)
            rates.bar_label(bars, fmt="%.0f", fontsize=7)
        rates.set_xticks(range(len(names)), names)
        rates.set_ylim(0, 110)
        rates.set_ylabel("% of runs (pass^k: of items)")
        rates.legend(fontsize=8, loc="upper right", ncols=4)
        rates.set_title("outcomes")
        bars = tokens.bar(names, [m.output_tokens_mean for m in summaries], color="tab:gray")
        tokens.bar_label(bars, fmt="%.0f", fontsize=7)
        tokens.set_title("output tokens per run (mean)")
        p50 = [m.latency_p50 or 0.0 for m in summaries]
        p95 = [m.latency_p95 or 0.0 for m in summaries]
        latency.bar(names, p95, color="tab:orange", alpha=0.45, label="p95")
        latency.bar(names, p50, color="tab:orange", label="p50")
        latency.set_title("latency per run (s)")
        latency.legend(fontsize=8)
        for axes in (tokens, latency):
            axes.tick_params(axis="x", labelrotation=20)
        figure.suptitle(
            f"{self.settings['model']}: {self.settings['items']} items x {k} repeats, "
            f"{_settings_text(self.settings)}",
            fontsize=9,
        )
        figure.tight_layout()
        with replacing(path) as temp:
            figure.savefig(os.fspath(temp), dpi=110)
        pyplot.close(figure)


def _settings_text(s: dict[str, Any]) -> str:
    temperature = "server default" if s["temperature"] is None else s["temperature"]
    seeds = "unset" if s["seed"] is None else f"{s['seed']} + repeat"
    return f"temperature {temperature}, seed {seeds}, arq max_repairs {s['max_repairs']}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items()) or "-"
