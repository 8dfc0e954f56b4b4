"""Transport retries: when and how long to wait before sending a failed model call again.

This budget is separate from output repairs. A retry resends the same request because the
*service* failed; a repair asks the model to fix an output it did produce.

What is retried: timeouts, connection errors, streams dropped mid-way, and HTTP 408, 409,
429 and 5xx answers. The backend decides this when it maps a failure to `BackendError`
and sets `retryable`; the policy trusts that flag and retries nothing else.

What never is: 400, 401, 403, 404 and 422 answers (the same request fails the same way),
refusals and filtered content, truncated output, and output that fails its checks (those
go to repairs, continuations or the caller). Any exception other than a retryable `BackendError`,
cancellation included, passes through at once.

How long to wait: a service's `Retry-After` (or `retry-after-ms`) is honoured up to
`retry_after_cap`; otherwise the wait grows exponentially from `initial_wait` up to
`max_wait` and is multiplied by a random factor in `[1 - jitter, 1 + jitter]`, so clients
that failed together do not all come back together. No wait may pass the run's deadline:
the retry is abandoned and `DeadlineExceededError` raised instead.

Turn off the SDK's own retries (`max_retries=0` for the OpenAI client) when this policy is
used: both layers would retry, and the attempts would multiply.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import tenacity

from arq.errors import BackendError, DeadlineExceededError, InvalidArgumentError

__all__ = ["RetryPolicy", "parse_retry_after"]

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _non_negative_number(value: str) -> float | None:
    """Digits with an optional fraction, as a float; None for anything else."""
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _is_number(value: object) -> bool:
    """A finite int or float, bools excluded."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait before retrying, as the service asked in its response headers.

    `retry-after-ms` (milliseconds) wins over `retry-after`, which holds seconds (a
    fraction is accepted) or an HTTP date (RFC 9110). Header names are case-insensitive.
    A date in the past means "retry now" and gives 0.0; a date without a time zone is
    read as UTC. A header that is unparsable or negative is ignored, so a bad
    `retry-after-ms` falls back to `retry-after`.

    Args:
        headers: The response headers.

    Returns:
        The wait in seconds, or None when no usable header is present.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        parsed = _non_negative_number(milliseconds)
        if parsed is not None:
            return parsed / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed model call is sent again.

    Attributes:
        attempts: Tries per model call, the first included; 1 never retries.
        initial_wait: The first backoff, in seconds.
        multiplier: The factor each further backoff grows by.
        max_wait: The cap of the exponential backoff, in seconds.
        retry_after_cap: A service's Retry-After is honoured up to this many seconds.
        jitter: The backoff is multiplied by a random factor in `[1 - jitter, 1 + jitter]`.
        sleep: The coroutine function that waits; replace it to make tests instant.
    """

    attempts: int = 4
    initial_wait: float = 0.5
    multiplier: float = 2.0
    max_wait: float = 20.0
    retry_after_cap: float = 60.0
    jitter: float = 0.25
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidArgumentError(f"attempts must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise InvalidArgumentError(
                f"attempts must be at least 1 (1 never retries), got {self.attempts}"
            )
        for name in ("initial_wait", "max_wait", "retry_after_cap"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise InvalidArgumentError(
                    f"{name} must be a finite number of seconds >= 0, got {value!r}"
                )
        if not (_is_number(self.multiplier) and self.multiplier >= 1):
            raise InvalidArgumentError(
                f"multiplier must be a finite number >= 1 (1 waits the same each time), "
                f"got {self.multiplier!r}"
            )
        if not (_is_number(self.jitter) and 0 <= self.jitter < 1):
            raise InvalidArgumentError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if not callable(self.sleep):
            raise InvalidArgumentError(f"sleep must be an async function, got {self.sleep!r}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(attempts=1)

    def should_retry(self, error: BaseException) -> bool:
        """Whether `error` may be retried: only a `BackendError` marked retryable."""
        return isinstance(error, BackendError) and error.retryable

    def wait_for(self, error: BackendError, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (from 1) after `error`.

        The service's `retry_after` wins, capped at `retry_after_cap` and without jitter;
        otherwise the exponential backoff, jittered and capped at `max_wait`.
        """
        if error.retry_after is not None and not math.isnan(error.retry_after):
            return max(0.0, min(error.retry_after, self.retry_after_cap))
        exponent = max(0, retry_number - 1)
        try:
            backoff = min(self.max_wait, self.initial_wait * self.multiplier**exponent)
        except OverflowError:
            backoff = self.max_wait
        factor = random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.max_wait, backoff * factor)

    def retrying(
        self,
        *,
        deadline: float | None = None,
        before_sleep: Callable[[BackendError, float, int], None] | None = None,
    ) -> tenacity.AsyncRetrying:
        """A fresh `tenacity.AsyncRetrying` that applies this policy to one model call.

        Use a new one per call: tenacity keeps per-thread iteration state on the object,
        so one object shared by concurrent tasks would mix their attempts up.

        Args:
            deadline: An absolute `time.monotonic()` value. When the next wait would end
                after it, no wait happens and `DeadlineExceededError` is raised, chained
                from the last error.
            before_sleep: Called as `(error, wait_seconds, retry_number)` before each wait.

        Returns:
            The retrying object; after the last attempt the original error is re-raised.
        """

        def last_error(state: tenacity.RetryCallState) -> BackendError:
            error = state.outcome.exception() if state.outcome is not None else None
            if not isinstance(error, BackendError):  # pragma: no cover - retry filters these
                raise InvalidArgumentError(f"expected a BackendError outcome, got {error!r}")
            return error

        def wait(state: tenacity.RetryCallState) -> float:
            return self.wait_for(last_error(state), state.attempt_number)

        def about_to_sleep(state: tenacity.RetryCallState) -> None:
            error = last_error(state)
            seconds = state.next_action.sleep if state.next_action is not None else 0.0
            if deadline is not None and time.monotonic() + seconds > deadline:
                raise DeadlineExceededError(
                    f"the deadline passed while waiting to retry: the {seconds:.3g}s wait "
                    f"after attempt {state.attempt_number} of {self.attempts} would end "
                    f"after it. Last error: {error}. Raise the deadline or lower the waits"
                ) from error
            if before_sleep is not None:
                before_sleep(error, seconds, state.attempt_number)

        return tenacity.AsyncRetrying(
            sleep=self.sleep,
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=wait,
            retry=tenacity.retry_if_exception(self.should_retry),
            before_sleep=about_to_sleep,
            reraise=True,
        )
