"""The orchestrator: one sync run of one resource, and the polling loop over all of them.

Everything it touches is injected: the API client, the event publisher, the checkpoint store,
metrics and health. The sync algorithm itself is `producer.sync.run.SyncRun` (pure).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from producer.api import ApiClient, ListQuery
from producer.events import RecordConformanceError, build_change_event
from producer.kafka.checkpoints import CheckpointStore
from producer.kafka.publisher import DeliveryTracker, EventPublisher
from producer.observability.health import HealthState
from producer.observability.logging import log_run
from producer.observability.metrics import ProducerMetrics
from producer.sync.run import RunStats, SyncRun
from producer.sync.timestamps import from_micros, to_micros

log = logging.getLogger(__name__)

CLOCK_MARGIN_US = 1_000_000
"""Taken off the run-start cap: the `Date` header has whole seconds and comes from the web
tier, whose clock may trail the database's that stamps `updated_at`."""


class RunInterruptedError(Exception):
    """The service is stopping; the run ends without a checkpoint."""


class RejectedRecordsError(RuntimeError):
    """Records the producer cannot turn into events; the run fails rather than drop them."""


@dataclass
class RunReport:
    resource: str
    run_id: str
    outcome: str
    """success, failure or interrupted"""
    stats: RunStats
    published: int
    checkpoint_before: str | None
    checkpoint_after: str | None
    duration_s: float
    error: str | None = None
    snapshot: bool = False


ProgressFn = Callable[[str, RunStats, int], None]


class SyncService:
    def __init__(
        self,
        *,
        resources: Iterable[str],
        topic_for: Callable[[str], str],
        api_for: Callable[[str], ApiClient],
        publisher: EventPublisher,
        store: CheckpointStore,
        metrics: ProducerMetrics,
        health: HealthState,
        producer_id: str,
        page_size: int = 100,
        poll_interval_s: float = 60.0,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resources = tuple(resources)
        self.topic_for = topic_for
        self.api_for = api_for
        self.publisher = publisher
        self.store = store
        self.metrics = metrics
        self.health = health
        self.producer_id = producer_id
        self.page_size = page_size
        self.poll_interval_s = poll_interval_s
        self.stop = stop or threading.Event()
        self.clock = clock
        self._running: dict[str, threading.Lock] = {r: threading.Lock() for r in self.resources}
        self.last_reports: dict[str, RunReport] = {}

    # ------------------------------------------------------------------ one run

    def sync_once(self, resource: str, progress: ProgressFn | None = None) -> RunReport:
        """Run one full sync of `resource`. Never raises for a failed run: see the report."""
        lock = self._running[resource]
        if not lock.acquire(blocking=False):
            raise RuntimeError(f"a run of {resource} is already in progress")
        try:
            return self._sync(resource, progress)
        finally:
            lock.release()

    def _sync(self, resource: str, progress: ProgressFn | None) -> RunReport:
        run_id = str(uuid.uuid4())
        started = self.clock()
        previous = self.store.get(resource)
        run = SyncRun(resource, previous)
        tracker = DeliveryTracker(
            on_error=lambda _err: self.metrics.add_delivery_errors(resource),
            on_ack=lambda: self.metrics.add_published(resource),
        )
        self.metrics.run_started(resource, started)
        report = RunReport(
            resource=resource,
            run_id=run_id,
            outcome="failure",
            stats=run.stats,
            published=0,
            checkpoint_before=previous.updated_at if previous else None,
            checkpoint_after=previous.updated_at if previous else None,
            duration_s=0.0,
            snapshot=run.snapshot,
        )
        try:
            self._traverse(run, run_id, tracker, progress)
            self.publisher.wait(tracker)  # every event acknowledged before the checkpoint
            report.published = tracker.acked
            completed = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            checkpoint = run.checkpoint_after(
                run_id=run_id, completed_at=completed, published=tracker.acked
            )
            if checkpoint is not None:
                self.store.commit(checkpoint)
                report.checkpoint_after = checkpoint.updated_at
                newest = run.newest_instant
                self.metrics.checkpoint_committed(
                    resource, from_micros(newest) if newest is not None else None
                )
            report.outcome = "success"
        except RunInterruptedError:
            report.outcome = "interrupted"
            report.error = "stopped before the run finished; checkpoint unchanged"
        except Exception as exc:  # one resource's failure must not stop the others
            report.error = f"{type(exc).__name__}: {exc}"
            log.debug("run of %s failed", resource, exc_info=True)
        finally:
            report.published = report.published or tracker.acked
            report.duration_s = self.clock() - started
            self.metrics.run_finished(resource, report.outcome, report.duration_s)
            self.last_reports[resource] = report
            self._log(report)
        return report

    def _traverse(
        self,
        run: SyncRun,
        run_id: str,
        tracker: DeliveryTracker,
        progress: ProgressFn | None,
    ) -> None:
        resource = run.resource
        topic = self.topic_for(resource)
        api = self.api_for(resource)
        query = ListQuery(resource, updated_at_gte=run.filter_gte, limit=self.page_size)
        # Fallback clock for the run-start cap when the API sends no Date header.
        local_start = to_micros(datetime.now(UTC)) - CLOCK_MARGIN_US
        while not run.done:
            if self.stop.is_set():
                raise RunInterruptedError
            page = api.fetch_page(query if run.cursor is None else query.next_page(run.cursor))
            if page.server_date is not None:
                self.metrics.observe_server_date(resource, page.server_date, self.clock())
            served_at = (
                to_micros(page.server_date) - CLOCK_MARGIN_US if page.server_date else local_start
            )
            result = run.accept_page(
                page.records,
                has_more=page.has_more,
                next_cursor=page.next_cursor,
                served_at=served_at,
            )
            self.metrics.add_pages(resource)
            self.metrics.add_fetched(resource, len(page.records))
            if result.rejected:
                first = result.rejected[0]
                raise RejectedRecordsError(
                    f"{len(result.rejected)} record(s) of {resource} cannot be synced "
                    f"(request {page.request_id or 'n/a'}, page {first.page}, "
                    f"position {first.position}: {first.reason})"
                )
            now_ms = int(self.clock() * 1000)
            for version in result.accepted:
                try:
                    event = build_change_event(
                        resource,
                        version.record,
                        run_id=run_id,
                        producer_id=self.producer_id,
                        api_version=page.api_version,
                        snapshot=run.snapshot,
                        now_ms=now_ms,
                    )
                except RecordConformanceError as exc:
                    raise RejectedRecordsError(
                        f"record {version.record_id} of {resource} cannot be encoded: {exc}"
                    ) from None
                self.publisher.publish(
                    topic,
                    version.record_id,
                    event,
                    tracker,
                    headers={"event_id": event["event_id"], "run_id": run_id},
                )
                if version.stale:
                    log.warning(
                        "%s %s is older than the checkpoint (updated_at %s); published anyway",
                        resource,
                        version.record_id,
                        version.updated_at,
                        extra={"resource": resource, "record_id": version.record_id},
                    )
            self.health.tick()
            if progress is not None:
                progress(resource, run.stats, tracker.acked)
        self.metrics.add_deduplicated(resource, run.stats.deduplicated)
        self.metrics.add_stale(resource, run.stats.stale)

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

    def run_forever(self) -> None:
        """One thread per resource, each on its own schedule; returns after `stop` is set."""
        threads = [
            threading.Thread(target=self._loop, args=(r,), name=f"sync-{r}", daemon=True)
            for r in self.resources
        ]
        for thread in threads:
            thread.start()
        while not self.stop.wait(1.0):
            self.health.tick()
        for thread in threads:
            thread.join(timeout=8.0)

    def _loop(self, resource: str) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.sync_once(resource)
            delay = self.poll_interval_s - (time.monotonic() - started)
            self.stop.wait(max(delay, 0.0))
