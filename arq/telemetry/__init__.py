"""OpenTelemetry spans and metrics of every run, in the GenAI semantic conventions.

With `opentelemetry-api` installed (`pip install 'arq-reasoning[otel]'`), every run of an
`Executor` opens a span `arq.run {Schema}` under the caller's current span, with a child
span `chat {model}` per model call carrying the step events, and records the GenAI client
metrics and arq's own. Without it, arq imports nothing from OpenTelemetry and records
nothing. `Telemetry` is the executor's option that says where spans go and what they hold:

```python
from arq.telemetry import Telemetry

executor = arq.Executor(backend, telemetry=Telemetry(capture_content=True))
```

The attributes follow the GenAI semantic conventions 1.37 (`gen_ai.provider.name`, the
`gen_ai.input.messages` JSON form), whatever `OTEL_SEMCONV_STABILITY_OPT_IN` says.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from arq.errors import InvalidArgumentError
from arq.telemetry.attributes import CAPTURE_ENV, MODES, CaptureMode, capture_mode

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from arq.backends.base import Backend
    from arq.schema import Reasoning
    from arq.telemetry.observer import Instruments, RunObserver

__all__ = ["CAPTURE_ENV", "CaptureMode", "Telemetry", "capture_mode"]


class Telemetry:
    """What the runs of an executor report to OpenTelemetry.

    Args:
        enabled: False records nothing, even with OpenTelemetry installed.
        tracer_provider: Where spans go; None: the global provider at the time of each run.
        meter_provider: Where metrics go; None: the global provider.
        capture_content: Record the prompt, the system instructions and the answer of
            each call (`gen_ai.input.messages`, `gen_ai.system_instructions`,
            `gen_ai.output.messages`): True, False, a `CaptureMode`, or None to follow
            `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`. Known secrets are masked
            (`arq.trace.redact`); API keys and headers are never recorded.
        call_spans: False leaves out the `chat {model}` spans and the GenAI client metrics,
            keeping the run span, its step events and arq's metrics: for a program that
            also runs the openai SDK's own instrumentation, which records those calls.
        provider_name: `gen_ai.provider.name` of the calls; None: the backend's
            (`openai` for `OpenAIBackend` whatever its base URL, `llama_cpp` for the
            embedded model).

    Raises:
        InvalidArgumentError: `capture_content` is a string that names no `CaptureMode`.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        capture_content: bool | CaptureMode | None = None,
        call_spans: bool = True,
        provider_name: str | None = None,
    ) -> None:
        if isinstance(capture_content, str) and capture_content not in MODES:
            raise InvalidArgumentError(
                f"capture_content must be a bool, None or one of {', '.join(MODES)},"
                f" not {capture_content!r}"
            )
        self.enabled = enabled
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.capture_content = capture_content
        self.call_spans = call_spans
        self.provider_name = provider_name
        self._lock = threading.Lock()
        self._instruments: Instruments | None = None
        self._missing = False  # opentelemetry-api is not installed

    def __repr__(self) -> str:
        return (
            f"Telemetry(enabled={self.enabled}, capture_content={self.capture_content!r},"
            f" call_spans={self.call_spans}, provider_name={self.provider_name!r})"
        )

    def observe(self, schema: type[Reasoning], backend: Backend) -> RunObserver | None:
        """The observer of one run of `schema`, or None when nothing is recorded."""
        instruments = self.instruments()
        if instruments is None:
            return None
        from arq.telemetry.observer import RunObserver

        return RunObserver(instruments, schema, backend, self)

    def instruments(self) -> Instruments | None:
        """The tracer, meter and instruments, made on first use; None when disabled or
        when `opentelemetry-api` is not installed."""
        if not self.enabled or self._missing:
            return None
        if self._instruments is None:
            with self._lock:
                if self._instruments is None and not self._missing:
                    self._instruments = _load(self)
                    self._missing = self._instruments is None
        return self._instruments


def _load(telemetry: Telemetry) -> Instruments | None:
    """The instruments, or None when OpenTelemetry cannot be imported."""
    try:
        from arq.telemetry.observer import Instruments
    except ImportError as error:
        if not (error.name or "").startswith("opentelemetry"):
            raise
        return None
    return Instruments(telemetry.tracer_provider, telemetry.meter_provider)
