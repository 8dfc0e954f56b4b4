"""Client CPU that OpenTelemetry adds to each call: arq with telemetry off, with the
OpenTelemetry API and no SDK (the global no-op providers), and with the SDK recording
through a `BatchSpanProcessor` into an in-memory exporter plus an in-memory metric reader.

The executors share one `OpenAIBackend` streaming the same reply from the same zero-delay
loopback server (in a child process, as in `bench/overhead.py`, so its work is not timed).
Calls are interleaved, each side first in turn, so the machine's drift hits every side
alike. Each call is one run: a run span, a call span with one event per step, and the
metrics. Prints the median and mean client CPU per call (the batch processor's export
thread included: it is this process's CPU) and the added CPU: the median of the per-round
differences with "off", with its standard error. A second executor with telemetry off
shows the noise floor: a call costs far more CPU than telemetry adds.

Then it times the telemetry work alone: the observer of one run replayed on the trace of a
real run (open the run span, record the call, end the run, the batch processor's export
flushed and counted), in interleaved batches. A tight loop keeps that code and its data in
the CPU's caches, so this is a lower bound of what a call pays.

    python bench/telemetry_overhead.py [--calls 400] [--steps 6] [--repeats 250] [--batches 20]

Target: at most 0.3 ms of added client CPU per call with the SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

import opentelemetry.sdk
from loopback import server_process
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import create_model

import arq
import arq.testing
from arq.backends import OpenAIBackend, Settings
from arq.telemetry import Telemetry


def make_schema(n: int) -> type[arq.Reasoning]:
    fields: dict[str, Any] = {
        f"step_{i}": (str, arq.query(f"Question {i}?", max_length=200)) for i in range(1, n)
    }
    fields["answer"] = (str, arq.answer("The answer."))
    return create_model("Bench", __base__=arq.Reasoning, __doc__="A benchmark task.", **fields)


async def measure(
    executors: dict[str, arq.Executor], schema: type[arq.Reasoning], rounds: int
) -> dict[str, list[float]]:
    context = {"question": "Why?"}
    for executor in executors.values():  # warm up: connections, caches, imports
        for _ in range(10):
            await executor.arun(schema, context)
    cpu: dict[str, list[float]] = {name: [] for name in executors}
    names = list(executors)
    for number in range(rounds):
        turn = number % len(names)  # each side goes first as often as the others
        for name in names[turn:] + names[:turn]:
            start = time.process_time()
            await executors[name].arun(schema, context)
            cpu[name].append(time.process_time() - start)
    return cpu


def paired(samples: list[float], base: list[float]) -> tuple[float, float]:
    """The median of the per-round differences with `base`, and its standard error
    (bootstrap, 300 resamples): drift between rounds cancels out."""
    differences = [a - b for a, b in zip(samples, base, strict=True)]
    chooser = random.Random(0)
    medians = [
        statistics.median(chooser.choices(differences, k=len(differences))) for _ in range(300)
    ]
    return statistics.median(differences), statistics.stdev(medians)


def replay(telemetry: Telemetry, result: arq.Result[Any], repeats: int) -> float:
    """CPU seconds per run of the telemetry work alone, replayed on `result`'s trace."""
    trace = result.trace
    accepted = result.output.model_dump()
    backend = arq.testing.ScriptedBackend(name=trace.model)
    settings = Settings()
    schema = type(result.output)
    start = time.process_time()
    for _ in range(repeats):
        observer = telemetry.observe(schema, backend)
        assert observer is not None
        observer.attach()
        for attempt in trace.attempts:
            observer.call_ended(attempt, settings, None)
        observer.ok = True
        observer.finish(trace, accepted, None)
    provider = telemetry.tracer_provider
    if isinstance(provider, TracerProvider):
        provider.force_flush()
    return (time.process_time() - start) / repeats


async def run(args: argparse.Namespace) -> None:
    schema = make_schema(args.steps)
    text = json.dumps({name: f"value of {name}, " + "x" * 60 for name in schema.model_fields})
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    sdk = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    with server_process(text) as base_url:
        backend = OpenAIBackend("fake-model", base_url=base_url)
        executors = {
            "off": arq.Executor(backend, telemetry=Telemetry(enabled=False)),
            "off (a second one)": arq.Executor(backend, telemetry=Telemetry(enabled=False)),
            "API, no SDK": arq.Executor(backend, telemetry=Telemetry()),
            "SDK, batch + memory": arq.Executor(backend, telemetry=sdk),
        }
        cpu = await measure(executors, schema, args.calls)
        result = await executors["off"].arun(schema, {"question": "Why?"})
        await backend.aclose()
    tracer_provider.force_flush()
    spans = len(exporter.get_finished_spans())
    exporter.clear()
    alone: dict[str, list[float]] = {"API, no SDK": [], "SDK, batch + memory": []}
    for _ in range(args.batches):  # interleaved batches; their median is quoted
        alone["API, no SDK"].append(replay(Telemetry(), result, args.repeats))
        alone["SDK, batch + memory"].append(replay(sdk, result, args.repeats))
        exporter.clear()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    print(
        f"{args.steps}-step schema, {len(text)}-char reply, {args.calls} calls each,"
        f" interleaved; opentelemetry-sdk {opentelemetry.sdk.version.__version__},"
        f" Python {sys.version.split()[0]}; {spans} spans exported"
    )
    print(f"{'':20} {'median CPU us':>14} {'mean CPU us':>12} {'added us (paired median)':>26}")
    for name, samples in cpu.items():
        added, error = paired(samples, cpu["off"])
        print(
            f"{name:20} {statistics.median(samples) * 1e6:>14.0f}"
            f" {statistics.fmean(samples) * 1e6:>12.0f}"
            f" {added * 1e6:>18.0f} ± {error * 1e6:<5.0f}"
        )
    print(
        f"the telemetry work alone, one run of one call, replayed: median of {args.batches}"
        f" batches of {args.repeats}"
    )
    for name, batches in alone.items():
        print(f"{name:20} {statistics.median(batches) * 1e6:>14.0f} us CPU per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=250)
    parser.add_argument("--batches", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
