"""The spans and metrics of one run, made from arq's own records as the run goes.

`RunObserver` opens the run span when the run starts and makes it the current span while
the run goes (so spans of other instrumentation, an HTTP client's, nest under it). Each
model call becomes a `chat {model}` span when it ends, read from its `Attempt`: started
when the call began, with one event per step checked, at the moment the step completed.
The only module of arq that imports OpenTelemetry (its API, never the SDK).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context, metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from arq.backends.base import Backend, Settings
from arq.errors import OutputParseError, StepError
from arq.schema import Reasoning, steps
from arq.telemetry.attributes import (
    SCHEMA_URL,
    capture_mode,
    input_messages,
    output_messages,
    provider_of,
    system_instructions,
)
from arq.trace import Attempt, Trace, redact

if TYPE_CHECKING:
    from arq.telemetry import Telemetry

__all__ = ["Instruments", "RunObserver"]

_SCOPE = "arq"
# the bucket boundaries the GenAI conventions advise for these two histograms
_TOKEN_BUCKETS = [4.0**i for i in range(14)]
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]
_CONTENT_EVENT = "gen_ai.client.inference.operation.details"


class Instruments:
    """The tracer, and the metric instruments every run of one `Telemetry` records to."""

    def __init__(
        self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
    ) -> None:
        self.tracer = trace.get_tracer(
            _SCOPE, schema_url=SCHEMA_URL, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(_SCOPE, schema_url=SCHEMA_URL, meter_provider=meter_provider)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.runs = meter.create_counter(
            "arq.runs", unit="{run}", description="Runs of a reasoning schema, by outcome."
        )
        self.repairs = meter.create_histogram(
            "arq.run.repairs",
            unit="{repair}",
            description="Repair calls per run.",
            explicit_bucket_boundaries_advisory=[0.0, 1.0, 2.0, 3.0, 5.0, 8.0],
        )
        self.first_step = meter.create_histogram(
            "arq.run.first_step.duration",
            unit="s",
            description="Time from the start of a run to its first accepted step.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )


class RunObserver:
    """Records one run: its span, its calls' spans and step events, its metrics.

    Args:
        instruments: Where the spans and metrics go.
        schema: The run's schema.
        backend: The run's backend (its model name and provider).
        telemetry: The executor's settings (content capture, call spans, provider name).
    """

    def __init__(
        self,
        instruments: Instruments,
        schema: type[Reasoning],
        backend: Backend,
        telemetry: Telemetry,
    ) -> None:
        self.instruments = instruments
        self.schema = schema.__name__
        self.model = backend.name
        self.provider, in_process = provider_of(backend, telemetry.provider_name)
        self.kind = SpanKind.INTERNAL if in_process else SpanKind.CLIENT
        self.capture = capture_mode(telemetry.capture_content)
        self.call_spans = telemetry.call_spans
        self.started = time.time_ns()
        self.first_step: int | None = None  # when the first step was accepted, in ns
        self.span = instruments.tracer.start_span(
            f"arq.run {self.schema}",
            kind=SpanKind.INTERNAL,
            attributes={"arq.schema": self.schema, "arq.steps": len(steps(schema))},
            start_time=self.started,
        )
        self.parent = trace.set_span_in_context(self.span)
        self.token: Token[Context] | None = None
        self.ok = False

    def attach(self) -> None:
        """Make the run span the current span."""
        self.token = context.attach(self.parent)

    def finish(
        self, trace_: Trace, accepted: Mapping[str, Any], error: BaseException | None
    ) -> None:
        """The run ended, with a valid output or with `error`: end its span, record its
        metrics, and restore the caller's current span."""
        if self.token is not None and trace.get_current_span() is self.span:
            # the same context that attached it: a run closed from another (a generator
            # collected elsewhere) has nothing to restore there
            context.detach(self.token)
        self.token = None
        outcome = "ok" if self.ok else _error_type(error)
        usage = trace_.usage
        attempts = trace_.attempts
        span = self.span
        span.set_attributes(
            {
                "arq.outcome": outcome,
                "arq.repairs": trace_.repairs,
                "arq.retries": sum(1 for a in attempts if a.kind == "retry"),
                "arq.calls": len(attempts),
                "arq.usage.input_tokens": usage.prompt_tokens,
                "arq.usage.output_tokens": usage.completion_tokens,
                "arq.usage.estimated": usage.estimated,
                "arq.steps.accepted": list(accepted),
            }
        )
        if not self.ok:
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, _message(error)))
        span.end()
        labels = {"arq.schema": self.schema, "arq.outcome": outcome}
        self.instruments.runs.add(1, labels)
        self.instruments.repairs.record(trace_.repairs, labels)
        if self.first_step is not None:
            seconds = (self.first_step - self.started) / 1e9
            self.instruments.first_step.record(seconds, {"arq.schema": self.schema})

    def call_ended(self, attempt: Attempt, settings: Settings, error: BaseException | None) -> None:
        """Record one model call from its `Attempt`, once it has ended (with `error`)."""
        end = time.time_ns()
        # the call's own clock is the event loop's: its start is never before the run's
        start = max(end - int(attempt.elapsed * 1e9), self.started)
        if self.first_step is None:
            accepted = next((s for s in attempt.steps if s.error is None), None)
            if accepted is not None:
                self.first_step = start + int(accepted.elapsed * 1e9)
        if not self.call_spans:
            self._step_events(self.span, attempt, error, start)
            return
        common: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
        }
        span = self.instruments.tracer.start_span(
            f"chat {self.model}",
            context=self.parent,
            kind=self.kind,
            attributes=self._call_attributes(common, attempt, settings),
            start_time=start,
        )
        self._step_events(span, attempt, error, start)
        if self.capture != "NO_CONTENT":
            self._content(span, attempt)
        failure = None if error is None or _output_error(error) else _error_type(error)
        if failure is not None:
            span.set_attribute("error.type", failure)
            span.set_status(Status(StatusCode.ERROR, _message(error)))
            common["error.type"] = failure
        elif error is not None:
            span.set_attribute("arq.output_error", type(error).__name__)
        span.end(end_time=end)
        self.instruments.duration.record(attempt.elapsed, common)
        common.pop("error.type", None)
        if attempt.usage.prompt_tokens or attempt.usage.completion_tokens:
            record = self.instruments.token_usage.record
            record(attempt.usage.prompt_tokens, {**common, "gen_ai.token.type": "input"})
            record(attempt.usage.completion_tokens, {**common, "gen_ai.token.type": "output"})

    def _call_attributes(
        self, common: dict[str, AttributeValue], attempt: Attempt, settings: Settings
    ) -> dict[str, AttributeValue]:
        usage = attempt.usage
        attributes: dict[str, AttributeValue] = {
            **common,
            "gen_ai.output.type": "json",
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "arq.usage.estimated": usage.estimated,
            "arq.call.number": attempt.number,
            "arq.call.kind": attempt.kind,
            "arq.call.stopped_early": attempt.stopped_early,
        }
        temperature = settings.first_step_temperature
        if temperature is None:
            temperature = settings.temperature
        if temperature is not None:
            attributes["gen_ai.request.temperature"] = temperature
        if settings.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = settings.max_tokens
        if settings.seed is not None:
            attributes["gen_ai.request.seed"] = settings.seed
        if attempt.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = [attempt.finish_reason]
        if attempt.kind == "repair":
            repair = attempt.request.metadata.get("repair") or {}
            if "step" in repair:
                attributes["arq.repair.step"] = repair["step"]
        return attributes

    def _step_events(
        self, span: trace.Span, attempt: Attempt, error: BaseException | None, start: int
    ) -> None:
        """One event per step checked in the call, at the moment it completed."""
        for record in attempt.steps:
            attributes: dict[str, AttributeValue] = {
                "arq.step": record.name,
                "arq.step.elapsed": record.elapsed,
            }
            if span is self.span:  # no call spans: the run span says which call it was
                attributes["arq.call.number"] = attempt.number
            name = "arq.step.accepted"
            if record.error is not None:
                name = "arq.step.failed"
                attributes["arq.error.message"] = redact(record.error)
                if isinstance(error, StepError) and error.step == record.name:
                    attributes["arq.check"] = _check_name(error)
            span.add_event(name, attributes, timestamp=start + int(record.elapsed * 1e9))
        if isinstance(error, OutputParseError):
            attributes = {"arq.error.message": redact(str(error)), "arq.problem": error.problem}
            if error.step is not None:
                attributes["arq.step"] = error.step
            span.add_event("arq.output.invalid", attributes)

    def _content(self, span: trace.Span, attempt: Attempt) -> None:
        content: dict[str, AttributeValue] = {
            "gen_ai.input.messages": input_messages(attempt.request),
            "gen_ai.output.messages": output_messages(attempt),
        }
        system = system_instructions(attempt.request)
        if system is not None:
            content["gen_ai.system_instructions"] = system
        if self.capture in ("SPAN_ONLY", "SPAN_AND_EVENT"):
            span.set_attributes(content)
        if self.capture in ("EVENT_ONLY", "SPAN_AND_EVENT"):
            span.add_event(_CONTENT_EVENT, content)


def _output_error(error: BaseException) -> bool:
    """A step or the JSON failed: the call itself went well, and a repair follows."""
    return isinstance(error, StepError | OutputParseError)


def _error_type(error: BaseException | None) -> str:
    if error is None:
        return "_OTHER"
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(error).__name__


def _message(error: BaseException | None) -> str:
    return redact(str(error))[:500] if error is not None else ""


def _check_name(error: StepError) -> str:
    """The cross-step check that failed, or the kind of the first field error."""
    if error.check:
        return error.check
    kinds = [str(e.get("type", "")) for e in error.errors if e.get("type")]
    return kinds[0] if kinds else "invalid"
