"""The orchestrator: one sync run of one resource through the staged pipeline, and the polling
loop over all resources.

    Source ──► SyncRun ──► EventBuilder ──► RunSink          (producer/pipeline/ports.py)

Every stage is behind a port; this module only sequences them, decides what a rejected record
becomes (a dead letter, or a failed run under `DEAD_LETTER_POLICY=fail`), and reports.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from producer.observability.logging import log_run
from producer.pipeline.build import EventBuilder
from producer.pipeline.deletes import DeleteGuard, NoDeletes
from producer.pipeline.driver import BatchPolicy, Commit, page_items, run_mark, windows_mark
from producer.pipeline.ports import (
    CheckpointReader,
    LaneError,
    LaneFencedError,
    Liveness,
    RunObserver,
    Sink,
    Source,
    SourcePage,
    TraversalInterruptedError,
)
from producer.pipeline.writer import (
    DEAD_LETTER_POLICIES,
    DeadLetterPolicy,
    RejectedRecordsError,
    RunWriter,
)
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress
from producer.sync.run import (
    CLOCK_MARGIN_US,
    Identity,
    RunStats,
    SyncRun,
    TraversalError,
    identify,
)
from producer.sync.slices import (
    WINDOWS_PER_SLICE,
    Window,
    plan_windows,
    restore_windows,
    split_window,
)
from producer.sync.timestamps import Micros, to_micros

log = logging.getLogger(__name__)

SHUTDOWN_JOIN_S: Final = 5.0
"""How long `run_forever` waits for the workers after a stop: with the flush after it, the
process ends within 10 s of SIGTERM (README)."""

LANE_WAIT_STEP_S: Final = 0.5
"""How often a run waiting for its busy lane looks at the stop flag."""
WORKER_BACKOFF_S: Final = 1.0
"""First wait after an unexpected error in a worker, doubled per error in a row (capped by
the poll interval)."""
IDLE_REPORT_MAX_S: Final = 10.0
"""An idle worker reports liveness at least this often, and more often when
LIVENESS_STALL_SECONDS is short (a quarter of it)."""

__all__ = [
    "DEAD_LETTER_POLICIES",
    "DeadLetterPolicy",
    "RejectedRecordsError",
    "RunInterruptedError",
    "RunReport",
    "SyncService",
]


class RunInterruptedError(TraversalInterruptedError):
    """The service is stopping; the run ends without a checkpoint."""


@dataclass
class RunReport:
    resource: str
    run_id: str
    outcome: str
    """success, failure or interrupted"""
    stats: RunStats
    published: int
    """Change events Kafka acknowledged (also for a failed run)."""
    checkpoint_before: str | None
    checkpoint_after: str | None
    duration_s: float
    error: str | None = None
    snapshot: bool = False
    dead_lettered: int = 0
    """Dead letters Kafka acknowledged."""
    resumed_from: str | None = None
    """The progress mark of an interrupted run this run resumed from, if any."""
    lane_error: bool = False
    """The run failed because Kafka did not take the lane's writes (`LaneError`)."""


ProgressFn = Callable[[str, RunStats, int], None]


class SyncService:
    def __init__(
        self,
        *,
        resources: Iterable[str],
        topic_for: Callable[[str], str],
        source_for: Callable[[str], Source],
        sink: Sink,
        checkpoints: CheckpointReader,
        observer: RunObserver,
        liveness: Liveness,
        producer_id: str,
        dead_letter_policy: DeadLetterPolicy = "dead-letter",
        poll_interval_s: float = 60.0,
        batch_pages: int = 1000,
        batch_seconds: float = 10.0,
        backfill_slices: int = 1,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        deletes: DeleteGuard | None = None,
        liveness_stall_s: float | None = None,
        settle_s: float = CLOCK_MARGIN_US / 1_000_000,
    ) -> None:
        if dead_letter_policy not in DEAD_LETTER_POLICIES:
            raise ValueError(f"unknown dead-letter policy {dead_letter_policy!r}")
        self.resources = tuple(resources)
        self.topic_for = topic_for
        self.source_for = source_for
        self.sink = sink
        self.checkpoints = checkpoints
        self.observer = observer
        self.liveness = liveness
        self.liveness_step_s = (
            IDLE_REPORT_MAX_S
            if liveness_stall_s is None
            else max(0.05, min(IDLE_REPORT_MAX_S, liveness_stall_s / 4))
        )
        """How often an idle worker reports progress (`_loop`)."""
        self.worker_backoff_s = WORKER_BACKOFF_S
        self.settle_us = max(round(settle_s * 1_000_000), CLOCK_MARGIN_US)
        """SETTLE_SECONDS: no checkpoint passes the API's clock at run start less this
        (producer/sync/run.py)."""
        self.producer_id = producer_id
        self.dead_letter_policy = dead_letter_policy
        self.poll_interval_s = poll_interval_s
        self.batch_pages = batch_pages
        self.backfill_slices = backfill_slices
        """A first export (no checkpoint) is cut into this many `updated_at` windows."""
        self.batch_seconds = batch_seconds
        """A progress mark (a transaction in exactly-once mode) after this many pages or
        seconds, whichever comes first."""
        self.fenced: str | None = None
        """Set when another instance took over (exactly-once): why this one stopped."""
        self.stop = stop or threading.Event()
        self.clock = clock
        self.deletes: DeleteGuard = deletes or NoDeletes()
        """Deleted ids a poll must not resurrect (producer/pipeline/deletes.py)."""
        self._running: dict[str, threading.Lock] = {r: threading.Lock() for r in self.resources}
        self._builders = {r: EventBuilder(r, producer_id) for r in self.resources}
        self.last_reports: dict[str, RunReport] = {}

    def run_lock(self, resource: str) -> threading.Lock:
        """Held by every run of `resource` (reconciliation takes it too: never side by side)."""
        return self._running[resource]

    # ------------------------------------------------------------------ one run

    def sync_once(self, resource: str, progress: ProgressFn | None = None) -> RunReport:
        """Run one full sync of `resource`. Never raises for a failed run: see the report.

        The lane has one writer at a time: while reconciliation (or another run) holds it,
        this waits for it, stop-aware, instead of failing the worker (issue 17, failure 2)."""
        lock = self._running[resource]
        while not lock.acquire(timeout=LANE_WAIT_STEP_S):
            self.liveness.progress(resource)  # waiting for its own lane is not a stall
            if self.stop.is_set():
                report = RunReport(
                    resource, str(uuid.uuid4()), "interrupted", RunStats(), 0, None, None, 0.0
                )
                report.error = "stopped while another run of the lane held it"
                return report
        try:
            return self._sync(resource, progress)
        finally:
            lock.release()

    def _sync(self, resource: str, progress: ProgressFn | None) -> RunReport:
        run_id = str(uuid.uuid4())
        started = self.clock()
        self.observer.run_started(resource, started)
        try:
            previous = self.checkpoints.current(resource)
            mark = self.checkpoints.progress(resource)
            sink = self.sink.begin(resource, run_id)
        except Exception as exc:  # e.g. an unreadable checkpoint: this resource only
            report = RunReport(resource, run_id, "failure", RunStats(), 0, None, None, 0.0)
            report.error = f"{type(exc).__name__}: {exc}"
            report.lane_error = isinstance(exc, LaneError)
            self._fenced_stops(exc)
            self._finish(report, started)
            return report
        # An interrupted run left a progress mark: resume there (same dedup), not from the
        # committed checkpoint; a mark of another starting point (reset meanwhile) is stale.
        resume = mark if mark is not None and mark.applies_to(previous) else None
        resumed_at = None
        if resume is not None:
            done = sum(w.done for w in resume.windows)
            resumed_at = (
                resume.mark.updated_at
                if resume.mark is not None
                else f"{done} of {len(resume.windows)} windows done"
            )
            log.info(
                "%s resumes run %s from its progress mark %s (%d pages were done)",
                resource,
                resume.run_id,
                resumed_at,
                resume.pages,
                extra={"event": "run_resumed", "resource": resource},
            )
        run = SyncRun(
            resource,
            previous,
            started_at=to_micros(datetime.fromtimestamp(started, UTC)),
            resume_from=resume.mark if resume is not None else None,
            snapshot=resume.snapshot if resume is not None else None,
            settle_us=self.settle_us,
        )
        before = previous.updated_at if previous else None
        report = RunReport(resource, run_id, "failure", run.stats, 0, before, before, 0.0)
        report.snapshot = run.snapshot
        report.resumed_from = resumed_at
        sliced_resume = resume is not None and bool(resume.windows)
        writer = RunWriter(
            resource=resource,
            run_id=run_id,
            sink=sink,
            builder=self._builders[resource],
            deletes=self.deletes,
            observer=self.observer,
            producer_id=self.producer_id,
            topic=self.topic_for(resource),
            dead_letter_policy=self.dead_letter_policy,
        )
        try:
            if sliced_resume or (run.snapshot and resume is None and self.backfill_slices > 1):
                run = self._traverse_sliced(
                    run, writer, progress, resume if sliced_resume else None
                )
                report.stats = run.stats
            else:
                self._traverse(run, writer, progress, previous)
            checkpoint = writer.apply(Commit(run, previous))
            if checkpoint is not None:
                report.checkpoint_after = checkpoint.updated_at
            report.outcome = "success"
        except TraversalInterruptedError:
            sink.abort()
            report.outcome = "interrupted"
            report.error = "stopped before the run finished; checkpoint unchanged"
        except Exception as exc:  # one resource's failure must not stop the others
            sink.abort()
            report.error = f"{type(exc).__name__}: {exc}"
            report.lane_error = isinstance(exc, LaneError)
            self._fenced_stops(exc)
            if self.stop.is_set() and self.fenced is None:  # a wait cut short by shutdown
                report.outcome = "interrupted"
            log.debug("run of %s failed", resource, exc_info=True)
        finally:
            report.published = sink.acked
            report.dead_lettered = sink.dead_lettered
            self.observer.add_deduplicated(resource, run.stats.deduplicated)
            self.observer.add_stale(resource, run.stats.stale)
            self._finish(report, started)
        return report

    def _fenced_stops(self, exc: BaseException) -> None:
        """Exactly-once: another instance took over a lane. Writing on would break the
        one-writer guarantee, so the whole service stops (the CLI exits non-zero)."""
        if isinstance(exc, LaneFencedError):
            self.fenced = str(exc)
            self.stop.set()

    def _finish(self, report: RunReport, started: float) -> None:
        report.duration_s = self.clock() - started
        self.observer.run_finished(report.resource, report.outcome, report.duration_s)
        self.last_reports[report.resource] = report
        self._log(report)

    def _traverse(
        self,
        run: SyncRun,
        writer: RunWriter,
        progress: ProgressFn | None,
        committed: Checkpoint | None,
    ) -> None:
        source = self.source_for(run.resource)
        batch = BatchPolicy(self.batch_pages, self.batch_seconds)
        for page in source.pages(run.filter_gte):
            if self.stop.is_set():
                raise RunInterruptedError
            self._take_page(run, writer, page)
            self.liveness.progress(run.resource)
            if progress is not None:
                progress(run.resource, run.stats, writer.sink.acked)
            if run.done:
                break
            if batch.page_taken():
                writer.apply(run_mark(run, writer.run_id, committed))
        if not run.done:
            raise TraversalError(f"{run.resource}: the source ended before has_more was false")

    def _traverse_sliced(
        self,
        run: SyncRun,
        writer: RunWriter,
        progress: ProgressFn | None,
        resume: Progress | None,
    ) -> SyncRun:
        """A bulk export cut into windows of `updated_at` that `backfill_slices` workers
        traverse side by side (producer/sync/slices.py); returns the windows merged into one
        finished run. `resume`: the progress mark of an interrupted sliced export.

        The windows share the run's sink and the process's API rate budget. Pages are taken
        one at a time (fetching stays concurrent), so a progress mark, written between two
        pages every batch, sees every window at a page boundary with nothing else in flight."""
        resource = run.resource
        started_at = to_micros(datetime.fromtimestamp(self.clock(), UTC))
        if resume is not None:
            windows = restore_windows(
                resource, resume.windows, started_at=started_at, settle_us=self.settle_us
            )
        else:
            planned = self._plan_windows(resource)
            if planned is None:  # nothing to cut: one traversal
                self._traverse(run, writer, progress, None)
                return run
            cap, bounds = planned
            windows = [
                SyncRun(
                    resource,
                    None,
                    started_at=started_at,
                    window=window,
                    horizon=cap,
                    settle_us=self.settle_us,
                )
                for window in bounds
            ]
        # More windows than workers, handed out as workers free up: even time windows hold
        # very different numbers of records, and a worker that finished a thin window takes
        # the next one instead of idling. Newest first: records crowd at recent instants, so
        # the fullest windows start first and the thin old ones fill the gaps at the end
        # (longest first; measured in docs/performance.md).
        queue = deque([w for w in windows if not w.done][::-1])
        gate = threading.Condition()
        """Held to take a page, or to write a mark: one page of one window at a time; idle
        workers wait on it for a window to be split off for them."""
        batch = BatchPolicy(self.batch_pages, self.batch_seconds)
        failures: list[BaseException] = []
        state = {"busy": 0, "idle": 0}

        def next_window() -> SyncRun | None:
            with gate:
                while not queue:
                    if state["busy"] == 0 or failures or self.stop.is_set():
                        return None  # nothing left to traverse or to split
                    state["idle"] += 1
                    gate.wait(0.1)
                    state["idle"] -= 1
                state["busy"] += 1
                return queue.popleft()

        def traverse(window: SyncRun) -> None:
            for page in self.source_for(resource).pages(window.filter_gte, window.filter_lt):
                if self.stop.is_set() or failures:
                    raise RunInterruptedError
                with gate:
                    self._take_page(window, writer, page)
                    self.liveness.progress(resource)
                    if progress is not None:
                        progress(resource, window.stats, writer.sink.acked)
                    if batch.page_taken():
                        writer.apply(windows_mark(windows, writer.run_id))
                    if not window.done and state["idle"] and not queue:
                        # windows follow the data: the rest of this one goes to the idle
                        halves = split_window(
                            window,
                            run_id=writer.run_id,
                            started_at=started_at,
                            settle_us=self.settle_us,
                        )
                        if halves:
                            windows.extend(halves)
                            queue.extend(halves)
                            gate.notify_all()
                    if window.done:
                        return
            raise TraversalError(f"{resource}: a window ended before has_more was false")

        def work() -> None:
            try:
                while (window := next_window()) is not None:
                    try:
                        traverse(window)
                    finally:
                        with gate:
                            state["busy"] -= 1
                            gate.notify_all()
            except BaseException as exc:  # handed to the run's thread below
                failures.append(exc)

        threads = [
            threading.Thread(target=work, name=f"{resource}-slice-{n}")
            for n in range(max(self.backfill_slices, 1))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        real = [f for f in failures if not isinstance(f, TraversalInterruptedError)]
        if real or failures:
            raise (real or failures)[0]
        log.info(
            "%s: bulk export in %d windows from %s",
            resource,
            len(windows),
            windows[0].filter_gte,
            extra={"event": "sliced_export", "resource": resource, "windows": len(windows)},
        )
        return SyncRun.merged(windows)

    def _plan_windows(self, resource: str) -> tuple[Micros, list[Window]] | None:
        """The run-start cap and windows of a new sliced export, from a probe page (the
        earliest record and the API's clock); None when there is nothing to cut."""
        probe = next(iter(self.source_for(resource).pages(None)), None)
        if probe is None or not probe.records:
            return None
        earliest = min(
            (x.instant for x in map(identify, probe.records) if isinstance(x, Identity)),
            default=None,
        )
        if earliest is None:
            return None
        clock = probe.server_date or datetime.fromtimestamp(self.clock(), UTC)
        cap = to_micros(clock) - self.settle_us
        return cap, plan_windows(earliest, cap, self.backfill_slices * WINDOWS_PER_SLICE)

    def _take_page(self, run: SyncRun, writer: RunWriter, page: SourcePage) -> None:
        resource = run.resource
        if page.server_date is not None:
            self.observer.observe_server_date(resource, page.server_date, self.clock())
        items = page_items(run, page, writer.run_id, int(self.clock() * 1000))
        self.observer.add_pages(resource)
        self.observer.add_fetched(resource, len(page.records))
        writer.apply_all(items)

    def _log(self, report: RunReport) -> None:
        log_run(
            log,
            resource=report.resource,
            outcome=report.outcome,
            duration_s=report.duration_s,
            checkpoint_before=report.checkpoint_before,
            checkpoint_after=report.checkpoint_after,
            error=report.error,
            fetched=report.stats.fetched,
            published=report.published,
            deduplicated=report.stats.deduplicated,
            dead_lettered=report.dead_lettered,
            stale=report.stats.stale,
            pages=report.stats.pages,
        )

    def api_health(self) -> tuple[bool, str]:
        """Readiness of the source: fails when the latest run of every resource failed."""
        reports = dict(self.last_reports)
        failing = {r: rep for r, rep in reports.items() if rep.outcome == "failure"}
        if not reports or len(failing) < len(self.resources):
            detail = ", ".join(f"{r}: {rep.error}" for r, rep in sorted(failing.items()))
            return True, detail or "ok"
        first = sorted(failing.values(), key=lambda rep: rep.resource)[0]
        return False, f"every resource's latest run failed, e.g. {first.resource}: {first.error}"

    # ------------------------------------------------------------------ the loop

    def run_forever(self, join_timeout_s: float = SHUTDOWN_JOIN_S) -> list[str]:
        """One thread per resource, each on its own schedule, until `stop` is set; then
        wait at most `join_timeout_s` in all for the workers. Returns the workers still
        busy then (a request or a Kafka wait in flight): they are daemon threads, and
        whatever they had not finished commits no checkpoint."""
        threads = [
            threading.Thread(target=self._loop, args=(r,), name=f"sync-{r}", daemon=True)
            for r in self.resources
        ]
        for thread in threads:
            thread.start()
        while not self.stop.wait(1.0):
            self.liveness.tick()
        deadline = time.monotonic() + join_timeout_s
        for thread in threads:  # one deadline for all, not one per thread
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]

    def _loop(self, resource: str) -> None:
        """One resource's worker: a run every `poll_interval_s` until the stop.

        It never dies silently: an exception a run did not turn into a report (a bug, or a
        port that broke its contract) is logged with its traceback, counted, shown in
        /healthz and retried with backoff (issue 17, failure 2). A lane that cannot make
        progress (runs failing on Kafka's side, `LaneError`) is shown there too; both fail
        liveness after `ERRORS_IN_A_ROW_UNHEALTHY` in a row (producer/observability/health.py),
        so that a restart gets the lane a fresh producer."""
        self.liveness.progress(resource)
        errors_in_a_row = 0
        while not self.stop.is_set():
            started = time.monotonic()
            delay = self.poll_interval_s
            try:
                report = self.sync_once(resource)
                if report.outcome == "failure" and report.lane_error:
                    errors_in_a_row += 1
                    self.liveness.failing(resource, f"Kafka: {report.error}", errors_in_a_row)
                elif report.outcome != "interrupted":
                    if errors_in_a_row:
                        self.liveness.recovered(resource)
                    errors_in_a_row = 0
            except Exception as exc:
                errors_in_a_row += 1
                delay = min(
                    self.poll_interval_s, self.worker_backoff_s * 2 ** min(errors_in_a_row, 6)
                )
                self.observer.worker_error(resource)
                self.liveness.failing(resource, f"{type(exc).__name__}: {exc}", errors_in_a_row)
                log.error(
                    "worker of %s: unexpected %s (%d in a row); retrying in %.0fs",
                    resource,
                    type(exc).__name__,
                    errors_in_a_row,
                    delay,
                    exc_info=True,
                    extra={"event": "worker_error", "resource": resource, "component": "sync"},
                )
            self.liveness.progress(resource)
            next_run = started + delay
            # waiting for the next run is progress too: reported often enough for
            # LIVENESS_STALL_SECONDS to see a worker that stopped (issue 17, failure 11)
            step = self.liveness_step_s
            while not self.stop.wait(max(0.0, min(next_run - time.monotonic(), step))):
                self.liveness.progress(resource)
                if time.monotonic() >= next_run:
                    break
        self.liveness.worker_done(resource)
