"""Unit tests for the pure retry policy in producer.api.retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.api.retry import RetryPolicy, parse_http_date, parse_retry_after

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 4, 18, 30, tzinfo=UTC)

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=30),
    base_delay_s=st.floats(min_value=0, max_value=10, allow_nan=False),
    max_delay_s=st.floats(min_value=0, max_value=120, allow_nan=False),
    max_total_wait_s=st.floats(min_value=0, max_value=600, allow_nan=False),
)
draws = st.floats(min_value=0, max_value=1, exclude_max=True)
retry_afters = st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(
    policy=policies,
    attempt=st.integers(min_value=1, max_value=100),
    waited=st.floats(min_value=0, max_value=600, allow_nan=False),
    retry_after=retry_afters,
    draw=draws,
)
def test_single_wait_within_bounds(
    policy: RetryPolicy, attempt: int, waited: float, retry_after: float | None, draw: float
) -> None:
    decision = policy.next_wait(
        attempt=attempt, waited_s=waited, retry_after_s=retry_after, rand=lambda: draw
    )
    if decision.wait_s is None:
        assert decision.reason.startswith("gave up")
        return
    assert attempt < policy.max_attempts
    assert decision.wait_s >= 0
    assert waited + decision.wait_s <= policy.max_total_wait_s
    if retry_after is None:
        assert decision.wait_s <= policy.backoff_ceiling(attempt) <= policy.max_delay_s
    else:
        assert decision.wait_s == retry_after  # honoured exactly, never shortened


@given(
    policy=policies,
    steps=st.lists(st.tuples(retry_afters, draws), min_size=1, max_size=40),
)
def test_a_whole_retry_sequence_never_exceeds_the_budget(
    policy: RetryPolicy, steps: list[tuple[float | None, float]]
) -> None:
    waited = 0.0
    attempt = 0
    for retry_after, draw in steps:
        attempt += 1
        decision = policy.next_wait(
            attempt=attempt, waited_s=waited, retry_after_s=retry_after, rand=iter([draw]).__next__
        )
        if decision.wait_s is None:
            break
        waited += decision.wait_s
    assert waited <= policy.max_total_wait_s
    assert attempt <= policy.max_attempts


def test_backoff_ceiling_doubles_up_to_max() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=10)
    assert [policy.backoff_ceiling(a) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.backoff_ceiling(10_000) == 10


def test_give_up_reasons() -> None:
    policy = RetryPolicy(max_attempts=3, max_total_wait_s=10)
    assert (
        "max attempts (3)"
        in policy.next_wait(attempt=3, waited_s=0, retry_after_s=None, rand=lambda: 0).reason
    )
    assert (
        "exceeds the remaining retry budget"
        in policy.next_wait(attempt=1, waited_s=5, retry_after_s=6, rand=lambda: 0).reason
    )
    assert policy.next_wait(attempt=1, waited_s=5, retry_after_s=5, rand=lambda: 0).wait_s == 5


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"max_total_wait_s": -1.0}])
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("Wed, 04 Mar 2026 18:31:00 GMT", 60.0),
        ("Wed, 04 Mar 2026 18:00:00 GMT", 0.0),  # in the past: retry now
        ("-3", None),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@given(delta=st.integers(min_value=0, max_value=86_400))
def test_parse_retry_after_http_date_roundtrip(delta: int) -> None:
    when = NOW + timedelta(seconds=delta)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(header, now=NOW) == float(delta)


def test_parse_http_date() -> None:
    assert parse_http_date("Wed, 04 Mar 2026 18:30:00 GMT") == NOW
    assert parse_http_date("garbage") is None
    assert parse_http_date(None) is None
