"""Throughput of the pure sync core, of event building + Avro encoding, and end to end.

Prints each figure beside its baseline (benchmarks/baseline.json, measured on the project's
2-core CI machine). Nothing here asserts a time: regressions are read, not failed.
`--save` writes the measured figures as the new baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from producer import schemas
from producer.events import build_change_event
from producer.sync.run import SyncRun
from tests.support.fake_source import FakeSource

BASELINE = Path(__file__).with_name("baseline.json")


def best_of(repeats: int, fn: Callable[[], int]) -> float:
    """Items per second, best of `repeats` (least disturbed by the other core's work)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        items = fn()
        rates.append(items / (time.perf_counter() - started))
    return max(rates)


def bench_sync_core() -> float:
    source = FakeSource(random.Random(1))
    source.create(20_000, tie=False)
    pages = []
    cursor = None
    while True:
        data, more, cursor, served = source.page(None, cursor, 100)
        pages.append((data, more, cursor, served))
        if not more:
            break

    def run() -> int:
        sync = SyncRun("contacts", None)
        for data, more, nxt, served in pages:
            sync.accept_page(data, has_more=more, next_cursor=nxt, served_at=served)
        sync.checkpoint_after(run_id="b", completed_at="now", published=0)
        return 20_000

    return best_of(3, run)


def bench_events() -> float:
    from producer.simulator.dataset import Dataset

    records = Dataset(3, 2_000).records("engagements")
    parsed = schemas.event_schema("engagements")

    def run() -> int:
        out = io.BytesIO()
        for record in records:
            event = build_change_event(
                "engagements",
                record,
                run_id="b",
                producer_id="b",
                api_version="v",
                snapshot=False,
                now_ms=0,
            )
            fastavro.schemaless_writer(out, parsed, event)
        return len(records)

    return best_of(3, run)


def bench_end_to_end(records: int) -> float:
    from devstack.stack import LocalStack
    from producer.app import build_app
    from producer.config import load_settings
    from producer.simulator.server import Simulator

    with LocalStack() as stack, Simulator(seed=5, records_per_resource=records) as sim:
        tag = uuid.uuid4().hex[:8]
        settings = load_settings(
            {
                "ASKELEPHANT_API_URL": sim.base_url,
                "ASKELEPHANT_API_KEY": sim.api_key,
                "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
                "SCHEMA_REGISTRY_URL": stack.schema_registry_url,
                "TOPIC_PREFIX": f"bench-{tag}.",
                "CHECKPOINT_TOPIC": f"bench-{tag}.checkpoints",
                "PRODUCER_ID": f"bench-{tag}",
                "RESOURCES": "contacts",
                "METRICS_PORT": "0",
            }
        )
        app = build_app(settings, stop=threading.Event())
        try:
            started = time.perf_counter()
            report = app.service.sync_once("contacts")
            elapsed = time.perf_counter() - started
        finally:
            app.close()
        if report.outcome != "success":
            raise SystemExit(f"end-to-end run failed: {report.error}")
        return report.published / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--save", action="store_true", help="store the figures as the baseline")
    parser.add_argument("--records", type=int, default=5_000, help="end-to-end record count")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    measured: dict[str, float] = {
        "sync_core_records_per_s": bench_sync_core(),
        "event_build_and_avro_records_per_s": bench_events(),
    }
    if not args.skip_end_to_end:
        measured["end_to_end_records_per_s"] = bench_end_to_end(args.records)
    baseline: dict[str, Any] = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    print(f"{'benchmark':<40} {'measured':>12} {'baseline':>12} {'ratio':>7}")
    for name, rate in measured.items():
        base = baseline.get(name)
        ratio = f"{rate / base:6.2f}x" if base else "    n/a"
        shown = f"{base:12,.0f}" if base else f"{'-':>12}"
        print(f"{name:<40} {rate:12,.0f} {shown} {ratio}")
    if args.save:
        BASELINE.write_text(json.dumps({k: round(v) for k, v in measured.items()}, indent=2) + "\n")
        print(f"saved to {BASELINE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
