"""Scrape /metrics, /healthz and /readyz during and after real sync runs."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from askelephant_simulator.server import Simulator
from producer.app import App
from producer.observability.server import ObservabilityServer
from producer.sync.timestamps import instant_micros
from tests.integration.conftest import events_on

PROMTOOL_CANDIDATES = [Path(__file__).parents[2] / ".tools/bin/promtool"]


@pytest.fixture
def served(make_app: Callable[..., App]) -> Iterator[tuple[App, str]]:
    app = make_app(MAX_RETRY_WAIT_SECONDS="1")
    server = ObservabilityServer(app.metrics.registry, app.health, host="127.0.0.1", port=0)
    server.start()
    yield app, f"http://127.0.0.1:{server.port}"
    server.stop()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((f"askelephant_producer_{name}", frozenset(labels.items())))


def test_metrics_follow_real_runs(served: tuple[App, str], sim: Simulator) -> None:
    app, url = served
    before = scrape(url)
    assert value(before, "records_published_total", resource="contacts") == 0
    assert value(before, "runs_total", resource="contacts", outcome="failure") == 0
    assert value(before, "sync_lag_seconds", resource="contacts") is None  # no watermark yet

    assert app.service.sync_once("contacts").outcome == "success"
    first = scrape(url)
    consumed = len(events_on(app.settings, "contacts"))
    assert value(first, "records_published_total", resource="contacts") == consumed == 150
    assert value(first, "records_fetched_total", resource="contacts") == 150
    assert value(first, "pages_fetched_total", resource="contacts") == 2
    assert value(first, "checkpoint_commits_total", resource="contacts") == 1
    assert value(first, "runs_total", resource="contacts", outcome="success") == 1
    assert value(first, "api_requests_total", resource="contacts", status_class="2xx") == 2
    newest = max(instant_micros(r["updated_at"]) for r in sim.dataset.records("contacts"))
    watermark = value(first, "source_watermark_timestamp_seconds", resource="contacts")
    assert watermark == pytest.approx(newest / 1e6, abs=1e-3)
    age_before = value(first, "newest_change_age_seconds", resource="contacts")
    lag = value(first, "sync_lag_seconds", resource="contacts")
    assert age_before is not None
    assert lag is not None
    # Kafka is complete up to the run's start less SETTLE_SECONDS: that, plus a second or two
    assert 0 < lag < app.settings.settle_seconds + 10

    sim.dataset.mutate("contacts", 3)
    # The lag is measured from the run's start by the API's `Date` header, which has whole
    # seconds: two runs within one second share it. Start the second run in the next second.
    time.sleep(1.05 - time.time() % 1)
    assert app.service.sync_once("contacts").outcome == "success"
    second = scrape(url)
    age_after = value(second, "newest_change_age_seconds", resource="contacts")
    assert age_after is not None
    assert age_after < age_before  # the watermark moved to the fresh updates
    lag_after = value(second, "sync_lag_seconds", resource="contacts")
    assert lag_after is not None
    assert 0 < lag_after < app.settings.settle_seconds + 10
    assert value(second, "records_published_total", resource="contacts") == len(
        events_on(app.settings, "contacts")
    )
    assert value(second, "last_success_timestamp_seconds", resource="contacts") == pytest.approx(
        time.time(), abs=60
    )
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    _promtool_check(httpx.get(f"{url}/metrics", timeout=10).text)


def test_a_failing_api_shows_in_counters_and_readiness(
    served: tuple[App, str], sim: Simulator
) -> None:
    app, url = served
    sim.faults.server_error(500, count=None)  # every request, every resource
    for resource in app.settings.resources:
        assert app.service.sync_once(resource).outcome == "failure"
    samples = scrape(url)
    for resource in app.settings.resources:
        assert value(samples, "runs_total", resource=resource, outcome="failure") == 1
        assert (
            value(samples, "api_requests_total", resource=resource, status_class="5xx") or 0
        ) >= 1
        assert (value(samples, "api_retries_total", resource=resource) or 0) >= 1
    time.sleep(5.5)  # readiness results are cached for 5 s
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["api"]["ok"] is False
    assert ready.json()["checks"]["kafka"]["ok"] is True


def test_a_stuck_loop_fails_liveness(served: tuple[App, str]) -> None:
    app, url = served
    app.health.liveness_timeout_s = 0.5  # type: ignore[misc]
    time.sleep(1.0)
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 503
    app.health.tick()
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_metrics_during_a_run(served: tuple[App, str], sim: Simulator) -> None:
    app, url = served
    sim.faults.slow(150, resource="engagements")
    seen: list[float] = []
    runner = threading.Thread(target=app.service.sync_once, args=("engagements",))
    runner.start()
    while runner.is_alive():
        seen.append(value(scrape(url), "records_fetched_total", resource="engagements") or 0)
        time.sleep(0.05)
    runner.join()
    assert seen[0] < 150
    assert any(0 < v < 150 for v in seen)  # one page in, the next still on its way
    assert value(scrape(url), "records_fetched_total", resource="engagements") == 150


def _promtool_check(text: str) -> None:
    promtool = next((str(p) for p in PROMTOOL_CANDIDATES if p.exists()), shutil.which("promtool"))
    if promtool is None:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing in CI: run scripts/install-tools.sh")
        pytest.skip("promtool not installed: run scripts/install-tools.sh")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr
