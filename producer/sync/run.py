"""One sync run of one resource, as a pure state machine.

The orchestrator asks for the next request (`filter_gte`, `cursor`), fetches the page, and
feeds it to `accept_page`, which answers with the versions to publish. When the traversal is
done and every event was acknowledged, `checkpoint_after` gives the checkpoint to commit.

Contract (seeds/bulk-exports-and-incremental-syncs.txt):
- no checkpoint: bulk export, no filter; else `filter[updated_at][gte]=<checkpoint>`;
- follow `next_cursor` until `has_more` is false; a repeated cursor, or `has_more` with no
  cursor, is a protocol error rather than an endless loop;
- dedup by `(id, updated_at)`: the checkpoint's boundary ids at exactly its instant, and any
  version already seen in this run;
- the new checkpoint is the highest `updated_at` seen, capped at the API's clock when the run
  started (see below); a record older than the checkpoint is published (it is the source's
  current state) and counted, but never moves it backwards.

Why the cap: keyset pagination walks `(updated_at, id)`. A record updated while the traversal
runs gets `updated_at = now`, which can tie with an instant the cursor already passed (same
clock tick), so it lands behind the cursor and this run never sees it. Any such update is
at or after the run's start, so the checkpoint never goes past the start (`served_at` of the
first page, from the API's `Date` header). The versions this run published at or after the
new checkpoint are stored with it, so the next run replays that window without duplicates.
Without an update during the run the cap changes nothing: the newest record predates it.

The cap's clock is the first page's `Date` header less the settle window (`settle_us`, at
least `CLOCK_MARGIN_US`); without a `Date` header, the producer's own clock at the run start
(`started_at`) less the same window.

Why a settle window (SETTLE_SECONDS, docs/architecture.md): a write can become visible to the
list endpoint after its `updated_at` stamp (a transaction that commits late, a lagging read
replica). If a newer version is already visible, a checkpoint at that newer instant would
leave the late one behind for good. With the cap at "API clock - settle", every version that
becomes visible within the settle window of its stamp is at or after the next run's `gte`.

Records that cannot be placed (not an object, no string id, no parseable `updated_at`) are
`Rejected` with a machine-readable reason: the caller dead-letters them and the run goes on.
They never move the checkpoint.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from producer.sync.checkpoint import DEFAULT_MAX_REJECTED, Checkpoint
from producer.sync.timestamps import InvalidTimestampError, Micros, format_instant, instant_micros

CLOCK_MARGIN_US: Final = 1_000_000
"""Taken off the run-start cap: the `Date` header has whole seconds and comes from the web
tier, whose clock may trail the database's that stamps `updated_at`; the same margin covers
a producer clock slightly ahead of the API's when there is no `Date` header."""

NOT_AN_OBJECT: Final = "not_an_object"
MISSING_ID: Final = "missing_id"
MISSING_UPDATED_AT: Final = "missing_updated_at"
INVALID_UPDATED_AT: Final = "invalid_updated_at"
PLACEMENT_REASONS: Final = (NOT_AN_OBJECT, MISSING_ID, MISSING_UPDATED_AT, INVALID_UPDATED_AT)
"""Reason codes of records the sync cannot place (dead-letter header `reason`)."""


class TraversalError(RuntimeError):
    """The API's pagination broke its contract (loop guard)."""


@dataclass(frozen=True)
class Identity:
    """What places a record in the stream: its id and `updated_at` (text and instant)."""

    record_id: str
    updated_at: str
    instant: Micros


@dataclass(frozen=True)
class Unplaceable:
    """Why a record cannot be placed: a reason code and a message for people."""

    reason: str
    message: str


def identify(record: object) -> Identity | Unplaceable:
    """Parse and validate a record's id and `updated_at` once (pure)."""
    if not isinstance(record, Mapping):
        return Unplaceable(NOT_AN_OBJECT, f"record is a {type(record).__name__}, not an object")
    record_id, updated_at = record.get("id"), record.get("updated_at")
    if not isinstance(record_id, str) or not record_id or not _utf8(record_id):
        return Unplaceable(MISSING_ID, "record has no usable string id")
    if not isinstance(updated_at, str):
        return Unplaceable(MISSING_UPDATED_AT, f"record {record_id} has no string updated_at")
    try:
        instant = instant_micros(updated_at)
    except InvalidTimestampError as exc:
        return Unplaceable(INVALID_UPDATED_AT, f"record {record_id}: {exc}")
    return Identity(record_id, updated_at, instant)


def fingerprint(record: object) -> str:
    """A stable digest of a record's content: what recognises a rejected record replayed by
    the next run's `gte` (it has no usable (id, updated_at) to recognise it by)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _utf8(text: str) -> bool:
    """False for lone surrogates (json.loads accepts "\\ud800"; no Kafka key can hold one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Version:
    """One record version accepted for publishing."""

    record: Mapping[str, Any]
    record_id: str
    updated_at: str
    instant: Micros
    stale: bool = False
    """Older than the checkpoint the run started from."""
    page: int = 0
    position: int = 0


@dataclass(frozen=True)
class Rejected:
    """A record the sync cannot place (no usable id or updated_at)."""

    page: int
    position: int
    reason: str
    """A code of `PLACEMENT_REASONS`."""
    message: str
    record: object


@dataclass
class RunStats:
    pages: int = 0
    fetched: int = 0
    accepted: int = 0
    boundary_skipped: int = 0
    duplicates_in_run: int = 0
    stale: int = 0
    rejected: int = 0
    rejected_replayed: int = 0
    """Rejected records the previous run already rejected (already dead-lettered)."""

    @property
    def deduplicated(self) -> int:
        return self.boundary_skipped + self.duplicates_in_run + self.rejected_replayed


@dataclass(frozen=True)
class PageResult:
    accepted: list[Version]
    rejected: list[Rejected]


class SyncRun:
    def __init__(
        self,
        resource: str,
        checkpoint: Checkpoint | None,
        *,
        started_at: Micros,
        max_rejected: int = DEFAULT_MAX_REJECTED,
        resume_from: Checkpoint | None = None,
        snapshot: bool | None = None,
        window: tuple[str, str | None] | None = None,
        horizon: Micros | None = None,
        settle_us: Micros = CLOCK_MARGIN_US,
    ) -> None:
        """`started_at`: the producer's clock at the run start, the cap when no `Date` comes.
        `horizon`: the run-start cap, when it is known before the first page: the windows of
        one sliced export share the export's (producer/sync/slices.py)."""
        if checkpoint is not None and checkpoint.resource != resource:
            raise ValueError(f"checkpoint of {checkpoint.resource!r} used for {resource!r}")
        if resume_from is not None:
            # a progress mark of an interrupted run: start there, with its dedup state
            checkpoint = resume_from
        self.resource = resource
        self.previous = checkpoint
        self._resumed = resume_from is not None
        self._window = window
        """`(gte, lt)` of one window of a time-sliced bulk export (lt None: open-ended)."""
        self._snapshot = checkpoint is None if snapshot is None else snapshot
        self.max_rejected = max_rejected
        self.stats = RunStats()
        self.cursor: str | None = None
        self.done = False
        self._start: Micros | None = checkpoint.instant if checkpoint is not None else None
        self._cursors_used: set[str] = set()
        self._rejected_seen: set[str] = set()
        """Fingerprints of the records this run rejected (or found rejected before)."""
        self._seen: dict[Micros, set[str]] = {}
        """instant -> ids: the placeable versions the API returned in this run (published or
        skipped) that can still matter, i.e. at or after `_floor` (see `_forget_below`)."""
        self._seen_instants: list[Micros] = []
        """The keys of `_seen` as a min-heap, to forget the oldest first."""
        self._floor: Micros | None = None
        self._newest: tuple[Micros, str] | None = None
        self._started_at = started_at
        self.settle_us = max(settle_us, CLOCK_MARGIN_US)
        """Taken off the API's clock for the cap (module docstring)."""
        self._horizon: Micros | None = horizon
        """The API's clock when the run started, less the margin: the checkpoint never goes
        past it. Set by the first page (unless given)."""

    @property
    def snapshot(self) -> bool:
        """A bulk export: no checkpoint to start from (or resuming one)."""
        return self._snapshot

    @property
    def newest_instant(self) -> Micros | None:
        """The highest `updated_at` the API returned in this run."""
        return None if self._newest is None else self._newest[0]

    @property
    def horizon(self) -> Micros | None:
        """The API's clock at the run start less the margin (None before the first page):
        once the run succeeded, every change before it is in Kafka."""
        return self._horizon

    @property
    def remembered_versions(self) -> int:
        """Versions held for dedup and the checkpoint (bounded: see `_forget_below`)."""
        return sum(len(ids) for ids in self._seen.values())

    @property
    def filter_gte(self) -> str | None:
        if self._window is not None:
            return self._window[0]
        return None if self.previous is None else self.previous.filter_value

    @property
    def filter_lt(self) -> str | None:
        """The end (exclusive) of this run's window of a time-sliced backfill, if any."""
        return None if self._window is None else self._window[1]

    @classmethod
    def merged(cls, windows: Sequence[SyncRun]) -> SyncRun:
        """The windows of one time-sliced backfill as one finished run: what each saw, the
        newest version, and the earliest run-start cap (the first request of any window),
        so the checkpoint arithmetic is the same as for one traversal of the whole range."""
        first = windows[0]
        whole = cls(
            first.resource,
            None,
            started_at=first._started_at,
            max_rejected=first.max_rejected,
            snapshot=True,
            settle_us=first.settle_us,
        )
        for window in windows:
            if not window.done:
                raise TraversalError(f"{window.resource}: a window has not finished")
            for instant, ids in window._seen.items():
                whole._remember(instant, ids)
            whole._rejected_seen |= window._rejected_seen
            newest = window._newest
            mark = window.previous if window._resumed else None
            if mark is not None and mark.instant is not None:
                # resumed from its progress mark (producer/sync/slices.py): what the window
                # published before the restart is in the mark, not in `_seen`
                whole._remember(mark.instant, mark.boundary_ids)
                for record_id, instant in mark.ahead:
                    whole._remember(instant, (record_id,))
                whole._rejected_seen |= mark.rejected
                before = max((mark.instant, *(t for _, t in mark.ahead)))
                if newest is None or before > newest[0]:
                    text = mark.updated_at if before == mark.instant else None
                    newest = (before, text or format_instant(before))
            if newest is not None and (whole._newest is None or newest[0] > whole._newest[0]):
                whole._newest = newest
            if window._horizon is not None:
                whole._horizon = (
                    window._horizon
                    if whole._horizon is None
                    else min(whole._horizon, window._horizon)
                )
            for name in vars(whole.stats):
                setattr(whole.stats, name, getattr(whole.stats, name) + getattr(window.stats, name))
        whole.done = True
        return whole

    def _remember(self, instant: Micros, ids: Iterable[str]) -> None:
        known = self._seen.get(instant)
        if known is None:
            known = self._seen[instant] = set()
            heapq.heappush(self._seen_instants, instant)
        known.update(ids)

    @property
    def resumed_from(self) -> Checkpoint | None:
        """The progress mark this run resumed from, if any."""
        return self.previous if self._resumed else None

    def hand_over_rest(self) -> None:
        """End this window's traversal at the current page: the rest of its range was handed
        to windows of its own (`producer.sync.slices.split_window`); what it saw so far is
        what it adds to `merged`."""
        self.done = True
        self.cursor = None

    def finish_restored(self) -> None:
        """A window that had finished before a restart (producer/sync/slices.py): done; its
        mark (`resume_from`) is what it adds to `merged`."""
        self.done = True

    @property
    def window(self) -> tuple[str, str | None] | None:
        """`(gte, lt)` of this window of a time-sliced export (None: not a window)."""
        return self._window

    def accept_page(
        self,
        records: Sequence[object],
        *,
        has_more: bool,
        next_cursor: str | None,
        served_at: Micros | None = None,
    ) -> PageResult:
        """Take one page; `served_at` is the API's clock for it (the `Date` header), if any."""
        if self.done:
            raise TraversalError(f"{self.resource}: page received after the traversal finished")
        if self._horizon is None:
            clock = served_at if served_at is not None else self._started_at
            self._horizon = clock - self.settle_us
        self.stats.pages += 1
        self.stats.fetched += len(records)
        accepted: list[Version] = []
        rejected: list[Rejected] = []
        for position, record in enumerate(records):
            outcome = self._accept_record(record, position)
            if isinstance(outcome, Unplaceable):
                digest = fingerprint(record)
                known = self.previous is not None and digest in self.previous.rejected
                if known or digest in self._rejected_seen:
                    self.stats.rejected_replayed += 1
                else:
                    page = self.stats.pages
                    rejected.append(
                        Rejected(page, position, outcome.reason, outcome.message, record)
                    )
                self._rejected_seen.add(digest)
            elif outcome is not None:
                accepted.append(outcome)
        self.stats.accepted += len(accepted)
        self.stats.rejected += len(rejected)
        self._advance(has_more, next_cursor)
        return PageResult(accepted, rejected)

    def _accept_record(self, record: object, position: int) -> Version | Unplaceable | None:
        """The version to publish, why it cannot be placed, or None for a duplicate."""
        identity = identify(record)
        if isinstance(identity, Unplaceable):
            return identity
        assert isinstance(record, Mapping)  # identify() checked it
        record_id, updated_at, instant = identity.record_id, identity.updated_at, identity.instant

        if self._newest is None or instant > self._newest[0]:
            self._newest = (instant, updated_at)
        if self._floor is None or instant >= self._floor:
            ids = self._seen.get(instant)
            if ids is None:
                ids = self._seen[instant] = set()
                heapq.heappush(self._seen_instants, instant)
            elif record_id in ids:
                self.stats.duplicates_in_run += 1
                return None
            ids.add(record_id)
            self._forget_below()
        if self.previous is not None and self.previous.skips(record_id, instant):
            self.stats.boundary_skipped += 1
            return None
        stale = self._start is not None and instant < self._start
        if stale:
            self.stats.stale += 1
        return Version(record, record_id, updated_at, instant, stale, self.stats.pages, position)

    def _forget_below(self) -> None:
        """Bounded memory: drop the versions below min(newest, horizon).

        The checkpoint needs only the versions at or after its instant, which is
        min(newest, horizon) (see `checkpoint_after`), and neither ever goes down. For dedup,
        keyset pagination serves (updated_at, id) in ascending order, so a version behind the
        newest cannot come back in this run: the set stays a window of the newest instant (and
        of what changed since the run started), not the whole run. An API that broke its own
        order would get such a version published twice (at least once, never lost)."""
        assert self._newest is not None
        assert self._horizon is not None
        floor = min(self._newest[0], self._horizon)
        if self._floor is not None and floor <= self._floor:
            return
        self._floor = floor
        heap = self._seen_instants
        while heap and heap[0] < floor:
            del self._seen[heapq.heappop(heap)]

    def _advance(self, has_more: bool, next_cursor: str | None) -> None:
        if not has_more:
            self.done = True
            self.cursor = None
            return
        if not next_cursor:
            raise TraversalError(
                f"{self.resource}: has_more is true but next_cursor is empty "
                f"(page {self.stats.pages})"
            )
        if next_cursor in self._cursors_used:
            raise TraversalError(
                f"{self.resource}: next_cursor repeated on page {self.stats.pages}; "
                "stopping instead of looping"
            )
        self._cursors_used.add(next_cursor)
        self.cursor = next_cursor

    def checkpoint_after(
        self, *, run_id: str, completed_at: str, published: int
    ) -> Checkpoint | None:
        """The checkpoint to commit once every event was acknowledged; None if unchanged."""
        if not self.done:
            raise TraversalError(f"{self.resource}: the traversal has not finished")
        if self._newest is None and self._resumed and self.previous is not None:
            # resumed from a progress mark and nothing came after it: the mark is the result
            return replace(self.previous, run_id=run_id, completed_at=completed_at)
        return self._mark(run_id=run_id, completed_at=completed_at, published=published, final=True)

    def progress_mark(self, *, run_id: str, completed_at: str, published: int) -> Checkpoint | None:
        """Mid-run: where a restarted run may resume, once every event of the pages taken so
        far was acknowledged (None: no progress past the starting point yet).

        The same arithmetic as the final checkpoint: a resumed run asks for `gte` the mark and
        skips its boundary and `ahead` versions, so it publishes nothing twice, and the mark
        never passes the run-start cap, so nothing updated during the run is skipped.
        Unlike the final checkpoint, a mark keeps the starting checkpoint's skip state that
        this run has not met again yet (its cursor has not got there).
        """
        return self._mark(
            run_id=run_id, completed_at=completed_at, published=published, final=False
        )

    def _mark(
        self, *, run_id: str, completed_at: str, published: int, final: bool
    ) -> Checkpoint | None:
        if self._newest is None:
            return None  # the API returned nothing: the checkpoint stands as it was
        newest, newest_text = self._newest
        assert self._horizon is not None  # set by the first page, and _newest needs a page
        instant = min(newest, self._horizon)
        start, previous = self._start, self.previous
        if start is not None and instant <= start:
            if instant < start or previous is None:
                return None  # never backwards
            text = previous.updated_at or newest_text
        else:
            text = newest_text if instant == newest else format_instant(instant)
        # everything at or after `instant` is still in `_seen` (`_forget_below`)
        at_boundary = frozenset(self._seen.get(instant, ()))
        ahead = frozenset((i, t) for t, ids in self._seen.items() if t > instant for i in ids)
        if not final and previous is not None and previous.boundary_complete:
            # Versions the starting checkpoint already covers and this run has not met again:
            # same (id, updated_at) means the same version, so skipping them stays right.
            if previous.instant == instant:
                at_boundary |= previous.boundary_ids
            at_boundary |= {i for i, t in previous.ahead if t == instant}
            ahead |= {(i, t) for i, t in previous.ahead if t > instant}
        # Every version at or after the instant is stored, however many share it (issue 17,
        # failure 8a): a limit here would make the next run republish them, duplicates even
        # in exactly-once mode. The store writes a large boundary as chunk records
        # (producer/sync/chunks.py), so no Kafka record grows with it. Memory: these ids are
        # already held in `_seen`, about 85 bytes of set slot per version plus the id string
        # (about 80 bytes for a 30-character id); the checkpoint's frozensets share the
        # strings and add about 40 bytes per version: some 5 MB for 25,000 versions at one
        # instant (measured with tracemalloc, CPython 3.11).
        # `boundary_complete=False` comes only from checkpoints of older releases, and
        # `previous.boundary_complete` above and below still honours it.
        # Rejected records' fingerprints ride along so the replay does not dead-letter them
        # again; too many, and none are kept (a repeated dead letter, never a lost one).
        rejected = (
            frozenset(self._rejected_seen)
            if len(self._rejected_seen) <= self.max_rejected
            else frozenset()
        )
        if (
            previous is not None
            and not self._resumed  # a resumed run must replace the committed checkpoint
            and start == instant
            and previous.reset_by is None
            and previous.boundary_complete
            and (previous.boundary_ids, previous.ahead) == (at_boundary, ahead)
            and previous.rejected == rejected
        ):
            return None
        return Checkpoint(
            resource=self.resource,
            updated_at=text,
            boundary_ids=at_boundary,
            ahead=ahead,
            rejected=rejected,
            run_id=run_id,
            completed_at=completed_at,
            record_count=published,
        )
