"""ProducerMetrics: names/types from docs/CONTRACTS.md, pre-created series, lag, buckets."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from producer.observability.metrics import (
    API_LATENCY_BUCKETS,
    DELETE_SOURCES,
    OUTCOMES,
    RUN_DURATION_BUCKETS,
    STATUS_CLASSES,
    WEBHOOK_OUTCOMES,
    ApiObserver,
    ProducerMetrics,
    parse_http_date,
    status_class_of,
)
from producer.pipeline.dead_letters import REASONS

pytestmark = pytest.mark.unit

RESOURCES = ("contacts", "companies", "users", "tags", "engagements")
P = "askelephant_producer_"

# name as exposed (counters with their _total suffix) -> (type, label names)
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "askelephant_producer_info": ("gauge", ("version",)),
    P + "source_watermark_timestamp_seconds": ("gauge", ("resource",)),
    P + "sync_lag_seconds": ("gauge", ("resource",)),
    P + "newest_change_age_seconds": ("gauge", ("resource",)),
    P + "last_success_timestamp_seconds": ("gauge", ("resource",)),
    P + "last_attempt_timestamp_seconds": ("gauge", ("resource",)),
    P + "records_fetched_total": ("counter", ("resource",)),
    P + "records_published_total": ("counter", ("resource",)),
    P + "records_deduplicated_total": ("counter", ("resource",)),
    P + "records_dead_lettered_total": ("counter", ("resource", "reason")),
    P + "records_stale_total": ("counter", ("resource",)),
    P + "runs_total": ("counter", ("resource", "outcome")),
    P + "run_duration_seconds": ("histogram", ("resource",)),
    P + "pages_fetched_total": ("counter", ("resource",)),
    P + "api_requests_total": ("counter", ("resource", "status_class")),
    P + "api_request_duration_seconds": ("histogram", ("resource",)),
    P + "api_retries_total": ("counter", ("resource",)),
    P + "api_rate_limit_wait_seconds_total": ("counter", ("resource",)),
    P + "api_budget_wait_seconds_total": ("counter", ("resource",)),
    P + "api_budget_requests_per_second": ("gauge", ()),
    P + "kafka_delivery_errors_total": ("counter", ("resource",)),
    P + "worker_errors_total": ("counter", ("resource",)),
    P + "kafka_queue_messages": ("gauge", ()),
    P + "checkpoint_commits_total": ("counter", ("resource",)),
    P + "records_suppressed_total": ("counter", ("resource",)),
    P + "deletes_published_total": ("counter", ("resource", "source")),
    P + "webhook_deliveries_total": ("counter", ("outcome",)),
    P + "reconcile_runs_total": ("counter", ("resource", "outcome")),
    P + "reconcile_requests_total": ("counter", ("resource",)),
    P + "reconcile_seconds_total": ("counter", ("resource",)),
}


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def scrape(metrics: ProducerMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted label items -> value}; also checks each family's type."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def family_types(metrics: ProducerMetrics) -> dict[str, str]:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(metrics: ProducerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def metrics(clock: FakeClock) -> ProducerMetrics:
    return ProducerMetrics(RESOURCES, version="1.2.3", clock=clock)


def test_contract_names_and_types(metrics: ProducerMetrics) -> None:
    types = family_types(metrics)
    for name, (mtype, _labels) in CONTRACT.items():
        # the text parser reports a counter family without its _total suffix
        family = name.removesuffix("_total") if mtype == "counter" else name
        assert types.get(family) == mtype, name
    # nothing outside the contract (apart from prometheus_client's own _created series)
    expected = {n.removesuffix("_total") if t == "counter" else n for n, (t, _) in CONTRACT.items()}
    extra = {n for n in types if not n.endswith("_created")} - expected
    assert extra == set()


def test_every_label_set_precreated(metrics: ProducerMetrics) -> None:
    samples = scrape(metrics)
    assert samples["askelephant_producer_info"] == {(("version", "1.2.3"),): 1.0}
    for name, (mtype, labels) in CONTRACT.items():
        if name.endswith(("_info", "sync_lag_seconds", "newest_change_age_seconds")) or not labels:
            continue
        sample_name = name + "_count" if mtype == "histogram" else name
        series = samples[sample_name]
        expected: set[tuple[tuple[str, str], ...]]
        if labels == ("resource",):
            expected = {(("resource", r),) for r in RESOURCES}
        elif labels == ("resource", "source"):
            expected = {(("resource", r), ("source", x)) for r in RESOURCES for x in DELETE_SOURCES}
        elif labels == ("outcome",):
            expected = {(("outcome", o),) for o in WEBHOOK_OUTCOMES}
        elif labels == ("resource", "outcome"):
            expected = {(("outcome", o), ("resource", r)) for r in RESOURCES for o in OUTCOMES}
        elif labels == ("resource", "reason"):
            expected = {(("reason", x), ("resource", r)) for r in RESOURCES for x in REASONS}
        else:
            expected = {
                (("resource", r), ("status_class", s)) for r in RESOURCES for s in STATUS_CLASSES
            }
        assert set(series) == expected, name
        assert all(v == 0.0 for v in series.values()), name
    assert len(samples[P + "runs_total"]) == 15
    assert len(samples[P + "api_requests_total"]) == 25
    assert len(samples[P + "records_dead_lettered_total"]) == 5 * 6
    assert samples[P + "kafka_queue_messages"] == {(): 0.0}


def test_lag_absent_until_known(metrics: ProducerMetrics) -> None:
    assert P + "sync_lag_seconds" not in scrape(metrics)
    assert P + "newest_change_age_seconds" not in scrape(metrics)
    assert metrics.lag_seconds() == {}


def test_lag_is_api_now_minus_the_start_of_the_last_successful_run(
    metrics: ProducerMetrics, clock: FakeClock
) -> None:
    # the newest change is a day old (a quiet resource), the last run started 60 s ago
    metrics.checkpoint_committed("tags", datetime.fromtimestamp(T0 - 86_400, UTC))
    metrics.complete_up_to("tags", datetime.fromtimestamp(T0 - 60, UTC))
    assert value(metrics, P + "sync_lag_seconds", resource="tags") == pytest.approx(60)
    assert value(metrics, P + "newest_change_age_seconds", resource="tags") == (
        pytest.approx(86_400)
    )
    # an older instant (e.g. a checkpoint loaded later) never moves it back
    metrics.complete_up_to("tags", datetime.fromtimestamp(T0 - 600, UTC))
    assert metrics.lag_seconds() == {"tags": pytest.approx(60)}


def test_lag_uses_server_clock_offset(metrics: ProducerMetrics, clock: FakeClock) -> None:
    watermark = datetime.fromtimestamp(T0 - 300, UTC)
    metrics.checkpoint_committed("contacts", watermark)
    metrics.complete_up_to("contacts", watermark)
    # no Date header seen yet: local clock
    assert value(metrics, P + "sync_lag_seconds", resource="contacts") == pytest.approx(300)
    assert value(metrics, P + "source_watermark_timestamp_seconds", resource="contacts") == (
        pytest.approx(T0 - 300)
    )
    assert value(metrics, P + "checkpoint_commits_total", resource="contacts") == 1
    # the API server clock runs 42 s ahead of ours
    metrics.observe_server_date(
        "contacts", datetime.fromtimestamp(T0 + 42, UTC), local_time=clock.now
    )
    assert metrics.clock_offset("contacts") == pytest.approx(42)
    assert value(metrics, P + "sync_lag_seconds", resource="contacts") == pytest.approx(342)
    assert value(metrics, P + "newest_change_age_seconds", resource="contacts") == (
        pytest.approx(342)
    )
    # computed at scrape time: time passes, lag grows
    clock.now += 60
    assert value(metrics, P + "sync_lag_seconds", resource="contacts") == pytest.approx(402)
    # only resources known to be complete up to an instant have a lag series
    assert set(scrape(metrics)[P + "sync_lag_seconds"]) == {(("resource", "contacts"),)}


def test_lag_offset_per_resource_with_fallback(metrics: ProducerMetrics, clock: FakeClock) -> None:
    metrics.complete_up_to("users", datetime.fromtimestamp(T0 - 10, UTC))
    metrics.complete_up_to("tags", datetime.fromtimestamp(T0 - 10, UTC))
    metrics.observe_server_date("users", datetime.fromtimestamp(T0 - 5, UTC), local_time=T0)
    # tags has not seen a Date header: falls back to the latest offset observed
    assert metrics.lag_seconds() == {"users": pytest.approx(5), "tags": pytest.approx(5)}
    metrics.observe_server_date("tags", datetime.fromtimestamp(T0 + 20, UTC), local_time=T0)
    assert metrics.lag_seconds() == {"users": pytest.approx(5), "tags": pytest.approx(30)}


def test_ages_never_negative_and_naive_datetimes_are_utc(metrics: ProducerMetrics) -> None:
    metrics.set_watermark("tags", datetime.fromtimestamp(T0 + 5, UTC).replace(tzinfo=None))
    metrics.complete_up_to("tags", datetime.fromtimestamp(T0 + 5, UTC).replace(tzinfo=None))
    assert value(metrics, P + "source_watermark_timestamp_seconds", resource="tags") == (
        pytest.approx(T0 + 5)
    )
    assert value(metrics, P + "checkpoint_commits_total", resource="tags") == 0
    assert metrics.lag_seconds() == {"tags": 0.0}
    assert metrics.newest_change_age_seconds() == {"tags": 0.0}
    assert all(math.isfinite(v) for v in metrics.lag_seconds().values())


def test_checkpoint_without_watermark_counts_only(metrics: ProducerMetrics) -> None:
    metrics.checkpoint_committed("companies", None)
    assert value(metrics, P + "checkpoint_commits_total", resource="companies") == 1
    assert metrics.lag_seconds() == {}


def test_run_lifecycle(metrics: ProducerMetrics, clock: FakeClock) -> None:
    metrics.run_started("contacts")
    assert value(metrics, P + "last_attempt_timestamp_seconds", resource="contacts") == T0
    metrics.add_pages("contacts", 2)
    metrics.add_fetched("contacts", 150)
    metrics.add_published("contacts", 147)
    metrics.add_deduplicated("contacts", 2)
    metrics.add_stale("contacts")
    metrics.add_dead_lettered("contacts", "too_large", 2)
    metrics.add_dead_lettered("contacts", "missing_id", 0)
    metrics.add_delivery_errors("contacts", 3)
    clock.now += 7
    metrics.run_finished("contacts", "success", 7.0)
    assert value(metrics, P + "last_success_timestamp_seconds", resource="contacts") == T0 + 7
    assert value(metrics, P + "runs_total", resource="contacts", outcome="success") == 1
    assert value(metrics, P + "run_duration_seconds_count", resource="contacts") == 1
    assert value(metrics, P + "run_duration_seconds_sum", resource="contacts") == 7.0
    assert value(metrics, P + "run_duration_seconds_bucket", resource="contacts", le="5.0") == 0
    assert value(metrics, P + "run_duration_seconds_bucket", resource="contacts", le="10.0") == 1
    for name, expected in {
        "pages_fetched_total": 2,
        "records_fetched_total": 150,
        "records_published_total": 147,
        "records_deduplicated_total": 2,
        "records_stale_total": 1,
        "kafka_delivery_errors_total": 3,
    }.items():
        assert value(metrics, P + name, resource="contacts") == expected, name
    dead = P + "records_dead_lettered_total"
    assert value(metrics, dead, resource="contacts", reason="too_large") == 2
    assert value(metrics, dead, resource="contacts", reason="missing_id") == 0
    # a failure neither moves last_success nor touches other resources
    metrics.run_started("contacts", now=T0 + 100)
    metrics.run_finished("contacts", "failure", 0.5, now=T0 + 101)
    assert value(metrics, P + "last_attempt_timestamp_seconds", resource="contacts") == T0 + 100
    assert value(metrics, P + "last_success_timestamp_seconds", resource="contacts") == T0 + 7
    assert value(metrics, P + "runs_total", resource="contacts", outcome="failure") == 1
    assert value(metrics, P + "runs_total", resource="users", outcome="failure") == 0
    # public attributes are usable directly
    metrics.records_published.labels(resource="tags").inc(4)
    assert value(metrics, P + "records_published_total", resource="tags") == 4


def test_unknown_outcome_rejected(metrics: ProducerMetrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.run_finished("contacts", "ok", 1.0)


def test_api_observer(metrics: ProducerMetrics, caplog: pytest.LogCaptureFixture) -> None:
    observer: ApiObserver = metrics  # structural: what the API client is given
    observer.on_request("users", "2xx", 0.03)
    observer.on_request("users", "5xx", 1.5)
    observer.on_request("users", "error", 30.0)
    observer.on_retry("users", "503", 2.0, False)
    observer.on_retry("users", "429", 12.5, True)
    assert value(metrics, P + "api_requests_total", resource="users", status_class="2xx") == 1
    assert value(metrics, P + "api_requests_total", resource="users", status_class="5xx") == 1
    assert value(metrics, P + "api_requests_total", resource="users", status_class="error") == 1
    assert value(metrics, P + "api_request_duration_seconds_count", resource="users") == 3
    assert (
        value(metrics, P + "api_request_duration_seconds_bucket", resource="users", le="0.05") == 1
    )
    assert value(metrics, P + "api_retries_total", resource="users") == 2
    assert value(metrics, P + "api_rate_limit_wait_seconds_total", resource="users") == 12.5
    # an unexpected class never breaks the API client: counted as "error", warned once
    with caplog.at_level(logging.WARNING, logger="producer.observability.metrics"):
        metrics.on_request("users", "1xx", 0.1)
        metrics.on_request("users", "1xx", 0.1)
    assert value(metrics, P + "api_requests_total", resource="users", status_class="error") == 3
    assert len([r for r in caplog.records if "1xx" in r.getMessage()]) == 1
    assert 'status_class="1xx"' not in generate_latest(metrics.registry).decode()


def test_histogram_buckets() -> None:
    assert API_LATENCY_BUCKETS[0] == 0.01
    assert API_LATENCY_BUCKETS[-1] == 60.0
    assert RUN_DURATION_BUCKETS[0] == 0.1
    assert RUN_DURATION_BUCKETS[-1] == 3600.0
    for buckets in (API_LATENCY_BUCKETS, RUN_DURATION_BUCKETS):
        assert list(buckets) == sorted(set(buckets))
        assert 8 <= len(buckets) <= 16
    metrics = ProducerMetrics(["tags"])
    samples = scrape(metrics)
    les = {dict(k)["le"] for k in samples[P + "api_request_duration_seconds_bucket"] if k}
    assert les == {str(b) for b in API_LATENCY_BUCKETS} | {"+Inf"}
    les = {dict(k)["le"] for k in samples[P + "run_duration_seconds_bucket"]}
    assert les == {str(b) for b in RUN_DURATION_BUCKETS} | {"+Inf"}


def test_queue_length_callable(metrics: ProducerMetrics) -> None:
    queue = [1, 2, 3]
    metrics.set_queue_length_source(lambda: len(queue))
    assert value(metrics, P + "kafka_queue_messages") == 3
    queue.append(4)
    assert value(metrics, P + "kafka_queue_messages") == 4

    def broken() -> int:
        raise RuntimeError("producer closed")

    metrics.set_queue_length_source(broken)
    assert value(metrics, P + "kafka_queue_messages") == 4  # last good value, scrape survives
    metrics.set_queue_length_source(None)
    assert value(metrics, P + "kafka_queue_messages") == 0


def test_registries_are_isolated() -> None:
    before = set(REGISTRY._names_to_collectors)
    a = ProducerMetrics(RESOURCES)
    b = ProducerMetrics(RESOURCES)  # would raise on a shared registry
    a.add_fetched("tags", 5)
    assert b.registry.get_sample_value(P + "records_fetched_total", {"resource": "tags"}) == 0
    assert set(REGISTRY._names_to_collectors) == before
    injected = CollectorRegistry()
    c = ProducerMetrics(["tags"], registry=injected)
    assert c.registry is injected


def test_openmetrics_exposition(metrics: ProducerMetrics) -> None:
    metrics.set_watermark("tags", datetime.fromtimestamp(T0 - 1, UTC))
    metrics.complete_up_to("tags", datetime.fromtimestamp(T0 - 1, UTC))
    text = generate_openmetrics(metrics.registry).decode()  # type: ignore[no-untyped-call]
    assert text.endswith("# EOF\n")
    assert f'{P}sync_lag_seconds{{resource="tags"}} 1.0' in text
    assert "# TYPE askelephant_producer info" in text


def test_status_class_of() -> None:
    assert [status_class_of(c) for c in (200, 204, 304, 404, 429, 500, 503, None, 99)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
        "error",
        "error",
    ]


def test_parse_http_date() -> None:
    assert parse_http_date("Wed, 01 May 2024 12:00:00 GMT") == datetime(
        2024, 5, 1, 12, 0, tzinfo=UTC
    )
    assert parse_http_date("Wed, 01 May 2024 14:00:00 +0200") == datetime(
        2024, 5, 1, 12, 0, tzinfo=UTC
    )
    assert parse_http_date(None) is None
    assert parse_http_date("") is None
    assert parse_http_date("yesterday") is None
    parsed = parse_http_date("Wed, 01 May 2024 12:00:00 -0000")
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


def test_budget_waits_and_rate(metrics: ProducerMetrics) -> None:
    metrics.on_budget_wait("users", 0.25)
    metrics.on_budget_wait("users", 0.0)
    metrics.set_budget_rate(5.0)
    assert value(metrics, P + "api_budget_wait_seconds_total", resource="users") == 0.25
    assert value(metrics, P + "api_budget_requests_per_second") == 5.0
