"""What one result line means for its item: accepted, repaired, sent again, or failed.

The answer is read as a run reads a stream (`arq.run.stream.StreamReader`, given the whole
text as one chunk): the same JSON rules, the same step checks, cross-step checks and
model validators, the same typed errors. A failed step goes to the item's repair policy
(`arq.repair.Repairs`, with what it learned in earlier rounds), which says whether to stop
(the same failure twice, or the repair budget spent) or plans the repair; so an item
reaches the output `Executor.run` reaches with the same answers. Transport failures
(429, 5xx, 408, 409, an expired or missing line) send the same request again, within the
retry budget; other statuses (400, 401, 404, 422, ...) fail the item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from arq.backends.base import Chunk
from arq.batch.items import ItemState, outcome_record, steering
from arq.batch.requests import RequestMaker
from arq.errors import BackendError, OutputError, OutputParseError, StepError
from arq.prompt import Request
from arq.run.stream import StreamReader
from arq.trace import Attempt, Usage, estimate_tokens, redact
from arq.validation import StepChecker

__all__ = ["Verdict", "judge"]

VerdictKind = Literal["accepted", "repair", "resend", "failed"]
_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Verdict:
    """The outcome of one item in a round.

    Attributes:
        kind: `accepted` (`record` is its `results.jsonl` line), `failed` (`record` is
            its `failed.jsonl` line), `repair` or `resend` (`state` and `body` go to the
            next round).
        record: The outcome's line, for `accepted` and `failed`.
        state: The item's state in the next round.
        body: The next round's request body.
    """

    kind: VerdictKind
    record: str = ""
    state: ItemState | None = None
    body: dict[str, Any] | None = None


def judge(maker: RequestMaker, state: ItemState, result: Any, body: dict[str, Any]) -> Verdict:
    """The verdict on `state`'s item, whose request `body` got the line `result` (None:
    the results hold no line for it)."""
    reply = _reply(result)
    if isinstance(reply, BackendError):
        return _transport_failure(maker, state, reply, body)
    state.retries = 0
    # a completion without usage counts its text's tokens, estimated
    used = reply.usage or Usage(0, estimate_tokens(reply.text, round_up=True), estimated=True)
    state.usage = state.usage + used
    state.last = reply.text
    checker = StepChecker(maker.schema, context=state.context, accepted=state.accepted)
    request = Request(messages=[], schema=maker.schema, output_schema={}, steps=tuple(state.asked))
    attempt = Attempt(state.calls, "first" if state.calls == 1 else "repair", request)
    reader = StreamReader(request, attempt, checker, tolerant=maker.tolerant)
    try:
        reader.take(reply, 0.0)
        reader.finish()
        output = checker.finish()
    except (StepError, OutputParseError) as error:
        return _repair(maker, state, checker, error)
    except BackendError as error:  # the answer has no finish reason: it did not end
        return _transport_failure(maker, state, error, body)
    except OutputError as error:  # a refusal, or cut by the token limit
        return _failed(state, error)
    output_json = output.model_dump(mode="json")
    return Verdict("accepted", record=outcome_record(state, output=output_json))


def _repair(
    maker: RequestMaker,
    state: ItemState,
    checker: StepChecker[Any],
    error: StepError | OutputParseError,
) -> Verdict:
    """A step failed: stop (stuck, or out of repairs), or ask again from that step."""
    repairs = state.repair_policy(maker.schema, maker.settings.max_repairs)
    step = repairs.step_to_redo(error, checker.accepted)
    stop = repairs.record(error, step)
    if stop is not None:
        state.remember(repairs)
        state.accepted = dict(checker.raw)
        return Verdict(
            "failed",
            record=outcome_record(
                state, error=_error_dict("ConvergenceError", stop, last_error=error)
            ),
        )
    checker.rollback(step)
    state.remember(repairs)
    state.accepted = dict(checker.raw)
    state.calls += 1
    request, body = maker.repair(state.context, repairs, checker.raw, error, state.calls)
    state.asked = list(request.steps)
    state.steer = steering(request)
    return Verdict("repair", state=state, body=body)


def _transport_failure(
    maker: RequestMaker, state: ItemState, error: BackendError, body: dict[str, Any]
) -> Verdict:
    """The request got no answer: send it again as it was, within the retry budget."""
    if not error.retryable:
        return _failed(state, error)
    if state.retries + 1 >= maker.settings.retries:
        tries = state.retries + 1
        message = f"{error} (sent {tries} time{'s' if tries > 1 else ''}: the retry budget)"
        return _failed(state, BackendError(message, retryable=True, status=error.status))
    state.retries += 1
    state.calls += 1
    return Verdict("resend", state=state, body=body)


def _failed(state: ItemState, error: OutputError | BackendError) -> Verdict:
    extra: dict[str, Any] = {}
    if isinstance(error, BackendError):
        extra = {"status": error.status, "request_id": error.request_id}
    record = outcome_record(state, error=_error_dict(type(error).__name__, str(error), **extra))
    return Verdict("failed", record=record)


def _error_dict(
    kind: str, message: str, *, last_error: OutputError | None = None, **extra: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": redact(message), **extra}
    if isinstance(last_error, StepError):
        error["step"] = last_error.step
    if last_error is not None:
        error["last_error"] = {"type": type(last_error).__name__, "message": str(last_error)}
    return error


def _reply(result: Any) -> Chunk | BackendError:
    """The answer a result line holds, or the transport failure it reports."""
    if result is None:
        return BackendError("the results hold no line for this request", retryable=True)
    response = result.get("response") if isinstance(result, dict) else None
    error = result.get("error") if isinstance(result, dict) else None
    status = response.get("status_code") if isinstance(response, dict) else None
    request_id = response.get("request_id") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if status == 200 and isinstance(body, dict):
        return _chunk(body, request_id)
    message = _error_message(body) or _error_message({"error": error}) or "no response"
    if isinstance(status, int):
        retryable = status in _RETRYABLE_STATUS or status >= 500
        text = f"the engine answered HTTP {status}: {message}"
        return BackendError(redact(text), retryable=retryable, status=status, request_id=request_id)
    return BackendError(redact(f"the request failed: {message}"), retryable=True)


def _chunk(body: dict[str, Any], request_id: str | None) -> Chunk | BackendError:
    """A completion's answer as one chunk: its text, finish reason, usage and refusal."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        problem = "the engine's completion has no choices[0].message"
        return BackendError(problem, retryable=True, status=200, request_id=request_id)
    text: Any = message.get("content")
    calls = message.get("tool_calls")
    if not text and isinstance(calls, list) and calls and isinstance(calls[0], dict):
        text = (calls[0].get("function") or {}).get("arguments")
    refusal = message.get("refusal")
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return Chunk(
        text=text if isinstance(text, str) else "",
        finish_reason=finish if isinstance(finish, str) else None,
        usage=_usage(body.get("usage")),
        refusal=refusal if isinstance(refusal, str) and refusal else None,
    )


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (isinstance(prompt, int) and isinstance(completion, int)):
        return None
    return Usage(prompt, completion)


def _error_message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return ": ".join(str(part) for part in (code, message) if part)
    return str(error) if isinstance(error, str) else ""
