"""Running the producer as its own process in integration tests, and waiting on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support import secret_scan


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m producer ARGS` as its own process (its output is scanned for the test
    secrets: tests/support/secret_scan.py)."""
    result = subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    command = " ".join(["producer", *args])
    secret_scan.check(result.stdout, f"stdout of `{command}`")
    secret_scan.check(result.stderr, f"stderr of `{command}`")
    return result


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The ERROR lines a command wrote (LOG_FORMAT=text) on stderr."""
    return [line for line in result.stderr.splitlines() if " ERROR " in line]


def start_run(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m producer run` in the background, its output in `log_path` (scanned for
    the test secrets when the test ends)."""
    secret_scan.watch_file(log_path, "log of `producer run`")
    with log_path.open("w") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "producer", "run"],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def metrics_text(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return ""


def successful_runs(port: int, resource: str) -> float:
    """`runs_total{outcome="success"}` of `resource` as scraped now (0 when not reachable).

    Compared with `>=`: runs of a quiet resource take milliseconds, so a scrape may never
    see one exact count."""
    prefix = f'askelephant_producer_runs_total{{outcome="success",resource="{resource}"}} '
    for line in metrics_text(port).splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0
