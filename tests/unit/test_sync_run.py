import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.sync.checkpoint import Checkpoint
from producer.sync.run import (
    CLOCK_MARGIN_US,
    INVALID_UPDATED_AT,
    MISSING_ID,
    MISSING_UPDATED_AT,
    NOT_AN_OBJECT,
    SyncRun,
    TraversalError,
)
from producer.sync.slices import plan_windows
from producer.sync.timestamps import instant_micros

LATER = instant_micros("2030-01-01T00:00:00Z")
"""A run start after every record of these tests: the run-start cap changes nothing."""


def rec(record_id: str, updated_at: str) -> dict[str, Any]:
    return {"id": record_id, "updated_at": updated_at, "created_at": "2026-01-01T00:00:00Z"}


def finish(run: SyncRun, *pages: list[Any]) -> list[str]:
    published: list[str] = []
    for n, page in enumerate(pages, start=1):
        last = n == len(pages)
        result = run.accept_page(page, has_more=not last, next_cursor=None if last else f"c{n}")
        published += [v.record_id for v in result.accepted]
    return published


def test_bulk_export_has_no_filter_and_sets_the_newest_checkpoint() -> None:
    run = SyncRun("contacts", None, started_at=LATER)
    assert run.snapshot
    assert run.filter_gte is None
    published = finish(
        run,
        [rec("a", "2026-03-01T00:00:00Z"), rec("b", "2026-03-02T00:00:00Z")],
        [rec("c", "2026-03-03T00:00:00.5Z"), rec("d", "2026-03-03T00:00:00.500+00:00")],
    )
    assert published == ["a", "b", "c", "d"]
    cp = run.checkpoint_after(run_id="r1", completed_at="now", published=4)
    assert cp is not None
    assert cp.updated_at == "2026-03-03T00:00:00.5Z"  # as the API wrote it
    assert cp.boundary_ids == {"c", "d"}
    assert cp.record_count == 4


def test_incremental_run_filters_gte_and_skips_exactly_the_boundary() -> None:
    previous = Checkpoint("contacts", "2026-03-03T00:00:00Z", frozenset({"c"}))
    run = SyncRun("contacts", previous, started_at=LATER)
    assert not run.snapshot
    assert run.filter_gte == "2026-03-03T00:00:00.000Z"
    published = finish(
        run,
        [
            rec("c", "2026-03-03T00:00:00.000Z"),  # boundary replay: skipped
            rec("e", "2026-03-03T00:00:00Z"),  # same instant, new id: published
            rec("c", "2026-03-04T00:00:00Z"),  # c changed since: published
        ],
    )
    assert published == ["e", "c"]
    assert run.stats.boundary_skipped == 1
    cp = run.checkpoint_after(run_id="r2", completed_at="now", published=2)
    assert cp is not None
    assert cp.updated_at == "2026-03-04T00:00:00Z"
    assert cp.boundary_ids == {"c"}


def test_quiet_boundary_replay_publishes_nothing_and_keeps_the_checkpoint() -> None:
    previous = Checkpoint("tags", "2026-03-03T00:00:00Z", frozenset({"t1", "t2"}))
    run = SyncRun("tags", previous, started_at=LATER)
    published = finish(run, [rec("t1", "2026-03-03T00:00:00Z"), rec("t2", "2026-03-03T00:00:00Z")])
    assert published == []
    assert run.stats.deduplicated == 2
    assert run.checkpoint_after(run_id="r", completed_at="now", published=0) is None


def test_new_tie_at_the_boundary_grows_the_boundary_set() -> None:
    previous = Checkpoint("tags", "2026-03-03T00:00:00Z", frozenset({"t1"}))
    run = SyncRun("tags", previous, started_at=LATER)
    assert finish(run, [rec("t1", "2026-03-03T00:00:00Z"), rec("t9", "2026-03-03T00:00:00Z")]) == [
        "t9"
    ]
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=1)
    assert cp is not None
    assert cp.boundary_ids == {"t1", "t9"}
    assert cp.updated_at == "2026-03-03T00:00:00Z"


def test_version_seen_twice_in_one_run_is_published_once() -> None:
    run = SyncRun("users", None, started_at=LATER)
    published = finish(
        run, [rec("u1", "2026-03-01T00:00:00Z")], [rec("u1", "2026-03-01T00:00:00.000Z")]
    )
    assert published == ["u1"]
    assert run.stats.duplicates_in_run == 1


def test_stale_record_is_published_counted_and_never_moves_the_checkpoint_back() -> None:
    previous = Checkpoint("users", "2026-03-03T00:00:00Z")
    run = SyncRun("users", previous, started_at=LATER)
    result = run.accept_page([rec("u1", "2026-03-01T00:00:00Z")], has_more=False, next_cursor=None)
    assert [v.stale for v in result.accepted] == [True]
    assert run.stats.stale == 1
    assert run.checkpoint_after(run_id="r", completed_at="now", published=1) is None


def test_a_boundary_larger_than_the_old_limit_is_stored_whole_and_skipped() -> None:
    """Issue 17, failure 8a: more than 10,000 versions at one instant used to be dropped from
    the checkpoint, and the next run republished them all."""
    ids = [f"t{i:05d}" for i in range(12_000)]
    run = SyncRun("tags", None, started_at=LATER)
    finish(run, [rec(i, "2026-03-03T00:00:00Z") for i in ids])
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=len(ids))
    assert cp is not None
    assert cp.boundary_complete
    assert cp.boundary_ids == frozenset(ids)
    replay = SyncRun("tags", cp, started_at=LATER)
    assert finish(replay, [rec(i, "2026-03-03T00:00:00Z") for i in ids]) == []


def test_an_incomplete_boundary_of_an_older_release_is_replayed() -> None:
    cp = Checkpoint("tags", "2026-03-03T00:00:00Z", boundary_complete=False)
    replay = SyncRun("tags", cp, started_at=LATER)
    # at-least-once: everything at the boundary instant is published again, nothing lost
    assert len(finish(replay, [rec(f"t{i}", "2026-03-03T00:00:00Z") for i in range(3)])) == 3


def test_repeated_cursor_is_a_loop_guard_error() -> None:
    run = SyncRun("contacts", None, started_at=LATER)
    run.accept_page([], has_more=True, next_cursor="same")
    with pytest.raises(TraversalError, match="repeated"):
        run.accept_page([], has_more=True, next_cursor="same")


@pytest.mark.parametrize("cursor", [None, ""])
def test_has_more_without_cursor_is_an_error(cursor: str | None) -> None:
    run = SyncRun("contacts", None, started_at=LATER)
    with pytest.raises(TraversalError, match="next_cursor"):
        run.accept_page([], has_more=True, next_cursor=cursor)


def test_pages_after_the_end_and_early_checkpoints_are_errors() -> None:
    run = SyncRun("contacts", None, started_at=LATER)
    with pytest.raises(TraversalError, match="not finished"):
        run.checkpoint_after(run_id="r", completed_at="now", published=0)
    run.accept_page([], has_more=False, next_cursor="ignored")
    with pytest.raises(TraversalError, match="after the traversal"):
        run.accept_page([], has_more=False, next_cursor=None)


@pytest.mark.parametrize(
    ("record", "reason", "message"),
    [
        ("text", NOT_AN_OBJECT, "not an object"),
        ({"updated_at": "2026-03-01T00:00:00Z"}, MISSING_ID, "no usable string id"),
        ({"id": "\ud800", "updated_at": "2026-03-01T00:00:00Z"}, MISSING_ID, "string id"),
        ({"id": "x"}, MISSING_UPDATED_AT, "no string updated_at"),
        ({"id": "x", "updated_at": "last tuesday"}, INVALID_UPDATED_AT, "not an ISO-8601"),
    ],
)
def test_unplaceable_records_are_rejected_with_a_reason(
    record: object, reason: str, message: str
) -> None:
    run = SyncRun("contacts", None, started_at=LATER)
    result = run.accept_page(
        [{"id": "ok", "updated_at": "2026-03-01T00:00:00Z"}, record],
        has_more=False,
        next_cursor=None,
    )
    assert [v.record_id for v in result.accepted] == ["ok"]
    assert result.rejected[0].reason == reason
    assert message in result.rejected[0].message
    assert (result.rejected[0].page, result.rejected[0].position) == (1, 1)
    assert run.stats.rejected == 1
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=1)
    assert cp is not None  # the checkpoint moves past the rejected record
    assert cp.updated_at == "2026-03-01T00:00:00Z"


def test_checkpoint_of_another_resource_is_refused() -> None:
    with pytest.raises(ValueError, match="contacts"):
        SyncRun("tags", Checkpoint("contacts", "2026-03-03T00:00:00Z"), started_at=LATER)


def test_after_a_reset_the_first_run_commits_even_without_news() -> None:
    reset = Checkpoint("tags", "2026-03-03T00:00:00Z", reset_by="ops", reset_from=None)
    run = SyncRun("tags", reset, started_at=LATER)
    finish(run, [rec("t1", "2026-03-03T00:00:00Z")])
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=1)
    assert cp is not None
    assert cp.reset_by is None
    assert cp.boundary_ids == {"t1"}


def test_the_checkpoint_is_capped_at_the_first_pages_date_less_the_margin() -> None:
    run = SyncRun("contacts", None, started_at=LATER)
    served = instant_micros("2026-03-03T00:00:10Z")
    run.accept_page(
        [rec("a", "2026-03-03T00:00:00Z"), rec("b", "2026-03-03T00:00:09.5Z")],
        has_more=True,
        next_cursor="c1",
        served_at=served,
    )
    run.accept_page(
        [rec("c", "2026-03-03T00:00:20Z")],
        has_more=False,
        next_cursor=None,
        served_at=served + 60_000_000,
    )
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=3)
    assert cp is not None
    assert cp.instant == served - CLOCK_MARGIN_US  # the first page's clock, not the last's
    assert cp.ahead == {
        ("b", instant_micros("2026-03-03T00:00:09.5Z")),
        ("c", instant_micros("2026-03-03T00:00:20Z")),
    }


def test_without_a_date_header_the_producers_clock_caps_the_checkpoint() -> None:
    started = instant_micros("2026-03-03T00:00:10Z")
    run = SyncRun("contacts", None, started_at=started)
    run.accept_page([rec("a", "2026-03-03T00:00:30Z")], has_more=False, next_cursor=None)
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=1)
    assert cp is not None
    assert cp.instant == started - CLOCK_MARGIN_US
    assert cp.ahead == {("a", instant_micros("2026-03-03T00:00:30Z"))}


def test_a_rejected_record_replayed_by_the_next_run_is_not_rejected_again() -> None:
    bad = {"id": "x", "updated_at": "last tuesday"}
    started = instant_micros("2026-03-03T00:00:00Z")
    run = SyncRun("users", None, started_at=started)
    first = run.accept_page(
        [rec("a", "2026-03-01T00:00:00Z"), bad, rec("b", "2026-03-03T00:00:00Z")],
        has_more=False,
        next_cursor=None,
    )
    assert len(first.rejected) == 1
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=2)
    assert cp is not None
    assert len(cp.rejected) == 1
    assert Checkpoint.from_json(cp.to_json()) == cp
    # the cap put b (and the bad record, served next to it) in the replay window
    replay = SyncRun("users", cp, started_at=LATER)
    again = replay.accept_page(
        [bad, rec("b", "2026-03-03T00:00:00Z")], has_more=False, next_cursor=None
    )
    assert (again.rejected, again.accepted) == ([], [])
    assert replay.stats.rejected_replayed == 1
    # a changed bad record is new content: rejected (dead-lettered) again
    changed = SyncRun("users", cp, started_at=LATER)
    result = changed.accept_page([{**bad, "name": "new"}], has_more=False, next_cursor=None)
    assert len(result.rejected) == 1


@given(
    earliest=st.integers(0, 10**15),
    span=st.integers(-(10**9), 10**12),
    slices=st.integers(1, 16),
)
def test_windows_cover_everything_from_the_earliest_record_without_overlap(
    earliest: int, span: int, slices: int
) -> None:
    windows = plan_windows(earliest, earliest + span, slices)
    assert 1 <= len(windows) <= slices
    assert instant_micros(windows[0][0]) == earliest
    assert windows[-1][1] is None  # open-ended: updates during the export land there
    for (_, lt), (gte, _) in itertools.pairwise(windows):
        assert lt == gte  # contiguous, [gte, lt) each
    starts = [instant_micros(gte) for gte, _ in windows]
    assert starts == sorted(set(starts))


def test_merged_windows_checkpoint_like_one_traversal() -> None:
    whole = SyncRun("tags", None, started_at=LATER)
    whole.accept_page(
        [
            rec("a", "2026-03-01T00:00:00Z"),
            rec("b", "2026-03-02T00:00:00Z"),
            rec("c", "2026-03-03T00:00:00Z"),
            rec("d", "2026-03-03T00:00:00Z"),
        ],
        has_more=False,
        next_cursor=None,
    )
    windows = plan_windows(
        instant_micros("2026-03-01T00:00:00Z"), instant_micros("2026-03-03T00:00:00Z"), 2
    )
    runs = [SyncRun("tags", None, started_at=LATER, window=w) for w in windows]
    assert (runs[0].filter_gte, runs[0].filter_lt) == windows[0]
    assert runs[0].snapshot
    runs[0].accept_page([rec("a", "2026-03-01T00:00:00Z")], has_more=False, next_cursor=None)
    runs[1].accept_page(
        [
            rec("b", "2026-03-02T00:00:00Z"),
            rec("c", "2026-03-03T00:00:00Z"),
            rec("d", "2026-03-03T00:00:00Z"),
        ],
        has_more=False,
        next_cursor=None,
    )
    merged = SyncRun.merged(runs)
    assert merged.stats.fetched == 4
    assert merged.checkpoint_after(run_id="r", completed_at="t", published=4) == (
        whole.checkpoint_after(run_id="r", completed_at="t", published=4)
    )
