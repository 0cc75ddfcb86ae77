"""`python -m devstack` (make devstack): starts broker + registry + simulator, prints the
export lines for the CLI, and Ctrl-C stops all three, leaving no child process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from devstack.__main__ import READY_LINE

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # a first run may download the broker and registry with Maven


def _children(pid: int) -> set[int]:
    """Direct children of `pid` (the launched JVMs), read from /proc."""
    found: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                found.add(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _read_until_ready(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"python -m devstack exited early ({proc.wait()}):\n{''.join(lines)}")
        lines.append(line)
        if line.strip() == READY_LINE:
            return lines
    pytest.fail(f"python -m devstack not ready after {START_TIMEOUT_S}s:\n{''.join(lines)}")


def test_devstack_prints_exports_and_ctrl_c_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    env.pop("SCHEMA_REGISTRY_URL", None)
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--simulator-port", "0", "--records", "20"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _read_until_ready(proc)
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in output
            if line.strip().startswith("export ")
        )
        assert set(exports) == {
            "ASKELEPHANT_API_URL",
            "ASKELEPHANT_API_KEY",
            "KAFKA_BOOTSTRAP_SERVERS",
            "SCHEMA_REGISTRY_URL",
        }
        text = "".join(output)
        assert "Apache Kafka" in text
        children = _children(proc.pid)
        assert children, "the broker and registry JVMs should be children of the devstack"

        # All three answer at the printed addresses.
        admin = AdminClient({"bootstrap.servers": exports["KAFKA_BOOTSTRAP_SERVERS"]})
        assert admin.list_topics(timeout=30).brokers
        with urllib.request.urlopen(exports["SCHEMA_REGISTRY_URL"] + "/subjects", timeout=10) as r:  # noqa: S310
            assert r.status == 200
        page = httpx.get(
            exports["ASKELEPHANT_API_URL"] + "/v2/tags",
            headers={"Authorization": exports["ASKELEPHANT_API_KEY"]},
            timeout=10,
        )
        assert page.status_code == 200
        assert page.json()["object"] == "list"
        del admin

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        assert proc.stdout is not None
        assert "stopped" in proc.stdout.read()
        left = {pid for pid in children if _alive(pid)}
        assert not left, f"child processes left running after Ctrl-C: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
