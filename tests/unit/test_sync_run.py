from typing import Any

import pytest

from producer.sync.checkpoint import Checkpoint
from producer.sync.run import SyncRun, TraversalError


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
    run = SyncRun("contacts", None)
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
    run = SyncRun("contacts", previous)
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
    run = SyncRun("tags", previous)
    published = finish(run, [rec("t1", "2026-03-03T00:00:00Z"), rec("t2", "2026-03-03T00:00:00Z")])
    assert published == []
    assert run.stats.deduplicated == 2
    assert run.checkpoint_after(run_id="r", completed_at="now", published=0) is None


def test_new_tie_at_the_boundary_grows_the_boundary_set() -> None:
    previous = Checkpoint("tags", "2026-03-03T00:00:00Z", frozenset({"t1"}))
    run = SyncRun("tags", previous)
    assert finish(run, [rec("t1", "2026-03-03T00:00:00Z"), rec("t9", "2026-03-03T00:00:00Z")]) == [
        "t9"
    ]
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=1)
    assert cp is not None
    assert cp.boundary_ids == {"t1", "t9"}
    assert cp.updated_at == "2026-03-03T00:00:00Z"


def test_version_seen_twice_in_one_run_is_published_once() -> None:
    run = SyncRun("users", None)
    published = finish(
        run, [rec("u1", "2026-03-01T00:00:00Z")], [rec("u1", "2026-03-01T00:00:00.000Z")]
    )
    assert published == ["u1"]
    assert run.stats.duplicates_in_run == 1


def test_stale_record_is_published_counted_and_never_moves_the_checkpoint_back() -> None:
    previous = Checkpoint("users", "2026-03-03T00:00:00Z")
    run = SyncRun("users", previous)
    result = run.accept_page([rec("u1", "2026-03-01T00:00:00Z")], has_more=False, next_cursor=None)
    assert [v.stale for v in result.accepted] == [True]
    assert run.stats.stale == 1
    assert run.checkpoint_after(run_id="r", completed_at="now", published=1) is None


def test_boundary_overflow_falls_back_to_replaying_the_boundary() -> None:
    run = SyncRun("tags", None, max_boundary_ids=2)
    finish(run, [rec(f"t{i}", "2026-03-03T00:00:00Z") for i in range(3)])
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=3)
    assert cp is not None
    assert not cp.boundary_complete
    assert cp.boundary_ids == frozenset()
    replay = SyncRun("tags", cp, max_boundary_ids=2)
    # at-least-once: everything at the boundary instant is published again, nothing lost
    assert len(finish(replay, [rec(f"t{i}", "2026-03-03T00:00:00Z") for i in range(3)])) == 3


def test_repeated_cursor_is_a_loop_guard_error() -> None:
    run = SyncRun("contacts", None)
    run.accept_page([], has_more=True, next_cursor="same")
    with pytest.raises(TraversalError, match="repeated"):
        run.accept_page([], has_more=True, next_cursor="same")


@pytest.mark.parametrize("cursor", [None, ""])
def test_has_more_without_cursor_is_an_error(cursor: str | None) -> None:
    run = SyncRun("contacts", None)
    with pytest.raises(TraversalError, match="next_cursor"):
        run.accept_page([], has_more=True, next_cursor=cursor)


def test_pages_after_the_end_and_early_checkpoints_are_errors() -> None:
    run = SyncRun("contacts", None)
    with pytest.raises(TraversalError, match="not finished"):
        run.checkpoint_after(run_id="r", completed_at="now", published=0)
    run.accept_page([], has_more=False, next_cursor="ignored")
    with pytest.raises(TraversalError, match="after the traversal"):
        run.accept_page([], has_more=False, next_cursor=None)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("text", "not an object"),
        ({"updated_at": "2026-03-01T00:00:00Z"}, "no string id"),
        ({"id": "x"}, "no string updated_at"),
        ({"id": "x", "updated_at": "soon"}, "not an ISO-8601"),
    ],
)
def test_unplaceable_records_are_rejected_with_a_reason(record: object, reason: str) -> None:
    run = SyncRun("contacts", None)
    result = run.accept_page([record], has_more=False, next_cursor=None)
    assert result.accepted == []
    assert reason in result.rejected[0].reason
    assert run.stats.rejected == 1
    assert run.checkpoint_after(run_id="r", completed_at="now", published=0) is None


def test_checkpoint_of_another_resource_is_refused() -> None:
    with pytest.raises(ValueError, match="contacts"):
        SyncRun("tags", Checkpoint("contacts", "2026-03-03T00:00:00Z"))


def test_after_a_reset_the_first_run_commits_even_without_news() -> None:
    reset = Checkpoint("tags", "2026-03-03T00:00:00Z", reset_by="ops", reset_from=None)
    run = SyncRun("tags", reset)
    finish(run, [rec("t1", "2026-03-03T00:00:00Z")])
    cp = run.checkpoint_after(run_id="r", completed_at="now", published=1)
    assert cp is not None
    assert cp.reset_by is None
    assert cp.boundary_ids == {"t1"}
