"""Pure retry policy: exponential backoff with full jitter, `Retry-After`, a total budget.

No I/O, no clock, no randomness of its own: the caller passes the random draw and "now",
which keeps the policy deterministic under test (see tests/unit/test_api_retry.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RetryDecision", "RetryPolicy", "parse_http_date", "parse_retry_after"]


@dataclass(frozen=True)
class RetryDecision:
    """`wait_s` is the sleep before the next attempt, or None to give up (`reason` says why)."""

    wait_s: float | None
    reason: str = ""

    @property
    def retry(self) -> bool:
        return self.wait_s is not None


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before retry number `attempt` (1-based count of attempts made).

    * Without `Retry-After`: full jitter, ``uniform(0, min(max_delay_s, base_delay_s *
      2 ** (attempt - 1)))`` (the AWS "full jitter" scheme).
    * With `Retry-After`: exactly that many seconds, always honoured, never shortened.
    * Sum of all waits of one request never exceeds `max_total_wait_s`; when the next wait
      would cross it (or `max_attempts` is reached) the decision is to give up, and the
      client raises the last error straight away instead of sleeping in vain.
    """

    max_attempts: int = 10
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_total_wait_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        for name in ("base_delay_s", "max_delay_s", "max_total_wait_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def backoff_ceiling(self, attempt: int) -> float:
        """Upper bound of the jittered wait after `attempt` attempts (>= 1)."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 is plenty; avoids float overflow
        return min(self.max_delay_s, self.base_delay_s * float(2**exponent))

    def next_wait(
        self,
        *,
        attempt: int,
        waited_s: float,
        retry_after_s: float | None,
        rand: Callable[[], float],
    ) -> RetryDecision:
        """Decide about the retry after `attempt` failed attempts, `waited_s` already slept.

        `rand` returns a float in [0, 1); it is only called for the jittered case.
        """
        if attempt >= self.max_attempts:
            return RetryDecision(None, f"gave up: max attempts ({self.max_attempts}) reached")
        remaining = self.max_total_wait_s - waited_s
        if retry_after_s is not None:
            wait = max(0.0, retry_after_s)
            if waited_s + wait > self.max_total_wait_s:
                return RetryDecision(
                    None,
                    f"gave up: Retry-After {wait:.1f} s exceeds the remaining retry budget "
                    f"({max(remaining, 0.0):.1f} of {self.max_total_wait_s:g} s)",
                )
            return RetryDecision(wait)
        draw = min(max(rand(), 0.0), 1.0)
        wait = draw * self.backoff_ceiling(attempt)
        if waited_s + wait > self.max_total_wait_s:
            return RetryDecision(
                None,
                f"gave up: retry budget of {self.max_total_wait_s:g} s exhausted "
                f"({max(waited_s, 0.0):.1f} s waited)",
            )
        return RetryDecision(wait)


def parse_http_date(value: str | None) -> datetime | None:
    """An RFC 9110 HTTP-date (e.g. the `Date` header) as an aware UTC datetime, or None."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """`Retry-After` as seconds to wait from `now` (aware): delta-seconds or HTTP-date.

    A date in the past means 0. Unparseable or negative values give None, so the caller
    falls back to jittered backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when = parse_http_date(text)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())
