"""The transport retry policy: Retry-After parsing, backoff, and the tenacity loop."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
import tenacity

from arq.errors import BackendError, DeadlineExceededError
from arq.retry import RetryPolicy, parse_retry_after


def _http_date(offset: float) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=offset), usegmt=True)


class RecordingSleep:
    """A sleep that returns at once and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class Script:
    """A model call that raises the given errors in turn, then returns "ok"."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _retryable(message: str = "503 service unavailable", **kwargs: Any) -> BackendError:
    return BackendError(message, retryable=True, status=kwargs.pop("status", 503), **kwargs)


def _policy(sleep: RecordingSleep, **kwargs: Any) -> RetryPolicy:
    return RetryPolicy(jitter=0.0, sleep=sleep, **kwargs)


def _drive(policy: RetryPolicy, call: Callable[[], Awaitable[str]], **kwargs: Any) -> str:
    async def main() -> str:
        async for attempt in policy.retrying(**kwargs):
            with attempt:
                return await call()
        raise AssertionError("the retry loop ended without a result or an error")

    return asyncio.run(main())


# parse_retry_after


def test_retry_after_ms_is_milliseconds() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("value", "expected"), [("3", 3.0), ("0", 0.0), ("2.5", 2.5), (" 7 ", 7.0)]
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after({"retry-after": value}) == pytest.approx(expected)


def test_retry_after_http_date_in_the_future() -> None:
    seconds = parse_retry_after({"retry-after": _http_date(30)})
    assert seconds is not None
    # HTTP dates have whole seconds: the fraction of the current second is lost
    assert 28.0 <= seconds <= 30.0


def test_retry_after_http_date_in_the_past_means_now() -> None:
    assert parse_retry_after({"retry-after": _http_date(-120)}) == 0.0


def test_retry_after_date_without_time_zone_is_utc() -> None:
    naive = (datetime.now(timezone.utc) + timedelta(seconds=60)).strftime(
        "%a, %d %b %Y %H:%M:%S -0000"
    )
    seconds = parse_retry_after({"retry-after": naive})
    assert seconds is not None
    assert 58.0 <= seconds <= 60.0


@pytest.mark.parametrize(
    "value", ["soon", "", "-5", "-0.5", "1e3", "1_000", "nan", "inf", "0x10", "Mon, 99 Foo"]
)
def test_retry_after_unusable_values_are_ignored(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


def test_retry_after_absent() -> None:
    assert parse_retry_after({}) is None
    assert parse_retry_after({"content-type": "application/json"}) is None


@pytest.mark.parametrize("name", ["Retry-After", "RETRY-AFTER", "retry-after"])
def test_retry_after_names_are_case_insensitive(name: str) -> None:
    assert parse_retry_after({name: "4"}) == 4.0
    assert parse_retry_after({name + "-MS": "250"}) == pytest.approx(0.25)


def test_retry_after_ms_wins_over_seconds() -> None:
    assert parse_retry_after({"Retry-After": "30", "Retry-After-Ms": "200"}) == pytest.approx(0.2)


def test_bad_retry_after_ms_falls_back_to_seconds() -> None:
    assert parse_retry_after({"retry-after-ms": "later", "retry-after": "3"}) == 3.0


# wait_for


def test_backoff_grows_exponentially() -> None:
    policy = RetryPolicy(initial_wait=0.5, multiplier=2.0, max_wait=100.0, jitter=0.0)
    error = _retryable()
    assert [policy.wait_for(error, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(initial_wait=1.0, multiplier=3.0, max_wait=5.0, jitter=0.0)
    error = _retryable()
    assert [policy.wait_for(error, n) for n in range(1, 5)] == [1.0, 3.0, 5.0, 5.0]
    assert policy.wait_for(error, 10_000) == 5.0


def _draws(policy: RetryPolicy, attempt: int, count: int, seed: int) -> list[float]:
    """`count` jittered waits before `attempt`, from a seeded random generator."""
    random.seed(seed)
    error = _retryable()
    return [policy.wait_for(error, attempt) for _ in range(count)]


def test_jitter_stays_within_bounds_and_spreads() -> None:
    draws = _draws(RetryPolicy(initial_wait=2.0, max_wait=100.0, jitter=0.25), 1, 2000, 1234)
    assert all(1.5 <= d <= 2.5 for d in draws)
    assert min(draws) < 1.6
    assert max(draws) > 2.4


def test_jitter_never_passes_the_cap() -> None:
    draws = _draws(RetryPolicy(initial_wait=10.0, max_wait=10.0, jitter=0.5), 3, 500, 99)
    assert all(5.0 <= d <= 10.0 for d in draws)
    assert min(draws) < 9.0


def test_jitter_follows_the_random_seed() -> None:
    policy = RetryPolicy()
    error = _retryable()
    random.seed(7)
    first = [policy.wait_for(error, n) for n in (1, 2, 3)]
    random.seed(7)
    assert [policy.wait_for(error, n) for n in (1, 2, 3)] == first


@pytest.mark.parametrize(("asked", "expected"), [(0.0, 0.0), (3.5, 3.5), (60.0, 60.0)])
def test_retry_after_is_honoured_without_jitter(asked: float, expected: float) -> None:
    policy = RetryPolicy(jitter=0.5, max_wait=1.0)
    assert policy.wait_for(_retryable(retry_after=asked), 1) == expected
    assert policy.wait_for(_retryable(retry_after=asked), 4) == expected


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(retry_after_cap=10.0)
    assert policy.wait_for(_retryable(status=429, retry_after=3600.0), 1) == 10.0


# should_retry


def test_should_retry_only_retryable_backend_errors() -> None:
    policy = RetryPolicy()
    assert policy.should_retry(_retryable())
    assert not policy.should_retry(BackendError("401 unauthorized", retryable=False, status=401))
    assert not policy.should_retry(ValueError("boom"))
    assert not policy.should_retry(asyncio.CancelledError())


# retrying


def test_succeeds_after_two_retryable_failures() -> None:
    sleep = RecordingSleep()
    call = Script([_retryable(), _retryable()])
    assert _drive(_policy(sleep), call) == "ok"
    assert call.calls == 3
    assert sleep.calls == [0.5, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        BackendError("400 bad request", retryable=False, status=400),
        ValueError("not a transport failure"),  # other exceptions are never retried
    ],
)
def test_an_error_that_is_not_retryable_is_raised_at_once(error: Exception) -> None:
    sleep = RecordingSleep()
    call = Script([error])
    with pytest.raises(type(error)) as caught:
        _drive(_policy(sleep), call)
    assert caught.value is error
    assert call.calls == 1
    assert sleep.calls == []


def test_exhausted_attempts_reraise_the_last_backend_error() -> None:
    sleep = RecordingSleep()
    errors = [_retryable(f"503 number {n}") for n in range(1, 5)]
    call = Script([*errors, _retryable("never reached")])
    with pytest.raises(BackendError) as caught:
        _drive(_policy(sleep, attempts=4), call)
    assert not isinstance(caught.value, tenacity.RetryError)
    assert caught.value is errors[-1]
    assert call.calls == 4
    assert sleep.calls == [0.5, 1.0, 2.0]


def test_none_policy_never_retries() -> None:
    sleep = RecordingSleep()
    policy = dataclasses.replace(RetryPolicy.none(), sleep=sleep)
    assert policy.attempts == 1
    error = _retryable()
    call = Script([error])
    with pytest.raises(BackendError) as caught:
        _drive(policy, call)
    assert caught.value is error
    assert call.calls == 1
    assert sleep.calls == []


def test_before_sleep_sees_error_wait_and_retry_number() -> None:
    sleep = RecordingSleep()
    first, second = _retryable("first"), _retryable("second", retry_after=7.0)
    seen: list[tuple[BackendError, float, int]] = []
    call = Script([first, second])
    result = _drive(_policy(sleep), call, before_sleep=lambda e, w, n: seen.append((e, w, n)))
    assert result == "ok"
    assert seen == [(first, 0.5, 1), (second, 7.0, 2)]
    assert sleep.calls == [0.5, 7.0]


def test_deadline_that_the_next_wait_would_pass_raises() -> None:
    sleep = RecordingSleep()
    seen: list[int] = []
    error = _retryable("429 slow down", status=429, retry_after=30.0)
    call = Script([error])
    with pytest.raises(DeadlineExceededError, match="429 slow down") as caught:
        _drive(
            _policy(sleep),
            call,
            deadline=time.monotonic() + 5.0,
            before_sleep=lambda e, w, n: seen.append(n),
        )
    assert "deadline passed while waiting" in str(caught.value)
    assert caught.value.__cause__ is error
    assert call.calls == 1
    assert sleep.calls == []
    assert seen == []


def test_deadline_far_enough_allows_retries() -> None:
    sleep = RecordingSleep()
    call = Script([_retryable(retry_after=2.0)])
    assert _drive(_policy(sleep), call, deadline=time.monotonic() + 60.0) == "ok"
    assert sleep.calls == [2.0]


def test_deadline_checked_before_each_wait() -> None:
    sleep = RecordingSleep()
    first = _retryable("first", retry_after=1.0)
    second = _retryable("second", retry_after=100.0)
    call = Script([first, second])
    with pytest.raises(DeadlineExceededError) as caught:
        _drive(_policy(sleep), call, deadline=time.monotonic() + 50.0)
    assert caught.value.__cause__ is second
    assert call.calls == 2
    assert sleep.calls == [1.0]


def test_async_generator_body_is_retried_from_the_start() -> None:
    sleep = RecordingSleep()
    starts = 0

    async def stream() -> AsyncIterator[str]:
        nonlocal starts
        starts += 1
        yield "a"
        if starts == 1:
            raise _retryable("stream dropped mid-way", status=None)
        yield "b"

    async def main() -> list[str]:
        received: list[str] = []
        async for attempt in _policy(sleep).retrying():
            with attempt:
                received = [chunk async for chunk in stream()]
        return received

    assert asyncio.run(main()) == ["a", "b"]
    assert starts == 2
    assert sleep.calls == [0.5]


def test_each_call_gets_a_fresh_retrying_object() -> None:
    policy = RetryPolicy()
    first, second = policy.retrying(), policy.retrying()
    assert isinstance(first, tenacity.AsyncRetrying)
    assert first is not second


def test_default_sleep_is_asyncio_sleep() -> None:
    assert RetryPolicy().sleep is asyncio.sleep


# validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"attempts": -3}, "attempts must be at least 1"),
        ({"attempts": 2.0}, "attempts must be an int"),
        ({"attempts": True}, "attempts must be an int"),
        ({"initial_wait": -0.1}, "initial_wait must be"),
        ({"initial_wait": float("nan")}, "initial_wait must be"),
        ({"max_wait": -1.0}, "max_wait must be"),
        ({"max_wait": float("inf")}, "max_wait must be"),
        ({"retry_after_cap": -1.0}, "retry_after_cap must be"),
        ({"multiplier": 0.5}, "multiplier must be"),
        ({"multiplier": float("nan")}, "multiplier must be"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"jitter": -0.1}, r"jitter must be in \[0, 1\)"),
        ({"sleep": 5}, "sleep must be an async function"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_boundary_arguments_are_accepted() -> None:
    policy = RetryPolicy(
        attempts=1, initial_wait=0.0, multiplier=1.0, max_wait=0.0, retry_after_cap=0.0, jitter=0.0
    )
    assert policy.wait_for(_retryable(), 3) == 0.0
    assert policy.wait_for(_retryable(retry_after=9.0), 1) == 0.0
