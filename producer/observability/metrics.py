"""Prometheus metrics of the producer (names and types: docs/CONTRACTS.md, "Metrics").

Everything lives on an injected :class:`prometheus_client.CollectorRegistry` (a fresh one
by default, never the process-global default registry), so several instances (tests)
never clash.

Every known label set (each resource x each outcome x each status class) is created
up front, so every series exists with value 0 from the first scrape on.

Conventions:

* ``last_success_timestamp_seconds`` / ``last_attempt_timestamp_seconds`` /
  ``source_watermark_timestamp_seconds`` are 0 until the event happened; alert on
  ``askelephant_producer_last_success_timestamp_seconds == 0`` (or
  ``time() - ... > N``) for "no successful run".
* ``sync_lag_seconds{resource}`` is computed at scrape time as
  ``(local wall clock now + API-server clock offset) - complete_up_to``, clamped at 0,
  where ``complete_up_to`` is the API's time at the start of the last successful run
  (everything changed before it is in Kafka; at start-up, the loaded checkpoint). A
  caught-up quiet resource therefore stays near one poll interval. It is ABSENT until
  known: a made-up value would be a lie and NaN breaks alert comparisons silently. The
  "no successful run" alert covers it.
* ``newest_change_age_seconds{resource}`` is the same clock minus the watermark (the
  newest committed change): data freshness, which also grows while nothing changes.
* The API server clock offset is learnt from HTTP ``Date`` headers through
  :meth:`ProducerMetrics.observe_server_date` (per resource; a resource that has not
  seen a ``Date`` yet uses the offset most recently observed for any resource, else 0).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric

from producer import __version__
from producer.api.errors import status_class as _status_class
from producer.api.observer import ApiObserver
from producer.api.retry import parse_http_date
from producer.pipeline.dead_letters import REASONS as DEAD_LETTER_REASONS

__all__ = [
    "API_LATENCY_BUCKETS",
    "OUTCOMES",
    "PREFIX",
    "RUN_DURATION_BUCKETS",
    "STATUS_CLASSES",
    "ApiObserver",
    "Outcome",
    "ProducerMetrics",
    "StatusClass",
    "parse_http_date",
    "status_class_of",
]

log = logging.getLogger(__name__)

PREFIX: Final = "askelephant_producer_"

Outcome = Literal["success", "failure", "interrupted"]
StatusClass = Literal["2xx", "3xx", "4xx", "5xx", "error"]
OUTCOMES: Final[tuple[str, ...]] = ("success", "failure", "interrupted")
STATUS_CLASSES: Final[tuple[str, ...]] = ("2xx", "3xx", "4xx", "5xx", "error")
WEBHOOK_OUTCOMES: Final[tuple[str, ...]] = (
    "published",
    "duplicate",
    "ignored",
    "suppressed",
    "in_progress",
    "bad_signature",
    "malformed",
    "error",
)
"""`webhook_deliveries_total{outcome}`: 2xx for the first four, 409 for in_progress (another
copy is being handled), 4xx for bad_signature and malformed, 503 for error (Svix retries)."""
DELETE_SOURCES: Final[tuple[str, ...]] = ("webhook", "reconcile")

#: API request latency: 10 ms .. 60 s.
API_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Sync run duration: 0.1 s .. 1 h.
RUN_DURATION_BUCKETS: Final = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


def status_class_of(status_code: int | None) -> StatusClass:
    """The ``status_class`` label of an HTTP status (``None``: no response -> ``"error"``);
    the API client's own definition (`producer.api.errors.status_class`)."""
    label = _status_class(status_code)
    return label if label in STATUS_CLASSES else "error"  # type: ignore[return-value]


def _epoch(value: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class _AgeCollector:
    """Scrape-time ``sync_lag_seconds`` and ``newest_change_age_seconds`` per resource."""

    def __init__(self, owner: ProducerMetrics) -> None:
        self._owner = owner

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            PREFIX + "sync_lag_seconds",
            "Now according to the API server clock minus the API time at the start of the "
            "last successful run (every change before it is in Kafka); absent until known",
            labels=["resource"],
        )
        age = GaugeMetricFamily(
            PREFIX + "newest_change_age_seconds",
            "Now according to the API server clock minus the watermark (updated_at of the "
            "newest committed change): also grows while the source has no changes",
            labels=["resource"],
        )
        return lag, age

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        lag, age = self._families()
        for resource, seconds in self._owner.lag_seconds().items():
            lag.add_metric([resource], seconds)
        for resource, seconds in self._owner.newest_change_age_seconds().items():
            age.add_metric([resource], seconds)
        return [lag, age]


class ProducerMetrics:
    """All producer metrics plus the convenience methods the orchestrator calls.

    Thread-safe. ``clock`` is the local wall clock (``time.time``) used for timestamps
    that are not passed explicitly and for the scrape-time lag.

    Public metric attributes (labelled by ``resource`` unless noted):
    ``info`` (Info, ``version``), ``source_watermark_timestamp_seconds``,
    ``last_success_timestamp_seconds``, ``last_attempt_timestamp_seconds`` (Gauges),
    ``records_fetched``, ``records_published``, ``records_deduplicated``,
    ``records_dead_lettered``, ``records_stale``, ``pages_fetched``, ``api_retries``,
    ``api_rate_limit_wait_seconds``, ``api_budget_wait_seconds``, ``kafka_delivery_errors``,
    ``checkpoint_commits``
    (Counters), ``runs`` (Counter, ``resource, outcome``), ``api_requests`` (Counter,
    ``resource, status_class``), ``run_duration_seconds``,
    ``api_request_duration_seconds`` (Histograms), ``kafka_queue_messages`` and
    ``api_budget_requests_per_second`` (Gauges, no labels). ``sync_lag_seconds`` is produced
    by a scrape-time collector.
    """

    def __init__(
        self,
        resources: Sequence[str],
        *,
        registry: CollectorRegistry | None = None,
        version: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if version is None:
            version = __version__
        self.registry: Final = CollectorRegistry() if registry is None else registry
        self.resources: Final = tuple(dict.fromkeys(resources))
        self._clock = clock
        self._lock = threading.Lock()
        self._watermarks: dict[str, float] = {}
        self._complete: dict[str, float] = {}
        self._offsets: dict[str, float] = {}
        self._last_offset: float | None = None
        self._queue_length: Callable[[], int] | None = None
        self._last_queue_length = 0.0
        self._warned_status_classes: set[str] = set()
        self._published: dict[str, Counter] = {}

        reg = self.registry
        r = ("resource",)
        self.info: Final = Info(PREFIX.rstrip("_"), "Producer build information", registry=reg)
        self.info.info({"version": version})

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, r, registry=reg)

        def counter(name: str, doc: str, labels: tuple[str, ...] = r) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=reg)

        self.source_watermark_timestamp_seconds: Final = gauge(
            "source_watermark_timestamp_seconds",
            "updated_at of the newest event whose run committed its checkpoint (0 = none)",
        )
        self.last_success_timestamp_seconds: Final = gauge(
            "last_success_timestamp_seconds", "End time of the last successful run (0 = never)"
        )
        self.last_attempt_timestamp_seconds: Final = gauge(
            "last_attempt_timestamp_seconds", "Start time of the last run attempt (0 = never)"
        )
        self.records_fetched: Final = counter(
            "records_fetched_total", "Records fetched from the API"
        )
        self.records_published: Final = counter(
            "records_published_total", "Change events acknowledged by Kafka"
        )
        self.records_deduplicated: Final = counter(
            "records_deduplicated_total", "Boundary duplicates skipped"
        )
        self.records_dead_lettered: Final = counter(
            "records_dead_lettered_total",
            "Records sent to the dead-letter topic, by reason",
            ("resource", "reason"),
        )
        self.records_stale: Final = counter(
            "records_stale_total", "Records older than the checkpoint inside an asc traversal"
        )
        self.records_suppressed: Final = counter(
            "records_suppressed_total",
            "Polled versions not published because the record was deleted since",
        )
        self.deletes_published: Final = counter(
            "deletes_published_total",
            "Deletes (op d event + tombstone) acknowledged by Kafka, by source",
            ("resource", "source"),
        )
        self.webhook_deliveries: Final = Counter(
            PREFIX + "webhook_deliveries_total",
            "Webhook deliveries by outcome",
            ("outcome",),
            registry=reg,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome=outcome)
        self.reconcile_runs: Final = counter(
            "reconcile_runs_total", "Reconciliation runs by outcome", ("resource", "outcome")
        )
        self.reconcile_requests: Final = counter(
            "reconcile_requests_total", "API pages requested by reconciliation"
        )
        self.reconcile_seconds: Final = counter(
            "reconcile_seconds_total", "Seconds spent in reconciliation"
        )
        self.runs: Final = counter("runs_total", "Sync runs by outcome", ("resource", "outcome"))
        self.run_duration_seconds: Final = Histogram(
            PREFIX + "run_duration_seconds",
            "Duration of a sync run",
            r,
            registry=reg,
            buckets=RUN_DURATION_BUCKETS,
        )
        self.pages_fetched: Final = counter("pages_fetched_total", "API pages fetched")
        self.api_requests: Final = counter(
            "api_requests_total", "API HTTP requests by status class", ("resource", "status_class")
        )
        self.api_request_duration_seconds: Final = Histogram(
            PREFIX + "api_request_duration_seconds",
            "API HTTP request latency (each attempt)",
            r,
            registry=reg,
            buckets=API_LATENCY_BUCKETS,
        )
        self.api_retries: Final = counter("api_retries_total", "API request retries")
        self.api_rate_limit_wait_seconds: Final = counter(
            "api_rate_limit_wait_seconds_total", "Seconds spent waiting because of rate limits"
        )
        self.api_budget_wait_seconds: Final = counter(
            "api_budget_wait_seconds_total",
            "Seconds API requests waited for the shared request budget (rate and concurrency)",
        )
        self.api_budget_requests_per_second: Final = Gauge(
            PREFIX + "api_budget_requests_per_second",
            "The shared API request budget's current rate (lowered by 429s; 0 = no cap)",
            registry=reg,
        )
        self.worker_errors: Final = counter(
            "worker_errors_total",
            "Unexpected exceptions that escaped a run (the worker logs, backs off and retries)",
        )
        self.kafka_delivery_errors: Final = counter(
            "kafka_delivery_errors_total", "Kafka delivery reports with an error"
        )
        self.checkpoint_commits: Final = counter(
            "checkpoint_commits_total", "Checkpoints committed"
        )
        self.kafka_queue_messages: Final = Gauge(
            PREFIX + "kafka_queue_messages",
            "Messages waiting in the Kafka producer queue",
            registry=reg,
        )
        self.kafka_queue_messages.set_function(self._read_queue_length)
        reg.register(_AgeCollector(self))

        for resource in self.resources:
            self._precreate(resource)

    def _precreate(self, resource: str) -> None:
        for metric in (
            self.source_watermark_timestamp_seconds,
            self.last_success_timestamp_seconds,
            self.last_attempt_timestamp_seconds,
            self.records_fetched,
            self.records_published,
            self.records_deduplicated,
            self.records_stale,
            self.records_suppressed,
            self.reconcile_requests,
            self.reconcile_seconds,
            self.run_duration_seconds,
            self.pages_fetched,
            self.api_request_duration_seconds,
            self.api_retries,
            self.api_rate_limit_wait_seconds,
            self.api_budget_wait_seconds,
            self.kafka_delivery_errors,
            self.worker_errors,
            self.checkpoint_commits,
        ):
            metric.labels(resource=resource)
        for outcome in OUTCOMES:
            self.runs.labels(resource=resource, outcome=outcome)
        for reason in DEAD_LETTER_REASONS:
            self.records_dead_lettered.labels(resource=resource, reason=reason)
        for source in DELETE_SOURCES:
            self.deletes_published.labels(resource=resource, source=source)
        for outcome in OUTCOMES:
            self.reconcile_runs.labels(resource=resource, outcome=outcome)
        for status_class in STATUS_CLASSES:
            self.api_requests.labels(resource=resource, status_class=status_class)

    # -- run level -----------------------------------------------------------------

    def run_started(self, resource: str, now: float | None = None) -> None:
        """A run begins: sets ``last_attempt_timestamp_seconds`` (``now`` defaults to
        the clock)."""
        self.last_attempt_timestamp_seconds.labels(resource=resource).set(
            self._clock() if now is None else now
        )

    def run_finished(
        self, resource: str, outcome: str, duration_s: float, now: float | None = None
    ) -> None:
        """A run ended: counts ``runs_total{outcome}``, observes its duration and, on
        success, sets ``last_success_timestamp_seconds`` to ``now`` (default: the clock).
        ``outcome`` must be one of success, failure, interrupted (else ``ValueError``)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown run outcome {outcome!r}; expected one of {OUTCOMES}")
        self.runs.labels(resource=resource, outcome=outcome).inc()
        self.run_duration_seconds.labels(resource=resource).observe(max(duration_s, 0.0))
        if outcome == "success":
            self.last_success_timestamp_seconds.labels(resource=resource).set(
                self._clock() if now is None else now
            )

    # -- counting as you go --------------------------------------------------------

    def add_fetched(self, resource: str, n: int = 1) -> None:
        self._add(self.records_fetched, resource, n)

    def add_published(self, resource: str, n: int = 1) -> None:
        # called once per acknowledged event: the labelled child is looked up once
        child = self._published.get(resource)
        if child is None:
            child = self._published[resource] = self.records_published.labels(resource=resource)
        if n:
            child.inc(n)

    def add_deduplicated(self, resource: str, n: int = 1) -> None:
        self._add(self.records_deduplicated, resource, n)

    def add_dead_lettered(self, resource: str, reason: str, n: int = 1) -> None:
        if n:
            self.records_dead_lettered.labels(resource=resource, reason=reason).inc(n)

    def add_stale(self, resource: str, n: int = 1) -> None:
        self._add(self.records_stale, resource, n)

    def add_suppressed(self, resource: str, n: int = 1) -> None:
        self._add(self.records_suppressed, resource, n)

    def delete_published(self, resource: str, source: str) -> None:
        self.deletes_published.labels(resource=resource, source=source).inc()

    def webhook_delivery(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome=outcome).inc()

    def reconciled(self, resource: str, outcome: str, requests: int, seconds: float) -> None:
        self.reconcile_runs.labels(resource=resource, outcome=outcome).inc()
        self._add(self.reconcile_requests, resource, requests)
        if seconds > 0:
            self.reconcile_seconds.labels(resource=resource).inc(seconds)

    def add_pages(self, resource: str, n: int = 1) -> None:
        self._add(self.pages_fetched, resource, n)

    def worker_error(self, resource: str) -> None:
        self.worker_errors.labels(resource=resource).inc()

    def add_delivery_errors(self, resource: str, n: int = 1) -> None:
        self._add(self.kafka_delivery_errors, resource, n)

    @staticmethod
    def _add(counter: Counter, resource: str, n: int) -> None:
        if n:  # 0 is a no-op; a negative n makes prometheus_client raise ValueError
            counter.labels(resource=resource).inc(n)

    # -- checkpoints, watermark, lag -----------------------------------------------

    def checkpoint_committed(self, resource: str, watermark: datetime | None) -> None:
        """A checkpoint was committed: counts it and, if ``watermark`` is given (the
        ``updated_at`` of the newest event covered by it), updates the watermark gauge
        and the lag. A naive datetime is taken as UTC."""
        self.checkpoint_commits.labels(resource=resource).inc()
        if watermark is not None:
            self.set_watermark(resource, watermark)

    def set_watermark(self, resource: str, watermark: datetime) -> None:
        """Set the watermark without counting a commit (e.g. checkpoints loaded at
        start-up). A naive datetime is taken as UTC."""
        ts = _epoch(watermark)
        with self._lock:
            self._watermarks[resource] = ts
        self.source_watermark_timestamp_seconds.labels(resource=resource).set(ts)

    def observe_server_date(
        self, resource: str, server_date: datetime, local_time: float | None = None
    ) -> None:
        """Record the API server clock from a response ``Date`` header:
        offset = server_date - local_time, where ``local_time`` is ``time.time()`` when
        the response arrived (default: the clock now). Naive datetimes are UTC."""
        local = self._clock() if local_time is None else local_time
        offset = _epoch(server_date) - local
        with self._lock:
            self._offsets[resource] = offset
            self._last_offset = offset

    def clock_offset(self, resource: str) -> float:
        """Estimated API server clock minus local clock, in seconds."""
        with self._lock:
            return self._offsets.get(resource, self._last_offset or 0.0)

    def complete_up_to(self, resource: str, instant: datetime) -> None:
        """Every change of ``resource`` before ``instant`` (API clock) is in Kafka: the
        start of the last successful run, or a committed checkpoint at start-up."""
        ts = _epoch(instant)
        with self._lock:
            self._complete[resource] = max(ts, self._complete.get(resource, ts))

    def lag_seconds(self) -> dict[str, float]:
        """Per resource: API now minus the instant up to which Kafka is complete."""
        return self._ages(self._complete)

    def newest_change_age_seconds(self) -> dict[str, float]:
        """Per resource that has a watermark: API now minus the newest committed change."""
        return self._ages(self._watermarks)

    def _ages(self, instants: dict[str, float]) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            return {
                resource: max(0.0, now + self._offsets.get(resource, self._last_offset or 0.0) - ts)
                for resource, ts in instants.items()
            }

    # -- API client observer (ApiObserver) -----------------------------------------

    def on_request(self, resource: str, status_class: str, duration_s: float) -> None:
        """One HTTP attempt finished (``status_class``: 2xx|3xx|4xx|5xx|error, see
        :func:`status_class_of`). Never raises into the API client: any other value
        (e.g. "1xx") is counted as ``error`` and logged once as a warning."""
        if status_class not in STATUS_CLASSES:
            if status_class not in self._warned_status_classes:
                self._warned_status_classes.add(status_class)
                log.warning(
                    "unexpected API status class %r counted as 'error'",
                    status_class,
                    extra={"resource": resource},
                )
            status_class = "error"
        self.api_requests.labels(resource=resource, status_class=status_class).inc()
        self.api_request_duration_seconds.labels(resource=resource).observe(max(duration_s, 0.0))

    def on_retry(self, resource: str, reason: str, wait_s: float, is_rate_limit: bool) -> None:
        """The client will retry after ``wait_s``; rate-limit waits are also added to
        ``api_rate_limit_wait_seconds_total``. ``reason`` is not a label (cardinality)."""
        del reason
        self.api_retries.labels(resource=resource).inc()
        if is_rate_limit and wait_s > 0:
            self.api_rate_limit_wait_seconds.labels(resource=resource).inc(wait_s)

    def on_budget_wait(self, resource: str, wait_s: float) -> None:
        """A request waited for the shared budget (``producer.api.budget``)."""
        if wait_s > 0:
            self.api_budget_wait_seconds.labels(resource=resource).inc(wait_s)

    def set_budget_rate(self, requests_per_s: float) -> None:
        self.api_budget_requests_per_second.set(requests_per_s)

    # -- Kafka ---------------------------------------------------------------------

    def set_queue_length_source(self, source: Callable[[], int] | None) -> None:
        """Read ``kafka_queue_messages`` from ``source`` at scrape time (e.g.
        ``lambda: len(producer)``); ``None`` detaches it (reports 0). If ``source``
        raises, the last good value is reported."""
        with self._lock:
            self._queue_length = source
            if source is None:
                self._last_queue_length = 0.0

    def _read_queue_length(self) -> float:
        with self._lock:
            source = self._queue_length
        if source is None:
            return 0.0
        try:
            value = float(source())
        except Exception:
            return self._last_queue_length
        if math.isfinite(value):
            self._last_queue_length = value
        return self._last_queue_length
