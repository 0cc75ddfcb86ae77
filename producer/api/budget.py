"""One request budget for every API client of a process: a token bucket plus a concurrency cap.

Each resource's traversal has its own `ApiClient`, and each client retries its own 429s. Alone,
that turns N concurrent traversals into N independent retry loops against one rate limit (a
retry storm once a backfill is sliced). The budget is shared instead:

* at most `rate` requests per second start (token bucket, burst of `max_concurrent`), and at
  most `max_concurrent` are in flight at once;
* a 429 halves the rate for everyone (never below `min_rate`) and, with a `Retry-After`,
  pauses every caller until it has passed; each success then wins back a twentieth of the
  configured rate (additive increase, multiplicative decrease, as TCP does);
* the time callers wait for it is reported (`BudgetObserver`), so a budget set too low is
  visible as `askelephant_producer_api_budget_wait_seconds_total`.

`rate` 0 means no rate cap (the concurrency cap still holds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, Protocol

__all__ = ["BudgetInterruptedError", "BudgetObserver", "RateBudget"]

RECOVERY_STEPS: Final = 20
"""Successes needed to win back the configured rate from zero after a 429 halved it."""
MIN_RATE_SHARE: Final = 0.05
"""The adapted rate never drops below this share of the configured one."""
_MAX_WAIT_S: Final = 0.5
"""Longest single wait: a waiting caller re-reads the bucket and the stop flag this often."""


_EPSILON: Final = 1e-9
"""A token short by float rounding (0.1 s x 10/s) is a whole token."""


class BudgetInterruptedError(Exception):
    """The stop event was set while waiting for the budget."""


class BudgetObserver(Protocol):
    def on_budget_wait(self, resource: str, wait_s: float) -> None:
        """A request of `resource` waited `wait_s` seconds for the budget."""
        ...

    def set_budget_rate(self, requests_per_s: float) -> None:
        """The adapted rate (after a 429, or while it recovers)."""
        ...


class RateBudget:
    """Thread-safe; share one instance among all `ApiClient`s of a process."""

    def __init__(
        self,
        rate: float,
        max_concurrent: int,
        *,
        observer: BudgetObserver | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0 (0: no rate cap)")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.configured_rate = float(rate)
        self.max_concurrent = max_concurrent
        self._observer = observer
        self._stop = stop or threading.Event()
        self._clock = clock
        self._cond = threading.Condition()
        self._rate = float(rate)
        self._burst = float(max_concurrent)
        self._tokens = self._burst
        self._refilled_at = clock()
        self._paused_until = 0.0
        self._in_flight = 0
        if observer is not None:
            observer.set_budget_rate(self._rate)

    @property
    def rate(self) -> float:
        """The current (adapted) rate; 0 means no rate cap."""
        with self._cond:
            return self._rate

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @contextmanager
    def request(self, resource: str) -> Iterator[float]:
        """Wait for a token and a free slot; hold the slot for the request. Yields the wait."""
        waited = self.acquire(resource)
        try:
            yield waited
        finally:
            self.release()

    def acquire(self, resource: str) -> float:
        """Blocks until this request may start; returns the seconds waited. Raises
        `BudgetInterruptedError` when `stop` is set while waiting."""
        started = self._clock()
        blocked = False
        with self._cond:
            while (wait := self._try()) > 0:
                blocked = True
                self._cond.wait(min(wait, _MAX_WAIT_S))
        if not blocked:
            return 0.0
        waited = max(0.0, self._clock() - started)
        if self._observer is not None:
            self._observer.on_budget_wait(resource, waited)
        return waited

    def try_acquire(self) -> float:
        """Take a slot without blocking: 0.0 when taken, else the seconds to wait first."""
        with self._cond:
            return self._try()

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def succeeded(self) -> None:
        """A request got a response that was not a 429: recover some of the rate."""
        with self._cond:
            if self._rate >= self.configured_rate:
                return
            step = self.configured_rate / RECOVERY_STEPS
            self._rate = min(self.configured_rate, self._rate + step)
            rate = self._rate
        if self._observer is not None:
            self._observer.set_budget_rate(rate)

    def rate_limited(self, retry_after_s: float | None) -> None:
        """A 429: halve the rate and, with `Retry-After`, hold every caller until it passed."""
        with self._cond:
            now = self._clock()
            if retry_after_s is not None and retry_after_s > 0:
                self._paused_until = max(self._paused_until, now + retry_after_s)
            if self.configured_rate > 0:
                self._refill(now)
                floor = self.configured_rate * MIN_RATE_SHARE
                self._rate = max(floor, self._rate / 2)
                self._tokens = min(self._tokens, 0.0)  # no burst right after a 429
            rate = self._rate
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.set_budget_rate(rate)

    # -- internals (called with the lock held) ------------------------------------------

    def _try(self) -> float:
        if self._stop.is_set():
            raise BudgetInterruptedError
        now = self._clock()
        self._refill(now)
        wait = self._wait_needed(now)
        if wait <= 0:
            if self._rate > 0:
                self._tokens -= 1.0
            self._in_flight += 1
        return wait

    def _refill(self, now: float) -> None:
        if self._rate > 0:
            # nothing accrues during a Retry-After pause: no burst the moment it ends
            elapsed = max(0.0, now - max(self._refilled_at, self._paused_until))
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._refilled_at = now

    def _wait_needed(self, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if self._in_flight >= self.max_concurrent:
            return _MAX_WAIT_S  # a release notifies sooner
        if self._rate > 0 and self._tokens < 1.0 - _EPSILON:
            return (1.0 - self._tokens) / self._rate
        return 0.0
