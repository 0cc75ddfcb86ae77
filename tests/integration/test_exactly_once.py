"""Resumable runs and exactly-once delivery on the real broker, tested the way Kafka Connect
tests its exactly-once source support: records read back with read_committed, deliberately
aborted batches, a second producer with the same transactional ids, and crashes at seeded
random points while the API keeps changing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from askelephant_simulator.server import Simulator
from producer.app import App, open_checkpoint_store
from producer.config import load_settings
from producer.kafka.checkpoints import CheckpointStore
from producer.sync.slices import WINDOWS_PER_SLICE
from tests.integration.conftest import events_on
from tests.support.processes import free_port, successful_runs, wait_for

CRASHES = int(os.environ.get("CRASH_CAMPAIGN_KILLS", "30"))
"""SIGKILLs per delivery mode; `CRASH_CAMPAIGN_KILLS=300 pytest -k campaign` for a long one."""


def sync_process(env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "producer", "sync", "--resource", "contacts"]
    environ = {**os.environ, **env}
    if log_path is None:
        return subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL)
    with log_path.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT)


def versions(settings_env: dict[str, str]) -> list[tuple[str, int]]:
    """(id, updated_at_us) of every event on the contacts topic, read_committed, in order."""
    from producer.sync.timestamps import to_micros

    out = []
    for event in events_on(load_settings(settings_env), "contacts"):
        value = event.value["updated_at_us"]
        out.append((event.key, to_micros(value) if not isinstance(value, int) else value))
    return out


def contacts_requests(sim: Simulator) -> int:
    return int(sim.stats()["by_resource"].get("contacts", {}).get("requests", 0))


def kill_mid_export(env: dict[str, str], sim: Simulator, requests: int) -> CheckpointStore:
    """`sync` SIGKILLed once it has made `requests` API requests (the simulator's faults are
    cleared after it); the checkpoint store then, the export still uncommitted."""
    proc = sync_process(env)
    wait_for(lambda: contacts_requests(sim) >= requests, 60, f"{requests} requests")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sim.faults.clear()
    store = open_checkpoint_store(load_settings(env))
    assert store.get("contacts") is None  # the export never committed
    return store


def source_versions(sim: Simulator) -> dict[str, int]:
    """The API's current version of each contact, at the precision it renders."""
    from producer.sync.timestamps import instant_micros

    return {r["id"]: instant_micros(r["updated_at"]) for r in sim.dataset.records("contacts")}


@pytest.mark.parametrize("delivery", ["exactly-once", "at-least-once"])
def test_crash_campaign(
    delivery: str, make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    """SIGKILLs at random moments, the API changing between and during runs: first during
    the bulk export (no checkpoint yet), then, once it is committed, during incremental
    runs. Read back with read_committed: nothing lost, and in exactly-once mode nothing twice."""
    rng = random.Random(f"campaign-{delivery}")
    sim.dataset.create("contacts", 450)  # 600 contacts: the bulk export takes 60 pages
    env = make_env(
        RESOURCES="contacts",
        PAGE_SIZE="10",
        BATCH_PAGES="2",
        DELIVERY=delivery,
        LOG_FORMAT="json",
    )
    sim.faults.slow(40, resource="contacts")
    log_path = tmp_path / "sync.log"
    bulk_kills = incremental_kills = attempts = 0

    def change_the_api_then_kill(proc: subprocess.Popen[bytes]) -> int:
        """The API changes under the run, then a SIGKILL if it still runs: 1 if it did."""
        if rng.random() < 0.5:
            sim.dataset.mutate("contacts", rng.randint(1, 20), same_timestamp=rng.random() < 0.3)
        if rng.random() < 0.2:
            sim.dataset.create("contacts", rng.randint(1, 5))
        running = proc.poll() is None
        if running:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return int(running)

    def exported() -> bool:
        return open_checkpoint_store(load_settings(env)).get("contacts") is not None

    # the bulk export: killed at start-up, mid-run, or just after a mark
    while bulk_kills < CRASHES // 2 and not exported() and attempts < CRASHES:
        attempts += 1
        proc = sync_process(env, log_path)
        time.sleep(rng.uniform(0.3, 3.0))
        bulk_kills += change_the_api_then_kill(proc)
    if not exported():  # finish the export
        assert sync_process(env, log_path).wait(timeout=120) == 0, log_path.read_text()[-3000:]
    assert exported()

    # incremental runs with work to do, each killed once it has asked for its first page
    while bulk_kills + incremental_kills < CRASHES and attempts < 4 * CRASHES:
        attempts += 1
        sim.dataset.mutate("contacts", rng.randint(20, 60), same_timestamp=rng.random() < 0.3)
        before = contacts_requests(sim)
        proc = sync_process(env, log_path)

        def started(proc: subprocess.Popen[bytes] = proc, before: int = before) -> bool:
            return contacts_requests(sim) > before or proc.poll() is not None

        wait_for(started, 60, "a first request")
        time.sleep(rng.uniform(0.0, 0.5))
        incremental_kills += change_the_api_then_kill(proc)
    sim.faults.clear()
    for _ in range(2):  # quiet runs to the end
        done = sync_process(env, log_path)
        assert done.wait(timeout=120) == 0, log_path.read_text()[-3000:]

    seen = versions(env)
    duplicates = sum(n - 1 for n in Counter(seen).values() if n > 1)
    latest: dict[str, int] = {}
    for record_id, instant in seen:
        latest[record_id] = max(instant, latest.get(record_id, instant))
    lost = {i: t for i, t in source_versions(sim).items() if latest.get(i) != t}
    kills = bulk_kills + incremental_kills
    print(
        f"\n{delivery}: {kills} SIGKILLs in {attempts} runs ({bulk_kills} during the bulk "
        f"export, {incremental_kills} during incremental runs), {len(seen)} events, "
        f"{duplicates} duplicate versions ({duplicates / max(kills, 1):.1f} per kill), "
        f"{len(lost)} lost"
    )
    assert kills == CRASHES
    assert bulk_kills >= 1
    assert incremental_kills >= 1
    assert lost == {}
    if delivery == "exactly-once":
        assert duplicates == 0


def test_a_kill_near_the_end_of_a_bulk_export_resumes_from_the_last_mark(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    sim.dataset.create("contacts", 150)  # 300 contacts, 30 pages
    # Records older than the run's start by more than the cap's margin (the Date header
    # has whole seconds), as they are in a real first export: the mark follows the pages.
    time.sleep(2.1)
    env = make_env(RESOURCES="contacts", PAGE_SIZE="10", BATCH_PAGES="3")
    sim.faults.slow(100, resource="contacts")
    store = kill_mid_export(env, sim, 27)  # of 30 pages
    killed_after = contacts_requests(sim)
    mark = store.progress("contacts")
    assert mark is not None
    assert mark.snapshot
    assert mark.pages >= 21

    app = make_app(**env)
    report = app.service.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert report.resumed_from == mark.mark.updated_at
    assert report.snapshot
    print(
        f"\nkilled after {killed_after} of 30 pages; last progress mark after {mark.pages} "
        f"pages; the resumed run fetched {report.stats.pages} pages ({report.stats.fetched} "
        f"records, {report.stats.boundary_skipped} of them at the mark's instant) instead of 30"
    )
    # only what comes after the mark is fetched again, plus the versions at the mark's
    # instant (`gte`), which the mark's dedup state skips
    assert report.stats.accepted == 300 - 10 * mark.pages
    skipped = len(mark.mark.boundary_ids) + len(mark.mark.ahead)
    assert report.stats.fetched == report.stats.accepted + skipped
    assert report.stats.boundary_skipped == skipped
    assert open_checkpoint_store(load_settings(env)).progress("contacts") is None  # cleared
    latest = {e.key: e.value["updated_at"] for e in events_on(app.settings, "contacts")}
    assert latest == {r["id"]: r["updated_at"] for r in sim.dataset.records("contacts")}


def test_a_killed_sliced_export_resumes_every_window_exactly_once(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    """BACKFILL_SLICES with exactly-once: a SIGKILL mid-export, then a run that resumes
    each window from the mark; read_committed sees every version once."""
    sim.dataset.create("contacts", 150)  # 300 contacts, 30 pages and the windows' last ones
    time.sleep(2.1)  # older than the run-start cap, as in a real first export
    env = make_env(
        RESOURCES="contacts",
        PAGE_SIZE="10",
        BATCH_PAGES="3",
        BACKFILL_SLICES="2",
        DELIVERY="exactly-once",
    )
    sim.faults.slow(100, resource="contacts")
    store = kill_mid_export(env, sim, 20)
    mark = store.progress("contacts")
    assert mark is not None
    assert len(mark.windows) >= 2 * WINDOWS_PER_SLICE  # planned, and any split off since
    assert any(w.mark is not None for w in mark.windows)

    app = make_app(**env)
    report = app.service.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert report.resumed_from is not None
    assert report.resumed_from.endswith("windows done")
    print(
        f"\nsliced export killed after {mark.pages} marked pages "
        f"({sum(w.done for w in mark.windows)} of {len(mark.windows)} windows done); "
        f"the resumed run fetched {report.stats.pages} pages"
    )
    seen = versions(env)
    assert len(seen) == len(set(seen))  # read_committed: no version twice
    assert dict(seen) == source_versions(sim)  # and none missing
    assert open_checkpoint_store(load_settings(env)).progress("contacts") is None  # cleared


def read_uncommitted(app: App, topic: str) -> int:
    consumer = Consumer(
        {
            **app.settings.kafka_config(),
            "group.id": f"uncommitted-{uuid.uuid4()}",
            "isolation.level": "read_uncommitted",
            "enable.auto.commit": "false",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        count, deadline = 0, time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            count += 1
            if (msg.offset() or 0) + 1 >= high:
                break
        return count
    finally:
        consumer.close()


def test_an_aborted_batch_is_invisible_to_read_committed_consumers(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    from askelephant_simulator.dataset import REMOVE

    app = make_app(
        RESOURCES="contacts",
        PAGE_SIZE="10",
        BATCH_PAGES="4",
        DELIVERY="exactly-once",
        DEAD_LETTER_POLICY="fail",
    )
    # Pages 1-4 commit with their mark; the run fails on page 8 with pages 5-7 in the open
    # transaction, which is aborted. Slow pages: their events are sent (linger 20 ms) before
    # the failing page arrives, so the broker has them, uncommitted.
    bad = sim.dataset.ids("contacts")[74]
    sim.dataset.corrupt("contacts", bad, {"id": REMOVE})
    sim.faults.slow(150, resource="contacts")
    report = app.service.sync_once("contacts")
    assert report.outcome == "failure"
    topic = app.settings.topic_for("contacts")
    assert len(events_on(app.settings, "contacts")) == 40  # read_committed: pages 1-4
    assert read_uncommitted(app, topic) > 40  # the others were written, then aborted
    mark = app.store.progress("contacts")
    assert mark is not None
    assert mark.pages == 4

    sim.dataset.repair("contacts", bad)
    sim.faults.clear()
    again = app.service.sync_once("contacts")
    assert again.outcome == "success", again.error
    assert again.resumed_from == mark.mark.updated_at
    seen = [(e.key, e.value["updated_at"]) for e in events_on(app.settings, "contacts")]
    assert len(seen) == len(set(seen)) == 150


def test_a_second_instance_fences_the_first(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    ports = free_port(), free_port()
    env = make_env(
        RESOURCES="contacts,tags",
        DELIVERY="exactly-once",
        POLL_INTERVAL_SECONDS="1",
        LOG_FORMAT="json",
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(n: int) -> None:
        with logs[n].open("w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "producer", "run"],
                    env={**os.environ, **env, "METRICS_PORT": str(ports[n])},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    def succeeded(n: int, times: float = 1) -> Callable[[], bool]:
        return lambda: successful_runs(ports[n], "contacts") >= times

    try:
        start(0)
        wait_for(succeeded(0), 120, "the first instance's first run")
        start(1)
        wait_for(succeeded(1), 120, "the second instance's first run")
        # The first instance learns it was fenced when it next writes: give it changes.
        deadline = time.monotonic() + 60
        while procs[0].poll() is None:
            assert time.monotonic() < deadline, "the first instance was never fenced"
            sim.dataset.mutate("contacts", 5)
            time.sleep(1.0)
        first_code = procs[0].returncode
        sim.dataset.mutate("contacts", 10)
        time.sleep(3.0)  # the second instance picks the last changes up
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert first_code == 3, logs[0].read_text()[-2000:]
    assert "taken over by another instance" in logs[0].read_text()
    seen = versions(env)
    assert len(seen) == len(set(seen))  # nothing duplicated
    checkpoint = open_checkpoint_store(load_settings(env)).get("contacts")
    assert checkpoint is not None
    latest = dict(seen)  # the last event per key
    assert latest == source_versions(sim)


class Crash(BaseException):
    """A process dying at an exact point (BaseException: nothing in the service catches it)."""


@pytest.mark.parametrize(
    ("crash_at_commit", "after_the_request"),
    [
        (2, False),  # a batch open, its events sent
        (2, True),  # the commit request went out, the process died before the answer
        (4, False),  # during the final transaction (the checkpoint's)
        (4, True),  # the final transaction committed, the process died right after
    ],
)
def test_crash_points_of_the_transactional_sink(
    crash_at_commit: int,
    after_the_request: bool,
    make_env: Callable[..., dict[str, str]],
    make_app: Callable[..., App],
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import producer.app as app_module

    env = make_env(RESOURCES="contacts", PAGE_SIZE="10", BATCH_PAGES="4", DELIVERY="exactly-once")
    real_factory = app_module.new_transactional_producer
    commits = Counter[str]()

    class CrashingLane:
        def __init__(self, lane: Any) -> None:
            self._lane = lane

        def __getattr__(self, name: str) -> Any:
            return getattr(self._lane, name)

        def __len__(self) -> int:
            return len(self._lane)

        def commit_transaction(self, *args: Any) -> None:
            commits["n"] += 1
            if commits["n"] == crash_at_commit and not after_the_request:
                raise Crash
            self._lane.commit_transaction(*args)
            if commits["n"] == crash_at_commit:
                raise Crash

    monkeypatch.setattr(
        app_module,
        "new_transactional_producer",
        lambda *a, **kw: CrashingLane(real_factory(*a, **kw)),
    )
    crashing = make_app(**env)
    with pytest.raises(Crash):
        crashing.service.sync_once("contacts")  # 15 pages: marks after 4, 8, 12; then final
    monkeypatch.setattr(app_module, "new_transactional_producer", real_factory)

    restarted = make_app(**env)  # its lanes abort what the dead one left open
    report = restarted.service.sync_once("contacts")
    assert report.outcome == "success", report.error
    seen = versions(env)
    assert len(seen) == len(set(seen))  # read_committed: nothing twice
    assert dict(seen) == source_versions(sim)  # nothing lost
