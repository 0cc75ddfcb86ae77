"""`make bench` keeps working: its small version runs every part end to end (no speed check:
speed is read from the printed figures, never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def test_the_small_benchmark_runs_every_part(local_stack: Any) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": local_stack.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": local_stack.schema_registry_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--small"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = {
        line.split()[0]: line.split()[1]
        for line in done.stdout.splitlines()
        if line.startswith(("micro.", "instant.", "latency.", "burst."))
    }
    for name in (
        "instant.producer.records_per_s",
        "instant.producer.cpu_us_per_record",
        "instant.producer.pages_per_s",
        "instant.producer.peak_rss_mb",
        "instant.sequential.records_per_s",
        "instant.ceiling.records_per_s",
        "latency.producer.traversal_share_of_bound",
        "burst.sliced.share_of_k_traversals",
        "burst.sliced.speedup",
        "micro.contacts.build_compiled_us",
    ):
        assert name in figures, done.stdout
    assert figures["instant.producer.records"] == "4,000"
    assert "producer / sequential loop" in done.stdout
