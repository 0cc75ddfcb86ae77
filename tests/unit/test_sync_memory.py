"""In-run dedup keeps a window, not the whole run, and the checkpoint is what it was with all."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.sync.checkpoint import Checkpoint
from producer.sync.run import CLOCK_MARGIN_US, SyncRun
from producer.sync.timestamps import format_instant, from_micros

pytestmark = pytest.mark.unit

BASE = 1_772_000_000_000_000


def _record(record_id: str, instant: int) -> dict[str, str]:
    return {"id": record_id, "updated_at": format_instant(instant)}


def _feed(run: SyncRun, rows: list[tuple[int, str]], limit: int, served_at: int) -> None:
    pages = [rows[i : i + limit] for i in range(0, len(rows), limit)] or [[]]
    for n, chunk in enumerate(pages, start=1):
        last = n == len(pages)
        run.accept_page(
            [_record(i, t) for t, i in chunk],
            has_more=not last,
            next_cursor=None if last else f"c{n}",
            served_at=served_at,
        )


def test_a_bulk_export_remembers_only_the_newest_instant() -> None:
    rows = [(BASE + n * 1000, f"cnt_{n:06d}") for n in range(20_000)]
    run = SyncRun("contacts", None, started_at=BASE + 10**12)
    _feed(run, rows, 100, served_at=BASE + 10**12)
    assert run.remembered_versions == 1
    checkpoint = run.checkpoint_after(run_id="r", completed_at="now", published=0)
    assert checkpoint is not None
    assert checkpoint.boundary_ids == {"cnt_019999"}


@settings(max_examples=300, deadline=None)
@given(
    instants=st.lists(st.integers(0, 40), min_size=1, max_size=60),
    horizon_at=st.integers(0, 45),
    limit=st.integers(1, 7),
    previous_at=st.one_of(st.none(), st.integers(0, 40)),
    max_rejected=st.sampled_from([1, 3, 10_000]),
)
def test_the_checkpoint_holds_every_version_at_or_after_it(
    instants: list[int],
    horizon_at: int,
    limit: int,
    previous_at: int | None,
    max_rejected: int,
) -> None:
    """Ascending keyset order with ties, some versions past the run-start cap: the boundary and
    the versions ahead of it are exactly those a run that remembered everything would store."""
    rows = sorted({(BASE + t * 1_000_000, f"id{n % 9}") for n, t in enumerate(instants)})
    served_at = BASE + horizon_at * 1_000_000 + CLOCK_MARGIN_US
    previous = None
    if previous_at is not None:
        previous = Checkpoint(
            resource="contacts",
            updated_at=format_instant(BASE + previous_at * 1_000_000),
            boundary_ids=frozenset(),
            ahead=frozenset(),
            boundary_complete=True,
        )
        rows = [r for r in rows if r[0] >= BASE + previous_at * 1_000_000]
    run = SyncRun("contacts", previous, started_at=0, max_rejected=max_rejected)
    _feed(run, rows, limit, served_at)
    checkpoint = run.checkpoint_after(run_id="r", completed_at="now", published=0)
    if not rows:
        assert checkpoint is None
        return
    instant = min(rows[-1][0], served_at - CLOCK_MARGIN_US)
    at_boundary = {i for t, i in rows if t == instant}
    ahead = {(i, t) for t, i in rows if t > instant}
    if checkpoint is None:  # unchanged, or never backwards
        assert previous is not None
        return
    assert from_micros(instant) == from_micros(checkpoint.instant or 0)
    assert checkpoint.boundary_complete  # of any size (issue 17, failure 8a)
    assert checkpoint.boundary_ids == at_boundary
    assert checkpoint.ahead == ahead
    assert run.remembered_versions == len(at_boundary) + len(ahead)
