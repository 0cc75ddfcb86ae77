"""`askelephant-kafka run` as a process: endpoints, JSON logs, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from askelephant_simulator.server import Simulator
from producer.app import open_checkpoint_store
from producer.config import load_settings
from tests.support.processes import free_port, start_run, successful_runs, wait_for


def test_run_serves_health_and_stops_within_10s_on_sigterm(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    env = make_env(
        METRICS_PORT=str(port),
        POLL_INTERVAL_SECONDS="1",
        PAGE_SIZE="10",
        LOG_FORMAT="json",
        RESOURCES="tags,engagements",
    )
    sim.faults.slow(400, resource="engagements")  # engagements is mid-run at SIGTERM
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer", "run"],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: successful_runs(port, "tags") >= 1, 60, "the first run of tags")
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            ready = httpx.get(f"{url}/readyz", timeout=5).json()
            assert ready["checks"]["kafka"]["ok"]
            assert ready["checks"]["checkpoints_loaded"]["ok"]

            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
            took = time.monotonic() - stopped_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0
    assert took < 10, f"run took {took:.1f}s to stop"

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    runs = [line for line in lines if line.get("event") == "sync_run"]
    assert any(r["resource"] == "tags" and r["outcome"] == "success" for r in runs)
    assert any(r["resource"] == "engagements" and r["outcome"] == "interrupted" for r in runs)
    assert sim.api_key.split(".", 1)[1] not in log_path.read_text()  # no secret in the logs

    checkpoints = open_checkpoint_store(load_settings(env)).all()
    assert "tags" in checkpoints
    assert "engagements" not in checkpoints  # the interrupted run committed nothing


def sigterm_and_time(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, time.monotonic() - stopped_at


def json_lines(log_path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]


def test_sigterm_with_a_12s_page_in_flight_stops_within_10s(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    env = make_env(
        METRICS_PORT=str(port), POLL_INTERVAL_SECONDS="1", RESOURCES="tags", LOG_FORMAT="json"
    )
    log_path = tmp_path / "run.log"
    proc = start_run(env, log_path)
    try:
        wait_for(
            lambda: successful_runs(port, "tags") >= 1,
            60,
            "the first run of tags",
        )
        served = sim.stats()["by_resource"]["tags"]["requests"]
        sim.faults.slow(12_000, resource="tags")
        wait_for(
            lambda: sim.stats()["by_resource"]["tags"]["requests"] > served,
            10,
            "a slow page in flight",
        )
        time.sleep(0.5)
    finally:
        code, took = sigterm_and_time(proc)
    assert code == 0
    assert took < 10, f"run took {took:.1f}s to stop with a 12 s page in flight"
    [stopped] = [x for x in json_lines(log_path) if x.get("event") == "stopped"]
    assert stopped["unacknowledged"] == 0


def test_healthz_fails_and_names_a_stalled_worker(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    env = make_env(
        METRICS_PORT=str(port),
        POLL_INTERVAL_SECONDS="1",
        RESOURCES="tags,users",
        LIVENESS_STALL_SECONDS="10",
        # below the stall (one request may take this long) but retried, silently, past it
        HTTP_TIMEOUT_SECONDS="8",
        LOG_FORMAT="json",
    )
    sim.faults.slow(60_000, resource="users")  # users' first request never answers in time
    proc = start_run(env, tmp_path / "run.log")
    try:

        def unhealthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 503
            except httpx.HTTPError:
                return False

        wait_for(unhealthy, 40, "/healthz to fail")
        checks = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["checks"]
        assert not checks["worker:users"]["ok"]
        assert "stalled" in checks["worker:users"]["detail"]
        assert checks["worker:tags"]["ok"]
        assert checks["loop"]["ok"]
    finally:
        code, took = sigterm_and_time(proc)
    assert code == 0
    assert took < 10


def test_sigterm_with_the_broker_down_stops_within_10s(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    from devstack.kafka import start_local_kafka

    broker = start_local_kafka()  # a broker of this test's own, to stop under the producer
    try:
        port = free_port()
        env = make_env(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            METRICS_PORT=str(port),
            POLL_INTERVAL_SECONDS="1",
            RESOURCES="contacts,companies,users,tags,engagements",
            LOG_FORMAT="json",
        )
        log_path = tmp_path / "run.log"
        proc = start_run(env, log_path)
        try:
            wait_for(
                lambda: successful_runs(port, "tags") >= 1,
                90,
                "the first run of tags",
            )
            broker.stop()
            for resource in ("contacts", "engagements"):
                sim.dataset.mutate(resource, 50)  # events that can no longer be delivered
            time.sleep(3)
        finally:
            code, took = sigterm_and_time(proc)
    finally:
        broker.stop()
    assert code == 0
    assert took < 10, f"run took {took:.1f}s to stop with the broker down"
    assert [x for x in json_lines(log_path) if x.get("event") == "stopped"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sync_stops_within_10s_on_a_signal_and_commits_no_unfinished_run(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path, signum: int
) -> None:
    env = make_env(PAGE_SIZE="10", LOG_FORMAT="json", RESOURCES="tags,engagements")
    sim.faults.slow(400, resource="engagements")  # 15 pages of 0.4 s: mid-run at the signal
    log_path = tmp_path / "sync.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer", "sync"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
        try:
            wait_for(
                lambda: sim.stats()["by_resource"].get("engagements", {}).get("requests", 0) >= 3,
                60,
                "engagements mid-run",
            )
            assert proc.poll() is None, "the sync finished before the signal"
            stopped_at = time.monotonic()
            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=30)
            took = time.monotonic() - stopped_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert took < 10, f"sync took {took:.1f}s to stop"
    assert proc.returncode == 1  # not every run succeeded
    summary = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line.strip()}
    assert summary["engagements"] == "interrupted", out
    assert any(x.get("event") == "stopped" for x in json_lines(log_path))
    assert "engagements" not in open_checkpoint_store(load_settings(env)).all()
