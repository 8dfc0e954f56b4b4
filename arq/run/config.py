"""`RunConfig`: what a run needs, fixed and checked once before any run starts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from arq.backends.base import Backend, Settings
from arq.errors import InvalidArgumentError
from arq.outcome import UnconvergedPolicy
from arq.prompt import PromptBuilder
from arq.retry import RetryPolicy
from arq.telemetry import Telemetry
from arq.trace import AttemptKind

__all__ = ["RunConfig"]


@dataclass(frozen=True)
class RunConfig:
    """The settings every run of an executor shares; `Executor` builds one from its arguments.

    Attributes:
        backend: The model service.
        builder: Renders the prompts and the repair turns.
        max_repairs: Repair calls allowed per run after output errors; 0 never repairs.
        retry: Transport retries per call, a separate budget from repairs.
        settings: Sampling settings of the first call.
        repair_temperature: Temperature of the step a repair redoes (None: the backend's).
        deadline: Seconds a whole run may take, retries and repairs included.
        idle_timeout: Seconds of silence allowed between two chunks of a stream.
        telemetry: What the runs report to OpenTelemetry (`arq.telemetry.Telemetry`).
        advisory_repairs: Repairs allowed per advisory check, apart from `max_repairs`;
            then its failures are let through and recorded (`arq.checks.severity`).
        unconverged: When repairs do not converge: "raise" `ConvergenceError`, or "return"
            an `arq.outcome.Unconverged`.
        continuation_max_tokens: Output token limit of a call that continues an answer cut
            at `settings.max_tokens` (None: twice that limit, or the backend's own when
            there is none).

    Raises:
        InvalidArgumentError: `backend` does not implement `arq.backends.Backend`, or a
            count or a time is out of range.
    """

    backend: Backend
    builder: PromptBuilder = field(default_factory=PromptBuilder)
    max_repairs: int = 2
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    settings: Settings = field(default_factory=Settings)
    repair_temperature: float | None = None
    deadline: float | None = None
    idle_timeout: float | None = 60.0
    telemetry: Telemetry = field(default_factory=Telemetry)
    continuation_max_tokens: int | None = None
    unconverged: UnconvergedPolicy = "raise"
    advisory_repairs: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.backend, Backend):
            raise InvalidArgumentError(
                f"backend must implement arq.backends.Backend, not {self.backend!r}"
            )
        if self.unconverged not in ("raise", "return"):
            raise InvalidArgumentError(
                f'unconverged must be "raise" or "return", not {self.unconverged!r}'
            )
        for name, count in (
            ("max_repairs", self.max_repairs),
            ("advisory_repairs", self.advisory_repairs),
        ):
            if count < 0:
                raise InvalidArgumentError(f"{name} must not be negative, not {count}")
        for name, value in (("deadline", self.deadline), ("idle_timeout", self.idle_timeout)):
            if value is not None and value <= 0:
                raise InvalidArgumentError(f"{name} must be positive seconds or None, not {value}")
        max_tokens = self.settings.max_tokens
        if max_tokens is not None and max_tokens < 1:
            raise InvalidArgumentError(f"max_tokens must be at least 1, not {max_tokens}")
        more = self.continuation_max_tokens
        if more is not None and more < max(max_tokens or 1, 1):
            raise InvalidArgumentError(
                f"continuation_max_tokens must be at least max_tokens ({max_tokens or 1}),"
                f" not {more}"
            )

    def settings_for(self, kind: AttemptKind, number: int) -> Settings:
        """The settings of call `number`: the first call's as they are; a later call's
        with the seed moved on, and its first step (the one a repair redoes) sampled at
        `repair_temperature`; a continuation's with the first call's temperatures and
        `continuation_max_tokens` (the step it redoes was cut, it did not fail)."""
        settings = self.settings
        if kind == "first":
            return settings
        seed = None if settings.seed is None else settings.seed + number - 1
        if kind == "continuation":
            return replace(settings, max_tokens=self.continuation_tokens, seed=seed)
        return replace(settings, first_step_temperature=self.repair_temperature, seed=seed)

    @property
    def continuation_tokens(self) -> int | None:
        """The output token limit of a continuation: `continuation_max_tokens`, or twice
        `max_tokens`, or None (the backend's) when neither is set."""
        if self.continuation_max_tokens is not None:
            return self.continuation_max_tokens
        limit = self.settings.max_tokens
        return None if limit is None else 2 * limit
