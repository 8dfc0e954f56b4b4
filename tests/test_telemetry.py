"""OpenTelemetry spans and metrics of runs, read back through the SDK's in-memory exporters.

The run of every test fails once at its third step (an order id the conversation does not
contain) and is repaired: on the scripted backend, and on the fake server through the real
openai SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from arq import Executor, Reasoning, answer, query
from arq.backends import OpenAIBackend
from arq.checks import verbatim_in
from arq.errors import ConvergenceError, DeadlineExceededError, InvalidArgumentError
from arq.events import StepAccepted
from arq.retry import RetryPolicy
from arq.telemetry import Telemetry, capture_mode
from arq.testing import FakeOpenAIServer, Reply, ScriptedBackend, Status, Usage
from tests.bench_scripts import bench_script


class Ticket(Reasoning):
    """Triage a support ticket."""

    request: str = query("What does the customer ask for?")
    product: str = query("Which product is it about?")
    order_id: Annotated[str, verbatim_in("conversation")] = query(
        "Which order id does the customer give?", instruction="Copy it exactly."
    )
    answer: str = answer("The reply to send.")


KEY = "sk-test-telemetry-0123456789"
CONTEXT = {"conversation": "My kettle from order A-1234 leaks. I want a refund."}
FIRST = '{"request": "a refund", "product": "kettle", "order_id": "Z-999", "answer": "x"}'
REPAIR = '{"order_id": "A-1234", "answer": "We will refund order A-1234."}'
STEPS = ["request", "product", "order_id", "answer"]


class Recorded:
    """Providers that keep every span and metric in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, **options: Any) -> Telemetry:
        return Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def spans(self) -> list[ReadableSpan]:
        return sorted(self.exporter.get_finished_spans(), key=lambda s: s.start_time or 0)

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:  # nothing was recorded
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def everything(self) -> str:
        """Every span's and metric's text, for looking for a secret."""
        parts = [span.to_json() for span in self.exporter.get_finished_spans()]
        data = self.reader.get_metrics_data()
        if data is not None:
            parts.append(data.to_json())
        return "\n".join(parts)


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    made = Recorded()
    yield made
    made.tracer_provider.shutdown()
    made.meter_provider.shutdown()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


def scripted(recorded: Recorded, *replies: str, **options: Any) -> Executor:
    backend = ScriptedBackend(*(replies or (FIRST, REPAIR)), name="scripted-model")
    return Executor(backend, telemetry=recorded.telemetry(**options))


def over_http(server: FakeOpenAIServer, *replies: Reply | Status, **options: Any) -> Executor:
    server.script(*(replies or (Reply(FIRST), Reply(REPAIR, usage=Usage(50, 12)))))
    backend = OpenAIBackend("fake-model", base_url=server.base_url, api_key=KEY)
    retry = RetryPolicy(sleep=_no_sleep, jitter=0)
    return Executor(backend, retry=retry, temperature=0.2, max_tokens=300, seed=7, **options)


async def _no_sleep(_: float) -> None:
    return None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- the span tree ---------------------------------------------------------------------


def test_a_repaired_run_is_one_run_span_over_two_call_spans_under_the_callers(
    recorded: Recorded,
) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    with scripted(recorded) as executor, tracer.start_as_current_span("request") as parent:
        result = executor.run(Ticket, CONTEXT)
    assert result.output.order_id == "A-1234"

    (caller,) = recorded.named("request")
    (run,) = recorded.named("arq.run")
    calls = recorded.named("chat")
    assert [s.name for s in recorded.spans()] == [
        "request",
        "arq.run Ticket",
        "chat scripted-model",
        "chat scripted-model",
    ]
    assert run.parent is not None
    assert run.parent.span_id == parent.get_span_context().span_id == caller.context.span_id
    assert all(c.parent is not None and c.parent.span_id == run.context.span_id for c in calls)
    assert {s.context.trace_id for s in recorded.spans()} == {caller.context.trace_id}
    assert run.kind == SpanKind.INTERNAL
    assert [c.kind for c in calls] == [SpanKind.INTERNAL, SpanKind.INTERNAL]  # in-process
    first, repair = calls
    assert first.start_time is not None
    assert first.end_time is not None
    assert repair.start_time is not None
    assert first.end_time <= repair.start_time


def test_the_run_span_says_what_happened(recorded: Recorded) -> None:
    with scripted(recorded) as executor:
        result = executor.run(Ticket, CONTEXT)
    (run,) = recorded.named("arq.run")
    usage = result.usage
    assert attrs(run) == {
        "arq.schema": "Ticket",
        "arq.steps": 4,
        "arq.outcome": "ok",
        "arq.repairs": 1,
        "arq.retries": 0,
        "arq.calls": 2,
        "arq.usage.input_tokens": usage.prompt_tokens,
        "arq.usage.output_tokens": usage.completion_tokens,
        "arq.usage.estimated": True,  # the first stream was closed at the failed step
        "arq.steps.accepted": tuple(STEPS),
    }
    assert usage.prompt_tokens > 0
    assert run.status.status_code == StatusCode.UNSET


def test_call_spans_carry_the_genai_attributes_and_arqs(recorded: Recorded) -> None:
    with scripted(recorded) as executor:
        result = executor.run(Ticket, CONTEXT)
    first, repair = (attrs(s) for s in recorded.named("chat"))
    one, two = result.trace.attempts
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "arq.scripted",
        "gen_ai.request.model": "scripted-model",
        "gen_ai.output.type": "json",
    }
    assert first == {
        **common,
        "gen_ai.usage.input_tokens": one.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": one.usage.completion_tokens,
        "arq.usage.estimated": True,
        "arq.call.number": 1,
        "arq.call.kind": "first",
        "arq.call.stopped_early": True,
        "arq.output_error": "StepError",
    }
    assert repair == {
        **common,
        "gen_ai.usage.input_tokens": two.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": two.usage.completion_tokens,
        "gen_ai.response.finish_reasons": ("stop",),
        "arq.usage.estimated": False,
        "arq.call.number": 2,
        "arq.call.kind": "repair",
        "arq.call.stopped_early": False,
        "arq.repair.step": "order_id",
    }


def test_step_events_show_the_reasoning_in_order(recorded: Recorded) -> None:
    with scripted(recorded) as executor:
        executor.run(Ticket, CONTEXT)
    first, repair = recorded.named("chat")
    names = [(e.name, dict(e.attributes or {}).get("arq.step")) for e in first.events]
    assert names == [
        ("arq.step.accepted", "request"),
        ("arq.step.accepted", "product"),
        ("arq.step.failed", "order_id"),
    ]
    failed = dict(first.events[2].attributes or {})
    assert failed["arq.check"] == "value_error"
    assert "Z-999" in str(failed["arq.error.message"])
    assert first.start_time is not None
    assert first.end_time is not None
    times = [e.timestamp for e in first.events]
    assert times == sorted(times)
    assert first.start_time <= times[0]
    assert times[-1] <= first.end_time
    assert [dict(e.attributes or {})["arq.step"] for e in repair.events] == ["order_id", "answer"]
    assert {e.name for e in repair.events} == {"arq.step.accepted"}
    elapsed = dict(repair.events[0].attributes or {})["arq.step.elapsed"]
    assert isinstance(elapsed, float)
    assert elapsed >= 0


def test_metrics_in_the_genai_conventions_and_arqs_own(recorded: Recorded) -> None:
    with scripted(recorded) as executor:
        result = executor.run(Ticket, CONTEXT)
    tokens = recorded.points("gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens}
    assert isinstance(by_type["input"], HistogramDataPoint)
    assert by_type["input"].sum == result.usage.prompt_tokens
    assert by_type["output"].sum == result.usage.completion_tokens
    assert by_type["input"].count == 2
    assert dict(by_type["input"].attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "arq.scripted",
        "gen_ai.request.model": "scripted-model",
        "gen_ai.token.type": "input",
    }
    (duration,) = recorded.points("gen_ai.client.operation.duration")
    assert duration.count == 2
    assert duration.sum == pytest.approx(sum(a.elapsed for a in result.trace.attempts))
    (runs,) = recorded.points("arq.runs")
    assert runs.value == 1
    assert dict(runs.attributes) == {"arq.schema": "Ticket", "arq.outcome": "ok"}
    (repairs,) = recorded.points("arq.run.repairs")
    assert (repairs.count, repairs.sum) == (1, 1)
    (first_step,) = recorded.points("arq.run.first_step.duration")
    assert first_step.count == 1
    assert 0 <= first_step.sum < 5


# --- through the real openai SDK over loopback ---------------------------------------------


def test_over_http_the_call_spans_are_client_spans_of_provider_openai(
    recorded: Recorded, server: FakeOpenAIServer
) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    with (
        over_http(server, telemetry=recorded.telemetry()) as executor,
        tracer.start_as_current_span("request"),
    ):
        executor.run(Ticket, CONTEXT)
    (caller,) = recorded.named("request")
    (run,) = recorded.named("arq.run")
    first, repair = recorded.named("chat")
    assert run.parent is not None
    assert run.parent.span_id == caller.context.span_id
    assert first.name == "chat fake-model"
    assert (first.kind, repair.kind) == (SpanKind.CLIENT, SpanKind.CLIENT)
    settings = {
        "gen_ai.provider.name": "openai",  # whatever the base URL
        "gen_ai.request.model": "fake-model",
        "gen_ai.request.max_tokens": 300,
    }
    assert settings.items() <= attrs(first).items()
    assert attrs(first)["gen_ai.request.temperature"] == 0.2
    assert attrs(first)["gen_ai.request.seed"] == 7
    assert attrs(repair)["gen_ai.request.seed"] == 8  # a later call moves the seed on
    assert attrs(repair)["gen_ai.usage.input_tokens"] == 50
    assert attrs(repair)["gen_ai.usage.output_tokens"] == 12
    assert attrs(repair)["arq.usage.estimated"] is False
    assert attrs(repair)["gen_ai.response.finish_reasons"] == ("stop",)
    assert [e.name for e in first.events] == ["arq.step.accepted"] * 2 + ["arq.step.failed"]
    assert attrs(run)["arq.outcome"] == "ok"
    assert KEY not in recorded.everything()


def test_a_transport_retry_is_a_failed_call_span(
    recorded: Recorded, server: FakeOpenAIServer
) -> None:
    replies = Status(503), Reply(FIRST), Reply(REPAIR)
    with over_http(server, *replies, telemetry=recorded.telemetry()) as executor:
        executor.run(Ticket, CONTEXT)
    failed, first, _repair = recorded.named("chat")
    assert attrs(failed)["error.type"] == "BackendError"
    assert failed.status.status_code == StatusCode.ERROR
    assert "error.type" not in attrs(first)
    assert attrs(first)["arq.call.kind"] == "retry"
    (run,) = recorded.named("arq.run")
    assert (attrs(run)["arq.retries"], attrs(run)["arq.repairs"]) == (1, 1)
    errors = [p for p in recorded.points("gen_ai.client.operation.duration") if p.count == 1]
    assert [dict(p.attributes).get("error.type") for p in errors] == ["BackendError"]
    assert KEY not in recorded.everything()


def test_a_run_that_fails_is_an_error_span_with_its_error_type(recorded: Recorded) -> None:
    executor = scripted(recorded, FIRST, '{"order_id": "Z-999", "answer": "x"}')
    with executor, pytest.raises(ConvergenceError):
        executor.run(Ticket, CONTEXT)
    (run,) = recorded.named("arq.run")
    assert attrs(run)["arq.outcome"] == attrs(run)["error.type"] == "ConvergenceError"
    assert attrs(run)["arq.steps.accepted"] == ("request", "product")
    assert run.status.status_code == StatusCode.ERROR
    (runs,) = recorded.points("arq.runs")
    assert dict(runs.attributes)["arq.outcome"] == "ConvergenceError"


def test_a_deadline_mid_stream_ends_both_spans_with_its_error(
    recorded: Recorded, server: FakeOpenAIServer
) -> None:
    slow = Reply(FIRST, tokens_per_second=20)
    executor = over_http(server, slow, telemetry=recorded.telemetry(), deadline=0.3)
    with executor, pytest.raises(DeadlineExceededError):
        executor.run(Ticket, CONTEXT)
    (call,) = recorded.named("chat")
    (run,) = recorded.named("arq.run")
    assert attrs(call)["error.type"] == attrs(run)["error.type"] == "DeadlineExceededError"
    assert call.status.status_code == run.status.status_code == StatusCode.ERROR
    assert "deadline" in (run.status.description or "")


def test_an_abandoned_stream_ends_its_spans_as_cancelled(
    recorded: Recorded, server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    slow = Reply(FIRST, tokens_per_second=40)

    async def go() -> None:
        async with over_http(server, slow, telemetry=recorded.telemetry()) as executor:
            with tracer.start_as_current_span("handler"):
                async for event in executor.stream(Ticket, CONTEXT):
                    if isinstance(event, StepAccepted):
                        break  # the caller leaves after the first step
            assert trace.get_current_span().get_span_context().is_valid is False

    asyncio.run(go())
    (run,) = recorded.named("arq.run")
    (call,) = recorded.named("chat")
    assert attrs(run)["arq.outcome"] == attrs(call)["error.type"] == "cancelled"
    assert [e.name for e in call.events] == ["arq.step.accepted"]
    assert caplog.records == []  # no "Failed to detach context"


# --- content ---------------------------------------------------------------------------


def test_no_content_by_default(recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    with scripted(recorded) as executor:
        executor.run(Ticket, CONTEXT)
    text = recorded.everything()
    assert "gen_ai.input.messages" not in text
    assert "kettle" not in text
    assert "A-1234" not in text


def test_content_when_asked_with_no_key(recorded: Recorded, server: FakeOpenAIServer) -> None:
    context = {"conversation": f"My kettle from order A-1234 leaks. My key is {KEY}."}
    telemetry = recorded.telemetry(capture_content=True)
    with over_http(server, telemetry=telemetry) as executor:
        executor.run(Ticket, context)
    first, repair = recorded.named("chat")
    system = json.loads(str(attrs(first)["gen_ai.system_instructions"]))
    assert system[0]["type"] == "text"
    assert "Triage a support ticket." in system[0]["content"]
    messages = json.loads(str(attrs(first)["gen_ai.input.messages"]))
    assert messages[0]["role"] == "user"
    assert "My kettle from order A-1234 leaks." in messages[0]["parts"][0]["content"]
    output = json.loads(str(attrs(first)["gen_ai.output.messages"]))
    assert output[0]["role"] == "assistant"
    assert '"order_id": "Z-999"' in output[0]["parts"][0]["content"]
    repaired = json.loads(str(attrs(repair)["gen_ai.output.messages"]))
    assert repaired == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": REPAIR}],
            "finish_reason": "stop",
        }
    ]
    assert KEY not in recorded.everything()
    assert "***" in str(attrs(first)["gen_ai.input.messages"])


@pytest.mark.parametrize(
    ("value", "in_span", "in_event"),
    [
        ("true", True, False),
        ("SPAN_ONLY", True, False),
        ("EVENT_ONLY", False, True),
        ("span_and_event", True, True),
        ("NO_CONTENT", False, False),
        ("false", False, False),
    ],
)
def test_the_environment_variable_in_either_form(
    recorded: Recorded,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    in_span: bool,
    in_event: bool,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    with scripted(recorded) as executor:
        executor.run(Ticket, CONTEXT)
    first, _ = recorded.named("chat")
    assert ("gen_ai.input.messages" in attrs(first)) is in_span
    details = [e for e in first.events if e.name == "gen_ai.client.inference.operation.details"]
    assert bool(details) is in_event
    if details:
        assert "kettle" in str(dict(details[0].attributes or {})["gen_ai.output.messages"])


def test_the_executor_option_wins_over_the_environment(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with scripted(recorded, capture_content=False) as executor:
        executor.run(Ticket, CONTEXT)
    assert "gen_ai.input.messages" not in recorded.everything()


def test_capture_modes() -> None:
    assert capture_mode(True) == "SPAN_ONLY"
    assert capture_mode(False) == "NO_CONTENT"
    assert capture_mode(" Event_Only ") == "EVENT_ONLY"
    assert capture_mode("yes please") == "NO_CONTENT"
    with pytest.raises(InvalidArgumentError, match="SPAN_AND_EVENT"):
        Telemetry(capture_content="EVERYTHING")  # type: ignore[arg-type]


# --- turning parts off ---------------------------------------------------------------------


def test_without_call_spans_the_run_span_keeps_the_step_events(recorded: Recorded) -> None:
    with scripted(recorded, call_spans=False) as executor:
        executor.run(Ticket, CONTEXT)
    assert [s.name for s in recorded.spans()] == ["arq.run Ticket"]
    (run,) = recorded.spans()
    steps = [(e.name, dict(e.attributes or {})["arq.step"]) for e in run.events]
    assert steps == [
        ("arq.step.accepted", "request"),
        ("arq.step.accepted", "product"),
        ("arq.step.failed", "order_id"),
        ("arq.step.accepted", "order_id"),
        ("arq.step.accepted", "answer"),
    ]
    assert recorded.points("gen_ai.client.token.usage") == []
    assert recorded.points("gen_ai.client.operation.duration") == []
    assert len(recorded.points("arq.runs")) == 1


def test_disabled_telemetry_records_nothing(recorded: Recorded) -> None:
    with scripted(recorded, enabled=False) as executor:
        executor.run(Ticket, CONTEXT)
    assert recorded.spans() == []
    assert recorded.points("arq.runs") == []


def test_the_provider_name_can_be_named(recorded: Recorded) -> None:
    with scripted(recorded, provider_name="azure.ai.openai") as executor:
        executor.run(Ticket, CONTEXT)
    assert {attrs(s)["gen_ai.provider.name"] for s in recorded.named("chat")} == {"azure.ai.openai"}


# --- the caller's span, whatever the way in -------------------------------------------------


def _parents(recorded: Recorded, caller: str) -> set[int | None]:
    (span,) = recorded.named(caller)
    runs = recorded.named("arq.run")
    assert runs
    assert all(r.context.trace_id == span.context.trace_id for r in runs)
    return {r.parent.span_id if r.parent else None for r in runs} - {span.context.span_id}


def _reply(request: Any) -> str:
    """The first answer, or the repair's when the request starts at the order id."""
    return REPAIR if request.steps[0] == "order_id" else FIRST


def test_map_keeps_the_callers_span(recorded: Recorded) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    backend = ScriptedBackend(*[_reply] * 6)
    executor = Executor(backend, telemetry=recorded.telemetry())
    with executor, tracer.start_as_current_span("batch"):
        outcomes = executor.map(Ticket, [CONTEXT] * 3, concurrency=3)
    assert all(not isinstance(o, Exception) for o in outcomes)
    assert len(recorded.named("arq.run")) == 3
    assert _parents(recorded, "batch") == set()


def test_amap_and_stream_keep_the_callers_span(recorded: Recorded) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    backend = ScriptedBackend(*[_reply] * 6)

    async def go() -> None:
        async with Executor(backend, telemetry=recorded.telemetry()) as executor:
            with tracer.start_as_current_span("handler"):
                await executor.amap(Ticket, [CONTEXT] * 2)
                async for _ in executor.stream(Ticket, CONTEXT):
                    pass

    asyncio.run(go())
    assert len(recorded.named("arq.run")) == 3
    assert _parents(recorded, "handler") == set()


def test_run_from_another_thread_keeps_that_threads_span(recorded: Recorded) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    executor = scripted(recorded, FIRST, REPAIR, FIRST, REPAIR)

    def worker(name: str) -> None:
        with tracer.start_as_current_span(name):
            executor.run(Ticket, CONTEXT)

    with executor:
        threads = [threading.Thread(target=worker, args=(f"thread {i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for i in range(2):
        (span,) = recorded.named(f"thread {i}")
        children = [
            r
            for r in recorded.named("arq.run")
            if r.parent is not None and r.parent.span_id == span.context.span_id
        ]
        assert len(children) == 1


def test_a_run_outside_any_span_is_a_root(recorded: Recorded) -> None:
    with scripted(recorded) as executor:
        executor.run(Ticket, CONTEXT)
    (run,) = recorded.named("arq.run")
    assert run.parent is None


# --- global providers, and no OpenTelemetry at all ------------------------------------------

_SCHEMA = """
from typing import Annotated
import arq
from arq.checks import verbatim_in
from arq.testing import ScriptedBackend

class Ticket(arq.Reasoning):
    \"""Triage a support ticket.\"""

    request: str = arq.query("What does the customer ask for?")
    order_id: Annotated[str, verbatim_in("conversation")] = arq.query("Which order id?")
    answer: str = arq.answer("The reply to send.")

CONTEXT = {"conversation": "My kettle from order A-1234 leaks."}
FIRST = '{"request": "a refund", "order_id": "Z-999", "answer": "x"}'
REPAIR = '{"order_id": "A-1234", "answer": "We will refund it."}'
"""

_GLOBAL = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

executor = arq.Executor(ScriptedBackend(FIRST, REPAIR))  # made before the provider is set
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with executor:
    executor.run(Ticket, CONTEXT)
print(sorted(s.name for s in exporter.get_finished_spans()))
"""

# every import of opentelemetry fails, as when it is not installed
_NO_OTEL = """
import builtins, sys
real_import = builtins.__import__
def no_otel(name, *args, **kwargs):
    if name == "opentelemetry" or name.startswith("opentelemetry."):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return real_import(name, *args, **kwargs)
builtins.__import__ = no_otel
"""

_WITHOUT = """
from arq.telemetry import Telemetry

with arq.Executor(ScriptedBackend(FIRST, REPAIR)) as executor:
    result = executor.run(Ticket, CONTEXT)
print(result.output.order_id, result.trace.repairs, Telemetry().instruments())
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def _python(code: str) -> str:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_the_global_providers_by_default() -> None:
    names = "['arq.run Ticket', 'chat scripted', 'chat scripted']"
    assert _python(_SCHEMA + _GLOBAL).strip() == names


def test_without_opentelemetry_a_run_is_as_before() -> None:
    out = _python(_NO_OTEL + _SCHEMA + _WITHOUT)
    assert out.splitlines() == ["A-1234 1 None", "[]"]


# --- the bench scripts ---------------------------------------------------------------------


def test_the_overhead_bench_replays_the_telemetry_of_a_run(recorded: Recorded) -> None:
    overhead = bench_script("telemetry_overhead", "loopback")
    with scripted(recorded, enabled=False) as executor:
        result = executor.run(Ticket, CONTEXT)
    seconds = overhead.replay(recorded.telemetry(), result, 3)
    assert seconds > 0
    assert [s.name for s in recorded.spans()].count("arq.run Ticket") == 3
    assert len(recorded.named("chat")) == 6


def test_the_waterfall_is_drawn_from_exported_spans(recorded: Recorded, tmp_path: Path) -> None:
    waterfall = bench_script("telemetry_waterfall", "demo_runs")
    tracer = recorded.tracer_provider.get_tracer("test")
    with scripted(recorded) as executor, tracer.start_as_current_span("POST /support/reply"):
        executor.run(Ticket, CONTEXT)
    out = tmp_path / "waterfall.png"
    waterfall.draw(recorded.spans(), out, 0)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_the_how_to_example_runs_as_shown(tmp_path: Path) -> None:
    page = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "telemetry.md"
    code = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)[0]
    expected = [c.split("  # ")[-1] for c in code.splitlines() if c.startswith("print(")]
    assert _python(code).splitlines() == expected


def test_importing_arq_imports_no_opentelemetry_until_a_run_starts() -> None:
    code = (
        "import sys, arq, arq.cli, arq.telemetry\n"
        "print([m for m in sys.modules if m.startswith('opentelemetry')])\n"
    )
    assert _python(code).strip() == "[]"
