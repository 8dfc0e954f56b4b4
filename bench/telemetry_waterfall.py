"""A trace of a real repaired run, drawn as a trace viewer's waterfall, from its exported spans.

Runs the demo's schema (`examples/support_reply.py`) on the embedded model, one seed after
another from `--seed`, until a run needs a repair and still ends valid. The run is made
under a span the script opens (as a web handler's would be), its spans are recorded by
OpenTelemetry's SDK through an in-memory exporter, and the finished spans are drawn:
one bar per span, a dot per step event (green accepted, red failed). Prints the spans and
their events; writes the PNG (matplotlib).

    python bench/telemetry_waterfall.py [--out docs/telemetry-waterfall.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from demo_runs import DEMO
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import arq
from arq.backends import LlamaCppBackend
from arq.telemetry import Telemetry


def repaired_run(seed: int, tries: int, temperature: float) -> tuple[list[ReadableSpan], int]:
    """The spans of the first run from `seed` on that was repaired and ended valid."""
    demo = DEMO
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for attempt in range(seed, seed + tries):
        exporter.clear()
        backend = LlamaCppBackend(seed=attempt)
        executor = arq.Executor(
            backend,
            temperature=temperature,
            max_tokens=400,
            telemetry=Telemetry(tracer_provider=provider),
        )
        with executor, tracer.start_as_current_span("POST /support/reply"):
            try:
                result = executor.run(demo.Reply, demo.CONTEXT)
            except arq.ArqError as error:
                print(f"seed {attempt}: {type(error).__name__}, next seed")
                continue
        if result.trace.repairs:
            return list(exporter.get_finished_spans()), attempt
        print(f"seed {attempt}: valid without a repair, next seed")
    raise SystemExit(f"no repaired run that ended valid in seeds {seed}..{seed + tries - 1}")


def describe(spans: list[ReadableSpan]) -> None:
    """Print each span with its arq and GenAI attributes and its events."""
    origin = min(s.start_time or 0 for s in spans)
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        start = ((span.start_time or 0) - origin) / 1e6
        length = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        print(f"{span.name} [{span.kind.name}] at {start:.0f} ms for {length:.0f} ms")
        for key, value in sorted((span.attributes or {}).items()):
            print(f"    {key} = {value!s}")
        for event in span.events:
            at = (event.timestamp - origin) / 1e6
            print(f"    event {event.name} at {at:.0f} ms: {dict(event.attributes or {})}")


def draw(spans: list[ReadableSpan], out: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(spans, key=lambda s: s.start_time or 0)
    origin = ordered[0].start_time or 0

    def seconds(ns: int | None) -> float:
        return ((ns or 0) - origin) / 1e9

    figure, axes = plt.subplots(figsize=(11, 1.4 + 0.8 * len(ordered)))
    colours = {"POST": "#9e9e9e", "arq.run": "#5c6bc0", "chat": "#26a69a"}
    for row, span in enumerate(ordered):
        start, end = seconds(span.start_time), seconds(span.end_time)
        colour = next(c for prefix, c in colours.items() if span.name.startswith(prefix))
        axes.barh(row, end - start, left=start, height=0.45, color=colour, alpha=0.85)
        attributes = dict(span.attributes or {})
        label = f"{end - start:.1f} s"
        if span.name.startswith("chat"):
            kind = attributes.get("arq.call.kind", "")
            redo = attributes.get("arq.repair.step")
            label += f": {kind}{f' from {redo}' if redo else ''}, "
            label += f"{attributes.get('gen_ai.usage.output_tokens')} output tokens"
        elif span.name.startswith("arq.run"):
            repairs = attributes.get("arq.repairs")
            label += f": {attributes.get('arq.outcome')} after {repairs} repair(s)"
        axes.annotate(
            label, (end, row), xytext=(5, 0), textcoords="offset points", va="center", fontsize=8
        )
        for number, event in enumerate(span.events):
            failed = event.name == "arq.step.failed"
            at = seconds(event.timestamp)
            marker, colour = ("X", "#e53935") if failed else ("o", "#2e7d32")
            axes.plot(at, row, marker, color=colour, markersize=7)
            step = str(dict(event.attributes or {}).get("arq.step", ""))
            axes.annotate(
                step, (at, row), xytext=(-4, 10 + 9 * (number % 2)),
                textcoords="offset points", fontsize=7, ha="right",
            )  # fmt: skip
    axes.plot([], [], "o", color="#2e7d32", label="step accepted (span event)")
    checks = sorted(
        {str(dict(e.attributes or {}).get("arq.check")) for s in spans for e in s.events} - {"None"}
    )
    axes.plot([], [], "X", color="#e53935", label=f"step failed: check {', '.join(checks)}")
    axes.legend(loc="lower left", fontsize=8, frameon=False)
    axes.set_yticks(range(len(ordered)), [s.name for s in ordered], fontsize=8)
    axes.set_ylim(len(ordered) - 0.4, -0.7)
    axes.set_xlabel("seconds since the request span started")
    axes.set_xlim(0, max(seconds(s.end_time) for s in ordered) * 1.32 or 1)
    axes.set_title(
        f"A repaired run of the demo schema on the embedded model (seed {seed}),"
        " as OpenTelemetry's SDK exported it",
        fontsize=10,
    )
    figure.subplots_adjust(left=0.22, right=0.98, top=0.9, bottom=0.14)
    with arq.trace.replacing(out) as temp:
        figure.savefig(temp, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/telemetry-waterfall.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.5)
    args = parser.parse_args()
    spans, seed = repaired_run(args.seed, args.tries, args.temperature)
    describe(spans)
    draw(spans, args.out, seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
