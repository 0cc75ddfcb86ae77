"""PURE: the windows of a time-sliced bulk export (`BACKFILL_SLICES`).

A first export is one keyset traversal per resource, bound by the API's latency. Its
`updated_at` range, from the earliest record to the run-start cap, is cut into windows
`[gte, lt)` that K workers traverse side by side; the last window has no `lt`, so it also holds
whatever is updated while the export runs (behind its cursor or not: the run-start cap covers
that, as for one traversal). Each window has its own cursor and `SyncRun`; the checkpoint is
computed from all of them together (`SyncRun.merged`) once every window has finished.

All windows share one run-start cap, the export's (the probe page's clock less the margin),
set before their first page: a window that starts later must not get a later cap of its own,
or it would forget versions (bounded memory forgets below min(newest, cap)) that the export's
checkpoint, capped at the earliest cap, still needs.

Windows follow the data: even time windows cannot follow a burst (a bulk import puts every
record of 30 days in 6 seconds, so one window holds them all). When a worker is idle and a
window is still busy, the busy window hands the rest of its range over at the `updated_at` its
traversal has reached (`split_window`): it ends at its page boundary, the rest is cut in two,
the first half resuming from the busy window's mark (its boundary dedup), the second fresh.
Halving again whenever a worker idles converges on the data in a few splits per decade.

Progress marks of a sliced export hold every window (`window_progress`); a restarted export
resumes each window from its own mark (`restore_windows`): finished windows are not traversed
again, and no window publishes what its mark covers (exactly once in exactly-once mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from producer.sync.checkpoint import DEFAULT_MAX_REJECTED
from producer.sync.progress import WindowProgress
from producer.sync.run import SyncRun
from producer.sync.timestamps import Micros, format_instant, instant_micros

Window = tuple[str, str | None]

WINDOWS_PER_SLICE: Final = 4
"""Windows planned per worker. Even time windows hold very different numbers of records
(measured on the simulator: 284 to 1,447 of 5,000 in 8 windows), so with one window per worker
the export lasts as long as its fullest window; with 4 per worker, handed out as workers free
up, the work evens out for the cost of one more partial page per window."""


def plan_windows(earliest: Micros, cap: Micros, slices: int) -> list[Window]:
    """`slices` contiguous windows covering `[earliest, ∞)`, the bounds spread evenly up to
    `cap` (fewer when the range is too short to cut)."""
    span = cap - earliest
    count = max(1, min(slices, span)) if span > 0 else 1
    bounds = [earliest + span * i // count for i in range(count)]
    texts = [format_instant(b) for b in bounds]
    return [(texts[i], texts[i + 1] if i + 1 < count else None) for i in range(count)]


MIN_SPLIT_US: Final = 1_000_000
"""A window whose rest spans less than this is not split: the API renders `updated_at` in
whole seconds (docs/askelephant-api.md), so a narrower window could not divide the records
of one second, and would cost requests for nothing."""


def split_window(
    window: SyncRun, *, run_id: str, started_at: Micros, settle_us: Micros
) -> list[SyncRun] | None:
    """Hand the rest of a busy `window` to two new windows, or None when it cannot be cut:
    nothing seen yet, a boundary too large to carry in a mark, or a rest too short."""
    if window.done or window.window is None or window.horizon is None:
        return None
    mark = window.progress_mark(run_id=run_id, completed_at="", published=0)
    if mark is None or mark.instant is None or not mark.boundary_complete:
        return None
    _, lt = window.window
    end = window.horizon if lt is None else instant_micros(lt)
    if end - mark.instant < MIN_SPLIT_US:
        return None
    middle = format_instant(mark.instant + (end - mark.instant) // 2)
    halves = []
    for bounds, resume in (((mark.filter_value or middle, middle), mark), ((middle, lt), None)):
        halves.append(
            SyncRun(
                window.resource,
                None,
                started_at=started_at,
                max_rejected=window.max_rejected,
                resume_from=resume,  # the first half skips what the busy window published
                snapshot=True,
                window=bounds,
                horizon=window.horizon,
                settle_us=settle_us,
            )
        )
    window.hand_over_rest()
    return halves


def window_progress(
    windows: Sequence[SyncRun], *, run_id: str, written_at: str
) -> tuple[WindowProgress, ...]:
    """Every window's progress, for a progress mark of the export (taken when every event of
    every window so far was acknowledged; `restore_windows` reads it back)."""
    marks = []
    for window in windows:
        assert window.window is not None
        gte, lt = window.window
        mark = window.progress_mark(run_id=run_id, completed_at=written_at, published=0)
        if mark is None and window.resumed_from is not None:
            mark = window.resumed_from  # resumed, nothing new since: the old mark stands
        marks.append(WindowProgress(gte, lt, mark, window.done, window.horizon))
    return tuple(marks)


def restore_windows(
    resource: str,
    progress: Sequence[WindowProgress],
    *,
    started_at: Micros,
    max_rejected: int = DEFAULT_MAX_REJECTED,
    settle_us: Micros | None = None,
) -> list[SyncRun]:
    """The windows of an interrupted sliced export, from its progress mark: a finished window
    stays finished (its mark is what it contributes to the checkpoint), a started one resumes
    from its mark (`gte` the mark, the mark's dedup state), an untouched one starts over."""
    windows = []
    for saved in progress:
        mark = saved.mark
        gte = saved.gte if mark is None or mark.filter_value is None else mark.filter_value
        window = SyncRun(
            resource,
            None,
            started_at=started_at,
            max_rejected=max_rejected,
            resume_from=mark,
            snapshot=True,
            window=(gte, saved.lt),
            horizon=saved.horizon,
            **({} if settle_us is None else {"settle_us": settle_us}),
        )
        if saved.done:
            window.finish_restored()
        windows.append(window)
    return windows
