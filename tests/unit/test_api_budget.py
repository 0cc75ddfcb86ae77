"""The shared API request budget: token bucket, concurrency cap, 429 adaptation, stop."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.api import ListQuery
from producer.api.budget import RECOVERY_STEPS, BudgetInterruptedError, RateBudget
from tests.unit.test_api_client import Script, envelope, make_client, ok

pytestmark = pytest.mark.unit


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Seen:
    waits: list[tuple[str, float]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    def on_budget_wait(self, resource: str, wait_s: float) -> None:
        self.waits.append((resource, wait_s))

    def set_budget_rate(self, requests_per_s: float) -> None:
        self.rates.append(requests_per_s)


def test_a_burst_of_max_concurrent_then_one_request_per_token() -> None:
    clock = FakeClock()
    budget = RateBudget(10, 3, clock=clock)
    for _ in range(3):
        assert budget.try_acquire() == 0.0
        budget.release()
    assert budget.try_acquire() == pytest.approx(0.1)
    clock.now += 0.1
    assert budget.try_acquire() == 0.0


def test_the_concurrency_cap_holds_whatever_the_tokens() -> None:
    clock = FakeClock()
    budget = RateBudget(0, 2, clock=clock)  # 0: no rate cap
    assert budget.try_acquire() == 0.0
    assert budget.try_acquire() == 0.0
    clock.now += 1000
    assert budget.try_acquire() > 0
    budget.release()
    assert budget.try_acquire() == 0.0
    assert budget.in_flight == 2


def test_a_429_halves_the_rate_and_pauses_everyone_for_retry_after() -> None:
    clock = FakeClock()
    seen = Seen()
    budget = RateBudget(10, 4, clock=clock, observer=seen)
    budget.rate_limited(retry_after_s=7.0)
    assert budget.rate == 5.0
    assert seen.rates == [10.0, 5.0]
    assert budget.try_acquire() == pytest.approx(7.0)  # any caller, not only the one that got it
    clock.now += 7.0
    assert budget.try_acquire() == pytest.approx(0.2)  # no burst right after a 429: 1 / 5 s
    clock.now += 0.2
    assert budget.try_acquire() == 0.0


@given(st.integers(1, 30), st.integers(0, 60))
def test_the_rate_shrinks_on_429s_and_recovers_to_the_configured_one(
    limits: int, successes: int
) -> None:
    budget = RateBudget(20, 4, clock=FakeClock())
    for _ in range(limits):
        budget.rate_limited(None)
    assert 1.0 <= budget.rate <= 20 / 2  # halved at least once, never below 5 % of it
    lowered = budget.rate
    for _ in range(successes):
        budget.succeeded()
    assert budget.rate == min(20, lowered + successes * 20 / RECOVERY_STEPS)


def test_threads_never_exceed_the_concurrency_cap() -> None:
    budget = RateBudget(0, 2)
    lock = threading.Lock()
    active, peak = [0], [0]

    def worker() -> None:
        for _ in range(50):
            with budget.request("contacts"):
                with lock:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                with lock:
                    active[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 2
    assert budget.in_flight == 0


def test_stop_ends_a_wait() -> None:
    stop = threading.Event()
    budget = RateBudget(0, 1, stop=stop)
    budget.acquire("contacts")
    failed: list[BaseException] = []

    def blocked() -> None:
        try:
            budget.acquire("tags")
        except BudgetInterruptedError as exc:
            failed.append(exc)

    thread = threading.Thread(target=blocked)
    thread.start()
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert len(failed) == 1


def test_waits_are_reported_per_resource() -> None:
    seen = Seen()
    budget = RateBudget(1000, 1, observer=seen)
    budget.acquire("contacts")  # the burst token
    budget.release()
    budget.acquire("tags")  # waits about a millisecond for the next token
    assert [resource for resource, _ in seen.waits] == ["tags"]


def test_clients_sharing_a_budget_slow_down_together_on_a_429() -> None:
    budget = RateBudget(1000, 4)
    script = Script(httpx.Response(429, headers={"Retry-After": "0"}), ok(envelope([])))
    sleeps: list[float] = []
    with make_client(script, sleeps=sleeps, budget=budget) as client:
        client.fetch_page(ListQuery("tags"))
    assert sleeps == [0.0]
    assert budget.rate == 500 + 1000 / RECOVERY_STEPS  # halved, then one success
    assert budget.in_flight == 0


@pytest.mark.parametrize(("rate", "cap"), [(-1, 1), (1, 0)])
def test_bad_limits_are_refused(rate: float, cap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateBudget(rate, cap)
