"""How arq repairs a run: every decision about asking again after a failed step.

When a step fails, the run keeps the steps before it and asks again from there. This
module decides all of that second ask; the prompt builder only renders the `RepairPlan`
made here (`PromptBuilder.render_repair`; `repair_request` does both), and a backend only
enforces the constraints a repair request carries (`Request.prefill`, `Request.rejected`,
`Request.allowed`).

- **Which step to redo**: the step a `StepError` names (a cross-step check names its
  latest step, or the one it asks for), or, when the JSON could not be read, the first
  step not accepted. That step and every step after it are redone.
- **When to stop**: the model coming back to a failure it already had (the same step,
  error types and locations, and value) is stuck, so the run stops at once; otherwise it
  stops when `max_repairs` repairs are spent.
- **Advisory checks** (`@arq.check(..., advisory=True)`) have their own budget,
  `advisory_repairs` per check, apart from `max_repairs`; once it is spent, the check's
  failures are let through and recorded (`Repairs.record_advisory`).
- **An answer cut at its token limit** inside step k, after earlier steps were accepted,
  is continued from k (a continuation spends a repair); cut before any step was accepted,
  or cut again inside the same step, it is not (`Repairs.record_cut`).
- **Rejected values**: a value refused on its own account (by its step's checks, or by a
  cross-step check whose other steps all come before it and are kept) is remembered as
  the model wrote it. Each repair lists those of its first step; redoing a step forgets
  what the steps after it had failed with and rejected, since a check can read earlier
  steps.
- **What the repair turn says**: the failing step's feedback, or where the JSON broke,
  and the context lines the step needs (`evidence`).
- **Narrowed choices**: the first step's allowed choices lose its rejected values, and
  are held to those its evidence lines mention, when they mention any.
- **Prefill or suffix**: on a backend that continues an assistant message, the answer
  continues the kept steps' JSON; otherwise the kept steps go back as the model's own
  earlier answer and the new answer holds the remaining steps only.
- Only the latest failure is shown: each repair is planned from the first request.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.checks import AllowedValues
from arq.errors import (
    NO_VALUE,
    InvalidArgumentError,
    OutputError,
    OutputParseError,
    StepError,
    TruncatedOutputError,
    value_key,
)
from arq.prompt import PromptBuilder, Request
from arq.prompt.context import context_text
from arq.schema import Reasoning, Step, cross_checks, steps

__all__ = [
    "MAX_LINE",
    "RepairPlan",
    "Repairs",
    "evidence",
    "plan_repair",
    "repair_request",
]

Signature = tuple[Any, ...]


@dataclass(frozen=True)
class RepairPlan:
    """What a repair asks for, ready to render into a request.

    Attributes:
        step: The first step redone; the repair turn re-states its question.
        kept: The steps kept, in order.
        remaining: The steps asked for: `step` and every step after it.
        failure: What the repair turn says went wrong (empty: the earlier stream broke
            off with no error in the answer).
        evidence: Context lines the repair turn quotes for `step`.
        prefill: JSON text the answer continues (the kept steps, ready for the next key);
            empty when the kept steps go back as an earlier answer instead.
        earlier_answer: The kept steps as a JSON object, shown as the model's own earlier
            answer before the repair turn; empty with a prefill or when nothing is kept.
        rejected: JSON texts of the values `step` already had rejected in this run.
        allowed: What the remaining steps' context checks allow, `step`'s narrowed.
    """

    step: Step
    kept: tuple[str, ...]
    remaining: tuple[str, ...]
    failure: str = ""
    evidence: tuple[str, ...] = ()
    prefill: str = ""
    earlier_answer: str = ""
    rejected: tuple[str, ...] = ()
    allowed: Mapping[str, AllowedValues] = field(default_factory=dict)


class Repairs:
    """The repair policy of one run, and what it has learned from the run's failures.

    Args:
        schema: The run's reasoning schema.
        context: The run's context, which evidence lines are quoted from.
        max_repairs: Repairs allowed after output errors.
        advisory_repairs: Repairs allowed per advisory check, apart from `max_repairs`.
    """

    def __init__(
        self,
        schema: type[Reasoning],
        context: Mapping[str, Any] | None,
        *,
        max_repairs: int,
        advisory_repairs: int = 1,
    ) -> None:
        self.schema = schema
        self.context = context
        self.max_repairs = max_repairs
        self.advisory_repairs = advisory_repairs
        self.advisory_spent: dict[str, int] = {}  # repairs per advisory check
        self.count = 0  # repairs started
        self.order = [s.name for s in steps(schema)]
        self.rejected: dict[str, list[str]] = {}  # JSON of values each step had rejected
        self.seen: set[Signature] = set()  # failures so far: one coming back stops the run
        self.cut: set[str] = set()  # steps an answer was cut inside, at its token limit

    def step_to_redo(self, error: StepError | OutputParseError, accepted: Collection[str]) -> str:
        """The step a repair after `error` starts from: the step it names, or the first
        step not accepted (the last step, when the JSON broke after every step)."""
        if isinstance(error, StepError):
            return error.step
        return next((name for name in self.order if name not in accepted), self.order[-1])

    def record(self, error: StepError | OutputParseError, step: str) -> str | None:
        """Take in a failure that `step` is to be redone after: why the run must stop
        instead (it is stuck, or out of repairs), or None when a repair may start."""
        signature = _signature(error, step)
        if signature in self.seen:  # the model came back to a failure: it is stuck
            return f"step {step!r} failed twice the same way: {error}"
        self._remember_rejected(error)
        if self.count >= self.max_repairs:
            return f"{self.count} repairs did not lead to a valid output; last: {error}"
        self.seen.add(signature)
        self.count += 1
        self._forget_after(step)
        return None

    def record_advisory(self, error: StepError, step: str) -> bool:
        """Take in a failure of an advisory check that `step` is redone after (a repair
        from its own budget): whether that budget is now spent, so that the check's next
        failure is let through."""
        check = error.check or ""
        spent = self.advisory_spent[check] = self.advisory_spent.get(check, 0) + 1
        self._remember_rejected(error)
        self._forget_after(step)
        return spent >= self.advisory_repairs

    def record_cut(self, step: str, accepted: Collection[str]) -> str | None:
        """Take in an answer cut at its token limit inside `step`, with the steps in
        `accepted` kept: why it cannot be continued, or None when a continuation from
        `step` may start (it spends a repair)."""
        if not accepted:
            return "no step was accepted before the cut, so there is nothing to continue from"
        if step in self.cut:
            return f"the answer was cut inside step {step!r} again, after a continuation"
        if self.count >= self.max_repairs:
            return f"no repair is left to continue from step {step!r} ({self.count} spent)"
        self.cut.add(step)
        self.count += 1
        self._forget_after(step)
        return None

    def plan(
        self,
        asked: Sequence[str],
        allowed: Mapping[str, AllowedValues],
        *,
        accepted: Mapping[str, Any],
        failure: OutputError | None,
        prefill: bool,
    ) -> RepairPlan:
        """The repair of a request that asked for `asked` (holding them to `allowed`),
        after `failure`, or after a stream that broke off when `failure` is None."""
        first = next((name for name in asked if name not in accepted), "")
        return plan_repair(
            self.schema,
            asked,
            accepted=accepted,
            failure=failure,
            prefill=prefill,
            rejected=self.rejected.get(first, ()),
            allowed=allowed,
            context=self.context,
        )

    def _remember_rejected(self, error: StepError | OutputParseError) -> None:
        """Keep a value refused on its own account: by its step's checks, or by a cross-step
        check whose other steps come before it (they are kept, so it would fail again)."""
        if not isinstance(error, StepError) or error.value is NO_VALUE:
            return
        if error.check is not None:
            check = next((c for c in cross_checks(self.schema) if c.name == error.check), None)
            if check is None or max(check.steps, key=self.order.index) != error.step:
                return  # later steps it reads are redone too: the value may pass then
        text = error.written if error.written else value_key(error.value) or ""
        rejected = self.rejected.setdefault(error.step, [])
        if text not in rejected:
            rejected.append(text)

    def _forget_after(self, step: str) -> None:
        """Steps after `step` are redone: their earlier failures may not recur, and what
        they had rejected may pass now (a check can read earlier steps)."""
        later = set(self.order[self.order.index(step) + 1 :])
        for name in later:
            self.rejected.pop(name, None)
        self.seen = {signature for signature in self.seen if signature[0] not in later}


def _signature(error: StepError | OutputParseError, step: str) -> Signature:
    """Identity of a failure whatever its wording: step, error types and locations, and
    the rejected value (a new value failing the same check is progress, not a repeat)."""
    if isinstance(error, StepError):
        return error.signature()
    return (step, error.problem)


def repair_request(
    builder: PromptBuilder,
    request: Request,
    *,
    accepted: Mapping[str, Any],
    failure: OutputError | None,
    prefill: bool = False,
    rejected: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
) -> Request:
    """The request that redoes `request` from its first step not in `accepted`.

    The steps in `accepted` (raw JSON values, in step order) are kept. Without `prefill`
    they are shown as the model's own earlier answer and the new answer is asked for the
    remaining steps only (a suffix schema); with `prefill` the answer continues the
    accepted JSON text. The repair turn re-states the failing step's question and
    instruction and names the error; `failure` None means the earlier stream broke off
    without an error in the answer. Built from `request` alone, so it does not grow with
    attempts: only the latest failure is shown. `rejected` are the JSON texts of values the
    first redone step already had rejected. With the run's `context`, the turn also quotes
    the context lines that the failing step's question and error point at. `plan_repair`
    decides all this; `builder` renders the plan (`PromptBuilder.render_repair`).
    """
    plan = plan_repair(
        request.schema,
        request.steps,
        accepted=accepted,
        failure=failure,
        prefill=prefill,
        rejected=rejected,
        allowed=request.allowed,
        context=context,
    )
    return builder.render_repair(request, plan)


def plan_repair(
    schema: type[Reasoning],
    asked: Sequence[str],
    *,
    accepted: Mapping[str, Any],
    failure: OutputError | None,
    prefill: bool = False,
    rejected: Sequence[str] = (),
    allowed: Mapping[str, AllowedValues] | None = None,
    context: Mapping[str, Any] | None = None,
) -> RepairPlan:
    """The repair of a request for the steps `asked`, from the first of them not in
    `accepted` (raw JSON values); the others in `accepted` are kept.

    Args:
        schema: The reasoning schema.
        asked: The steps the request asked for, in order.
        accepted: The steps accepted so far, as the model wrote their values.
        failure: The error to name; None when the earlier stream broke off.
        prefill: The backend continues an assistant message (`Capabilities.prefill`).
        rejected: JSON texts of values the first redone step already had rejected.
        allowed: What the asked steps' context checks allow (`Request.allowed`).
        context: The run's context, for evidence lines; none without it.

    Raises:
        InvalidArgumentError: every asked step is accepted.
    """
    remaining = [name for name in asked if name not in accepted]
    if not remaining:
        raise InvalidArgumentError("every step is accepted: there is nothing to repair")
    kept = {name: accepted[name] for name in asked if name in accepted}
    step = {s.name: s for s in steps(schema)}[remaining[0]]
    failure_text = _failure_text(failure, step.name)
    query = " ".join([step.name, step.question, step.instruction or "", failure_text])
    lines = evidence(context, query, leave_out=[*rejected, *_value_text(failure)])
    return RepairPlan(
        step=step,
        kept=tuple(kept),
        remaining=tuple(remaining),
        failure=failure_text,
        evidence=tuple(lines),
        prefill=_prefix(kept) if prefill else "",
        earlier_answer=_dump(kept) if kept and not prefill else "",
        rejected=tuple(rejected),
        allowed=_narrowed(allowed or {}, remaining, rejected, lines),
    )


def _narrowed(
    allowed: Mapping[str, AllowedValues],
    remaining: Sequence[str],
    rejected: Sequence[str],
    lines: Sequence[str],
) -> dict[str, AllowedValues]:
    """The remaining steps' allowed values; the first step's without its refused choices
    (not held at all once none is left), and held to those its evidence lines mention."""
    held = {name: allowed[name] for name in remaining if name in allowed}
    first = remaining[0]
    if first in held:
        narrowed = held[first].without(_refused_values(rejected))
        if narrowed is None:
            del held[first]
        else:
            held[first] = narrowed.mentioned_in(lines)
    return held


def _prefix(kept: Mapping[str, Any]) -> str:
    """The kept steps as the start of a JSON object, ready for the next key."""
    body = ", ".join(f"{json.dumps(k)}: {_dump(v)}" for k, v in kept.items())
    return "{" + body + (", " if body else "")


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _refused_values(rejected: Sequence[str]) -> list[Any]:
    """The values of rejected JSON texts (a text that does not parse names no value)."""
    values = []
    for text in rejected:
        with contextlib.suppress(ValueError):
            values.append(json.loads(text))
    return values


def _value_text(failure: OutputError | None) -> list[str]:
    """The refused value's text, if the failure has one."""
    if isinstance(failure, StepError) and failure.value is not NO_VALUE:
        return [str(failure.value)]
    return []


def _failure_text(failure: OutputError | None, step: str) -> str:
    """What the repair turn says went wrong: the step's feedback, or the parse problem."""
    if failure is None:
        return ""
    if isinstance(failure, StepError):
        return failure.feedback
    if isinstance(failure, TruncatedOutputError):
        return (
            f'Your answer was cut off at the length limit inside "{step}". Answer "{step}"'
            " again, completely and briefly, then the steps after it."
        )
    return f'Your answer could not be read at "{step}": {failure}'


# --- evidence: the context lines a failing step needs ------------------------------------
#
# A step that failed a check often failed because the model looked at the wrong part of
# the input: the date of another line, the name of another role. Quoting the lines of the
# context that share the most words with the step's question and the check's message puts
# what the step needs next to where the model writes it again (the ARQ idea of re-stating
# what matters just in time, applied to the input). Each word is weighted by how rare it
# is among the lines (inverse document frequency), so "on" or "the" count for little and a
# label such as "Returned" for much. Words of the refused value are left out of the query:
# they would point back at the line the wrong value came from.

_WORD = re.compile(r"[^\W_]+")
MAX_LINE = 200
"""Characters of one context line that a repair turn quotes, at most."""


def evidence(
    context: Mapping[str, Any] | None,
    query: str,
    *,
    leave_out: Iterable[str] = (),
    limit: int = 2,
) -> list[str]:
    """Up to `limit` lines of `context` that share the most (rare) words with `query`.

    Words of `leave_out` (the refused value) do not count. A line is kept only if it scores
    at least half the best line's score; lines come in context order, each cut to
    `MAX_LINE` characters.
    """
    if not context or limit < 1:
        return []
    lines = _lines(context)
    wanted = _words(query) - set().union(*(_words(text) for text in leave_out))
    if not lines or not wanted:
        return []
    words = [_words(line) for line in lines]
    counts: dict[str, int] = {}
    for found in words:
        for word in found & wanted:
            counts[word] = counts.get(word, 0) + 1
    weight = {word: math.log((len(lines) + 1) / count) for word, count in counts.items()}
    scores = [sum(weight[word] for word in found & wanted) for found in words]
    best = max(scores)
    if best <= 0:
        return []
    ranked = sorted(range(len(lines)), key=lambda i: -scores[i])
    chosen = sorted(i for i in ranked[:limit] if scores[i] >= best / 2)
    return [_cut(lines[i]) for i in chosen]


def _words(text: str) -> set[str]:
    """The words of `text`, lowercased; a lone letter (the "s" of "record's", the "S" of
    an id like "S-769") says nothing about which line is meant, a lone digit may."""
    return {word.lower() for word in _WORD.findall(text) if len(word) > 1 or word.isdigit()}


def _lines(context: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for value in context.values():
        found.extend(line.strip() for line in context_text(value).splitlines())
    return list(dict.fromkeys(line for line in found if line))


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
