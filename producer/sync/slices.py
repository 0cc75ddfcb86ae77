"""PURE: the windows of a time-sliced bulk export (`BACKFILL_SLICES`).

A first export is one keyset traversal per resource, bound by the API's latency. Its
`updated_at` range, from the earliest record to the run-start cap, is cut into K windows
`[gte, lt)` traversed side by side; the last window has no `lt`, so it also holds whatever is
updated while the export runs (behind its cursor or not: the run-start cap covers that, as for
one traversal). Each window has its own cursor and `SyncRun`; the checkpoint is computed from
all of them together (`SyncRun.merged`) once every window has finished.
"""

from __future__ import annotations

from producer.sync.timestamps import Micros, format_instant

Window = tuple[str, str | None]


def plan_windows(earliest: Micros, cap: Micros, slices: int) -> list[Window]:
    """`slices` contiguous windows covering `[earliest, ∞)`, the bounds spread evenly up to
    `cap` (fewer when the range is too short to cut)."""
    span = cap - earliest
    count = max(1, min(slices, span)) if span > 0 else 1
    bounds = [earliest + span * i // count for i in range(count)]
    texts = [format_instant(b) for b in bounds]
    return [(texts[i], texts[i + 1] if i + 1 < count else None) for i in range(count)]
