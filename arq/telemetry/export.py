"""Exporting the spans and metrics of `arq run` and `arq eval`, as the environment says.

`OTEL_TRACES_EXPORTER` and `OTEL_METRICS_EXPORTER` name exporters as OpenTelemetry's own
configuration does (`console`, `otlp`, `otlp_proto_http`, ..., comma-separated; `none`
is nothing): each name is looked up among the installed exporters' entry points. The
console exporters write to stderr, so the command's output on stdout stays clean. When
a global provider is already set (`opentelemetry-instrument arq run ...` sets them),
the command uses it as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, TextIO

__all__ = ["exporting"]

_TRACES = "OTEL_TRACES_EXPORTER"
_METRICS = "OTEL_METRICS_EXPORTER"
_flushes: list[Callable[[], Any]] = []  # the providers configured here, once per process


@contextmanager
def exporting(err: TextIO) -> Iterator[None]:
    """Export what the block records, as the environment asks; flush it when it ends.

    A name that no installed exporter has, or OpenTelemetry's SDK missing, is said on
    `err` in one line, and the command runs without exporting.
    """
    if not _flushes and _wanted(_TRACES) | _wanted(_METRICS):
        try:
            _configure(err)
        except ImportError as error:
            err.write(
                f"arq: {_TRACES} or {_METRICS} is set but {error.name or 'OpenTelemetry'}"
                " is not installed: pip install opentelemetry-sdk (and"
                " opentelemetry-exporter-otlp for otlp)\n"
            )
            _flushes.append(lambda: None)  # said once
    try:
        yield
    finally:
        for flush in _flushes:
            flush()


def _wanted(variable: str) -> set[str]:
    names = {n.strip().lower() for n in os.environ.get(variable, "").split(",")}
    return names - {"", "none"}


def _configure(err: TextIO) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    spans = _wanted(_TRACES)
    if spans and not isinstance(trace.get_tracer_provider(), TracerProvider):
        tracer_provider = TracerProvider()  # its resource reads OTEL_SERVICE_NAME, ...
        for exporter in _exporters("opentelemetry_traces_exporter", spans, err):
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        _flushes.append(tracer_provider.force_flush)
    wanted = _wanted(_METRICS)
    if wanted and not isinstance(metrics.get_meter_provider(), MeterProvider):
        readers = [
            PeriodicExportingMetricReader(exporter)
            for exporter in _exporters("opentelemetry_metrics_exporter", wanted, err)
        ]
        meter_provider = MeterProvider(metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        _flushes.append(meter_provider.force_flush)


def _exporters(group: str, names: set[str], err: TextIO) -> list[Any]:
    """An exporter for each name, made as its package registers it; console to stderr."""
    found = {point.name: point for point in entry_points(group=group)}
    made = []
    for name in sorted(names):
        if name not in found:
            known = ", ".join(sorted(found)) or "none installed"
            err.write(f"arq: no {group} named {name!r} ({known}); not exported\n")
            continue
        exporter_class = found[name].load()
        made.append(exporter_class(out=sys.stderr) if name == "console" else exporter_class())
    return made
