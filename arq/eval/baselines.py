"""The strategies arq is compared with: one pass, and the whole-object re-ask loop.

Both run on any `arq.backends.Backend` with the executor's prompt builder and settings,
and check with the same `StepChecker`, but only once the whole answer has been read.
`single_pass` makes one call and checks every step without stopping at a failure.
`whole_object_reask` does what other structured-output libraries do: the rejected answer
goes back with the feedback of every error, and the whole object is asked for again.

A failed step is not accepted: cross-step checks that read it do not run, and a later
step whose validator needs it is recorded as failed. An answer cut by the token limit is
not accepted (not an exception); transport errors (`BackendError`) propagate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from arq.backends.base import Backend, Settings
from arq.errors import (
    InvalidArgumentError,
    OutputError,
    OutputParseError,
    StepError,
    TruncatedOutputError,
)
from arq.parsing import StepParser
from arq.prompt import PromptBuilder, Request
from arq.schema import Reasoning, steps
from arq.trace import Usage, estimate_tokens
from arq.validation import StepChecker

__all__ = ["BaselineResult", "CallOutcome", "check_answer", "single_pass", "whole_object_reask"]

SchemaT = TypeVar("SchemaT", bound=Reasoning)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One call of a baseline and how its whole answer fared.

    Attributes:
        text: The answer received.
        step_ok: Per step, in schema order: did it pass its checks?
        errors: Why the answer was rejected (empty when accepted).
        feedback: The same, written for the model (what a re-ask sends back).
        finish_reason: The service's finish reason.
        refused: The model refused, or the provider filtered the content.
        usage: Tokens of this call (estimated like the executor's when not reported).
        elapsed: Seconds the call took.
    """

    text: str
    step_ok: dict[str, bool]
    errors: list[str]
    feedback: list[str]
    finish_reason: str | None
    refused: bool
    usage: Usage
    elapsed: float

    @property
    def accepted(self) -> bool:
        """Every step passed and the whole object validated."""
        return not self.errors


@dataclass(slots=True)
class BaselineResult(Generic[SchemaT]):
    """What a baseline run produced.

    Attributes:
        output: The validated object, or None when no call produced one.
        accepted: Whether a call produced a valid object.
        step_ok: The first call's per-step outcome.
        calls: Calls made.
        completion_tokens: Output tokens summed over the calls.
        prompt_tokens: Prompt tokens summed over the calls.
        elapsed: Seconds for the whole run.
        errors: Why the last call was rejected (empty when accepted).
        attempts: Every call, in order.
    """

    output: SchemaT | None
    accepted: bool
    step_ok: dict[str, bool]
    calls: int
    completion_tokens: int
    prompt_tokens: int
    elapsed: float
    errors: list[str]
    attempts: list[CallOutcome] = field(default_factory=list)


def check_answer(
    schema: type[SchemaT],
    text: str,
    context: Mapping[str, Any] | None = None,
    *,
    tolerant: bool = False,
) -> tuple[SchemaT | None, dict[str, bool], list[OutputError]]:
    """Check every step of a whole answer, recording each failure and going on.

    Returns the validated object (None unless every step passed), the per-step outcome in
    schema order and the errors. With `tolerant`, prose around the object is skipped (for
    backends whose output is not constrained).
    """
    names = [s.name for s in steps(schema)]
    errors: list[OutputError] = []
    parser = StepParser(names)
    body = text[max(text.find("{"), 0) :] if tolerant else text
    lead = len(body) - len(body.lstrip())
    with contextlib.suppress(ValueError):  # text after the object is ignored, as by the executor
        body = body[: json.JSONDecoder().raw_decode(body, lead)[1]]
    try:
        parser.feed(body)
        parser.close()
    except (OutputParseError, TruncatedOutputError) as error:
        errors.append(error)
    checker = StepChecker(schema, context=context)
    step_ok = dict.fromkeys(names, False)
    for name, value in parser.completed.items():
        try:
            checker.accept(name, value)
        except StepError as error:
            errors.append(error)
        except Exception as exc:  # a validator that reads an earlier step, which failed
            if all(n in checker.accepted for n in names[: names.index(name)]):
                raise
            message = f"step {name!r} could not be checked: a step it reads failed ({exc!r})"
            errors.append(StepError(message, step=name, errors=[], feedback=""))
        else:
            step_ok[name] = True
    if errors:
        return None, step_ok, errors
    try:
        return checker.finish(), step_ok, []
    except StepError as error:  # a missing step, or a model-level validator
        step_ok[error.step] = False
        return None, step_ok, [error]


async def single_pass(
    backend: Backend,
    schema: type[SchemaT],
    context: Mapping[str, Any] | None = None,
    *,
    builder: PromptBuilder | None = None,
    settings: Settings | None = None,
) -> BaselineResult[SchemaT]:
    """One call: read the whole answer, then check every step (failures do not stop it)."""
    return await whole_object_reask(
        backend, schema, context, max_reasks=0, builder=builder, settings=settings
    )


async def whole_object_reask(
    backend: Backend,
    schema: type[SchemaT],
    context: Mapping[str, Any] | None = None,
    *,
    max_reasks: int,
    builder: PromptBuilder | None = None,
    settings: Settings | None = None,
    reask_temperature: float | None = None,
) -> BaselineResult[SchemaT]:
    """Ask for the whole object, then again with every error fed back, up to `max_reasks`.

    Each re-ask is built from the first request: the latest answer as the assistant's
    message, then a user message with all its errors, so the prompt does not grow with
    the attempts. Re-asks sample at `reask_temperature` (default: the first call's) with
    the seed `settings.seed + k` for call k + 1, as the executor's repairs do. A refusal
    ends the run.
    """
    if max_reasks < 0:
        raise InvalidArgumentError(f"max_reasks must not be negative, not {max_reasks}")
    settings = settings or Settings()
    builder = builder or PromptBuilder()
    base = builder.build(schema, context)
    tolerant = backend.capabilities.output == "prompt"
    loop = asyncio.get_running_loop()
    started = loop.time()
    request = base
    attempts: list[CallOutcome] = []
    output: SchemaT | None = None
    temperature = settings.temperature if reask_temperature is None else reask_temperature
    for k in range(max_reasks + 1):
        seed = None if settings.seed is None else settings.seed + k
        call_settings = replace(settings, temperature=temperature, seed=seed) if k else settings
        output, outcome = await _call(backend, request, schema, context, call_settings, tolerant)
        attempts.append(outcome)
        if outcome.accepted or outcome.refused:
            break
        request = builder.reask(base, outcome.text, outcome.feedback)
    return BaselineResult(
        output=output,
        accepted=output is not None,
        step_ok=attempts[0].step_ok,
        calls=len(attempts),
        completion_tokens=sum(a.usage.completion_tokens for a in attempts),
        prompt_tokens=sum(a.usage.prompt_tokens for a in attempts),
        elapsed=loop.time() - started,
        errors=attempts[-1].errors,
        attempts=attempts,
    )


async def _call(
    backend: Backend,
    request: Request,
    schema: type[SchemaT],
    context: Mapping[str, Any] | None,
    settings: Settings,
    tolerant: bool,
) -> tuple[SchemaT | None, CallOutcome]:
    """Stream one whole answer and check it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    parts: list[str] = []
    refusal, finish, usage = "", None, None
    stream = backend.stream(request, settings)
    try:
        async for chunk in stream:
            parts.append(chunk.text)
            refusal += chunk.refusal or ""
            finish = chunk.finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
    finally:
        await stream.aclose()
    text = "".join(parts)
    if usage is None:  # not reported: counted as the executor counts it
        chunks = sum(1 for p in parts if p)
        usage = Usage(estimate_tokens(request.prompt_chars()), chunks, estimated=True)
    output, step_ok, found = check_answer(schema, text, context, tolerant=tolerant)
    if finish == "length":  # said once below, with the reason
        found = [e for e in found if not isinstance(e, TruncatedOutputError)]
    errors = [str(e) for e in found]
    feedback = [_feedback(e) for e in found if not isinstance(e, StepError) or e.feedback]
    refused = bool(refusal) or finish == "content_filter"
    if refused:
        errors.append(f"the model refused ({finish}): {refusal}")
    elif finish == "length":
        errors.append("the answer was cut by the token limit (finish_reason=length)")
        feedback.append("Your answer was cut off by the token limit: answer more briefly.")
    elapsed = loop.time() - started
    outcome = CallOutcome(text, step_ok, errors, feedback, finish, refused, usage, elapsed)
    return (None if errors else output), outcome


def _feedback(error: OutputError) -> str:
    if isinstance(error, StepError):
        return error.feedback
    return f"Your answer could not be read: {error}"
