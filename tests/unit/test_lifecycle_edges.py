"""Issue 17's failures at the edges of a run's lifecycle, one test (or more) each.

Every test here failed on the main of 0938c08; the numbers are the issue's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.sync.run import INVALID_UPDATED_AT
from tests.support.fakes import FakeSink, ListSource, page
from tests.unit.test_service import good, service

# ------------------------------------------------------------------ 7: unrepresentable data

OVERFLOWING = "0001-01-01T00:00:00+14:00"
"""A valid local time whose UTC instant is before year 1: no datetime holds it."""


def test_7_an_updated_at_no_datetime_can_hold_is_dead_lettered() -> None:
    bad = {"id": "x1", "updated_at": OVERFLOWING}
    sink = FakeSink()
    svc, _, _ = service(ListSource([page([*good(0, 2), bad, *good(2, 2)])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert [letter.reason for letter in sink.dead_letters] == [INVALID_UPDATED_AT]
    assert len(sink.published) == 4


@pytest.mark.parametrize("field", ["created_at", "last_activity_at"])
def test_7_a_date_field_no_datetime_can_hold_never_fails_the_run(field: str) -> None:
    odd = {**good(9, 1)[0], field: OVERFLOWING}
    sink = FakeSink()
    svc, _, _ = service(ListSource([page([*good(0, 2), odd])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert len(sink.published) + len(sink.dead_letters) == 3


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from([OVERFLOWING, "9999-12-31T23:59:59-14:00", "2026-02-30T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["created_at", "email", "name", "custom_fields", "tags", "extra"]), _JSON
    ),
    updated_at=st.sampled_from(["2026-03-01T00:00:00Z", OVERFLOWING, "+00:00", "2026-03-01"])
    | st.text(max_size=12),
)
def test_7_any_record_data_is_a_per_record_outcome_never_a_failed_run(
    fields: dict[str, object], updated_at: str
) -> None:
    record = {**fields, "id": "x1", "updated_at": updated_at}
    sink = FakeSink()
    svc, _, _ = service(ListSource([page([*good(0, 2), record])]), sink)
    report = svc.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert len(sink.published) + len(sink.dead_letters) == 3
