"""PURE: the windows of a time-sliced bulk export (`BACKFILL_SLICES`).

A first export is one keyset traversal per resource, bound by the API's latency. Its
`updated_at` range, from the earliest record to the run-start cap, is cut into windows
`[gte, lt)` that K workers traverse side by side; the last window has no `lt`, so it also holds
whatever is updated while the export runs (behind its cursor or not: the run-start cap covers
that, as for one traversal). Each window has its own cursor and `SyncRun`; the checkpoint is
computed from all of them together (`SyncRun.merged`) once every window has finished.
"""

from __future__ import annotations

from typing import Final

from producer.sync.timestamps import Micros, format_instant

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
