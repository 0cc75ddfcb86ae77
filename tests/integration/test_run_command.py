"""`askelephant-kafka run` as a process: endpoints, JSON logs, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from producer.app import open_checkpoint_store
from producer.config import load_settings
from producer.simulator.server import Simulator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


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

            def tags_synced() -> bool:
                try:
                    text = httpx.get(f"{url}/metrics", timeout=2).text
                except httpx.HTTPError:
                    return False
                return 'runs_total{outcome="success",resource="tags"} 1.0' in text

            wait_for(tags_synced, 60, "the first run of tags")
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
