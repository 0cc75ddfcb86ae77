"""HealthState and the observability HTTP server over real HTTP."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producer.observability.health import HealthState, default_liveness_timeout
from producer.observability.logging import MASK, _clear_secrets, register_secret
from producer.observability.metrics import ProducerMetrics
from producer.observability.server import DEFAULT_PORT, ObservabilityServer

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthState:
    return HealthState(liveness_timeout_s=120, cache_ttl_s=5, check_timeout_s=0.5, clock=clock)


@pytest.fixture
def metrics() -> ProducerMetrics:
    return ProducerMetrics(["contacts", "tags"], version="9.9.9")


@pytest.fixture
def server(metrics: ProducerMetrics, health: HealthState) -> Iterator[ObservabilityServer]:
    srv = ObservabilityServer(metrics.registry, health, host="127.0.0.1", port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ObservabilityServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


# -- HealthState -------------------------------------------------------------------


def test_default_liveness_timeout() -> None:
    assert default_liveness_timeout(10) == 120
    assert default_liveness_timeout(60) == 180


def test_liveness_follows_ticks(health: HealthState, clock: FakeClock) -> None:
    assert health.liveness().ok  # start-up grace
    clock.now += 121
    report = health.liveness()
    assert not report.ok
    assert "stuck" in report.checks["loop"].detail
    health.tick()
    assert health.liveness().ok
    clock.now += 119
    assert health.liveness().to_json()["status"] == "ok"


def test_readiness_checks_and_cache(health: HealthState, clock: FakeClock) -> None:
    assert health.readiness().to_json() == {"status": "ok", "checks": {}}
    calls = []
    kafka_ok = True

    def kafka() -> tuple[bool, str]:
        calls.append(1)
        return kafka_ok, "3 brokers" if kafka_ok else "no broker"

    health.add_check("kafka", kafka)
    health.set_check_result("checkpoints_loaded", True, "5 resources")
    report = health.readiness()
    assert report.to_json() == {
        "status": "ok",
        "checks": {
            "kafka": {"ok": True, "detail": "3 brokers"},
            "checkpoints_loaded": {"ok": True, "detail": "5 resources"},
        },
    }
    kafka_ok = False
    for _ in range(20):  # a scrape storm within the TTL evaluates once
        assert health.readiness().ok
    assert len(calls) == 1
    clock.now += 5
    report = health.readiness()
    assert not report.ok
    assert report.checks["kafka"].detail == "no broker"
    assert len(calls) == 2
    health.remove_check("kafka")
    assert health.readiness().ok


def test_readiness_check_raising_is_failed_and_redacted(health: HealthState) -> None:
    def broken() -> tuple[bool, str]:
        raise ConnectionError("auth failed for sk-apik_abc.def")

    health.add_check("schema_registry", broken)
    result = health.readiness().checks["schema_registry"]
    assert not result.ok
    assert result.detail == f"ConnectionError: auth failed for {MASK}"


def test_readiness_hung_check_times_out_and_is_not_restarted(
    health: HealthState, clock: FakeClock
) -> None:
    release = threading.Event()
    started = []

    def hung() -> tuple[bool, str]:
        started.append(1)
        release.wait(10)
        return True, "finally"

    health.add_check("kafka", hung)
    t0 = time.monotonic()
    result = health.readiness().checks["kafka"]
    assert time.monotonic() - t0 < 3
    assert not result.ok
    assert "timed out" in result.detail
    clock.now += 10  # cache expired, but the evaluation is still running: reuse it
    assert not health.readiness().ok
    assert len(started) == 1
    release.set()
    clock.now += 10
    deadline = time.monotonic() + 5
    while not (report := health.readiness()).ok and time.monotonic() < deadline:
        clock.now += 10
        time.sleep(0.01)
    assert report.checks["kafka"].detail == "finally"
    assert len(started) == 1


# -- HTTP --------------------------------------------------------------------------


def test_default_port() -> None:
    assert DEFAULT_PORT == 9108
    srv = ObservabilityServer(ProducerMetrics([]).registry, HealthState())
    assert srv.port == 9108


def test_port_zero_binds_a_free_port(server: ObservabilityServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_metrics_endpoint(client: httpx.Client, metrics: ProducerMetrics) -> None:
    metrics.add_published("contacts", 7)
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert families["askelephant_producer_info"].samples[0].labels == {"version": "9.9.9"}
    published = {
        s.labels["resource"]: s.value
        for s in families["askelephant_producer_records_published"].samples
        if s.name.endswith("_total")
    }
    assert published == {"contacts": 7.0, "tags": 0.0}


def test_metrics_openmetrics_and_gzip(client: httpx.Client) -> None:
    resp = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n")
    with client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        body = gzip.decompress(b"".join(raw.iter_raw()))
    assert b"askelephant_producer_runs_total" in body


def test_healthz_200_then_503_when_loop_stuck(
    client: httpx.Client, health: HealthState, clock: FakeClock
) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["status"] == "ok"
    assert resp.json()["checks"]["loop"]["ok"] is True
    clock.now += 500
    resp = client.get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "fail"
    assert body["checks"]["loop"]["ok"] is False
    health.tick()
    assert client.get("/healthz").status_code == 200


def test_readyz_503_when_a_check_fails(client: httpx.Client, health: HealthState) -> None:
    assert client.get("/readyz").status_code == 200
    health.add_check("kafka", lambda: (True, "ok"))
    health.add_check("schema_registry", lambda: (False, "connection refused"))
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {
        "status": "fail",
        "checks": {
            "kafka": {"ok": True, "detail": "ok"},
            "schema_registry": {"ok": False, "detail": "connection refused"},
        },
    }


def test_readyz_details_never_leak_registered_secrets(
    client: httpx.Client, health: HealthState
) -> None:
    register_secret("registry-user:hunter2")
    try:
        health.set_check_result("schema_registry", False, "401 for registry-user:hunter2")
        resp = client.get("/readyz")
    finally:
        _clear_secrets()
    assert "hunter2" not in resp.text
    assert resp.json()["checks"]["schema_registry"]["detail"] == f"401 for {MASK}"


def test_unknown_path_404_and_bad_method_405(client: httpx.Client) -> None:
    assert client.get("/").status_code == 404
    assert client.get("/metricsx").status_code == 404
    assert client.get("/metrics?name=x").status_code == 200
    resp = client.post("/metrics", content=b"x")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"
    head = client.head("/healthz")
    assert head.status_code == 200
    assert head.content == b""


def test_stop_is_idempotent_and_releases_port(metrics: ProducerMetrics) -> None:
    srv = ObservabilityServer(metrics.registry, HealthState(), host="127.0.0.1", port=0)
    with srv:
        port = srv.port
        with httpx.Client(timeout=5) as c:
            assert c.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        with pytest.raises(RuntimeError):
            srv.start()
    srv.stop()
    with httpx.Client(timeout=2) as c, pytest.raises(httpx.ConnectError):
        c.get(f"http://127.0.0.1:{port}/healthz")


def test_a_silent_worker_fails_liveness_by_name(clock: FakeClock) -> None:
    health = HealthState(liveness_timeout_s=120, stall_timeout_s=30, clock=clock)
    health.progress("contacts")
    health.progress("tags")
    clock.now += 20
    health.tick()
    health.progress("tags")
    assert health.liveness().ok
    clock.now += 15  # contacts silent for 35 s, tags for 15 s
    health.tick()
    report = health.liveness()
    assert not report.ok
    assert not report.checks["worker:contacts"].ok
    assert "stalled" in report.checks["worker:contacts"].detail
    assert report.checks["worker:tags"].ok
    assert report.checks["loop"].ok
    health.worker_done("contacts")  # stopped on purpose: no longer watched
    assert health.liveness().ok


def test_a_failing_check_is_a_warning_while_it_lasts_and_info_when_it_recovers(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    health = HealthState(cache_ttl_s=0, check_timeout_s=1, clock=clock)
    state = {"ok": False}
    health.add_check("schema_registry", lambda: (state["ok"], "at http://registry:8081"))
    with caplog.at_level("INFO", logger="producer.observability.health"):
        health.readiness()
        health.readiness()  # within 30 s: not repeated
        clock.now += 31
        health.readiness()
        state["ok"] = True
        clock.now += 1
        health.readiness()
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        ("WARNING", "schema_registry check failing: at http://registry:8081"),
        ("WARNING", "schema_registry check failing: at http://registry:8081"),
        ("INFO", "schema_registry is healthy again: at http://registry:8081"),
    ]
