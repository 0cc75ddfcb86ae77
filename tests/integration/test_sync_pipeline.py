"""The producer end to end on the real broker and registry, against the API simulator."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from askelephant_simulator.server import Simulator
from producer.app import App, StartupError, open_checkpoint_store
from producer.config import load_settings
from producer.kafka.admin import TopicSpec, ensure_topics, topic_config
from producer.kafka.reader import scan_to_end
from producer.schemas import RESOURCES
from producer.sync.slices import WINDOWS_PER_SLICE
from producer.sync.timestamps import instant_micros
from tests.integration.conftest import events_on, latest_on
from tests.support.processes import cli


def source_state(sim: Simulator, resource: str) -> dict[str, str]:
    return {r["id"]: r["updated_at"] for r in sim.dataset.records(resource)}


def kafka_state(app: App, resource: str) -> dict[str, str]:
    return {k: v["updated_at"] for k, v in latest_on(app.settings, resource).items()}


SLICES = pytest.mark.parametrize("slices", ["1", "3"], ids=["one-traversal", "sliced"])
"""The core correctness tests run with BACKFILL_SLICES off and on."""


@SLICES
def test_bulk_export_then_incremental_sync(
    make_app: Callable[..., App], sim: Simulator, slices: str
) -> None:
    app = make_app(BACKFILL_SLICES=slices)
    for resource in RESOURCES:
        report = app.service.sync_once(resource)
        assert report.outcome == "success", report.error
        assert report.snapshot
        assert report.published == sim.dataset.count(resource) == 150
        assert report.stats.fetched == 150
        if slices == "1":
            assert report.stats.pages == 2  # limit=100 and 150 records
        checkpoint = app.store.get(resource)
        assert checkpoint is not None
        newest = max(instant_micros(r["updated_at"]) for r in sim.dataset.records(resource))
        assert checkpoint.instant == newest
    events = events_on(app.settings, "contacts")
    assert {e.value["op"] for e in events} == {"r"}
    assert all(e.key == e.value["id"] == e.value["after"]["id"] for e in events)

    changed = sim.dataset.mutate("contacts", 7)
    tied = sim.dataset.mutate("contacts", 4, same_timestamp=True)
    created = sim.dataset.create("contacts", 3)
    report = app.service.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert not report.snapshot
    assert report.published == len(set(changed) | set(tied)) + len(created)
    incremental = events_on(app.settings, "contacts")[150:]
    assert {e.value["op"] for e in incremental} <= {"u", "c"}
    assert {e.value["id"] for e in incremental if e.value["op"] == "c"} == set(created)
    assert kafka_state(app, "contacts") == source_state(sim, "contacts")


def test_boundary_replay_with_nothing_changed_publishes_nothing(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app(SETTLE_SECONDS="1")  # the smallest window: the sleeps below pass it
    sim.dataset.mutate("tags", 6, same_timestamp=True)  # the newest instant is a 6-way tie
    assert app.service.sync_once("tags").outcome == "success"
    first = app.store.get("tags")
    assert first is not None
    # at the boundary instant, or just past a checkpoint capped at the run's start (Date header)
    assert len(first.boundary_ids) + len(first.ahead) == 6
    # Once the API's clock is past the tie by more than the cap's margin (Date has whole
    # seconds), a replay reaches the tie itself; from then on a quiet replay changes nothing.
    time.sleep(2.2)
    settled = app.service.sync_once("tags")
    assert (settled.outcome, settled.published) == ("success", 0)
    before = app.store.get("tags")
    assert before is not None
    assert len(before.boundary_ids) == 6
    report = app.service.sync_once("tags")
    assert report.outcome == "success"
    assert report.published == 0
    assert report.stats.fetched == 6  # gte replays the boundary ...
    assert report.stats.boundary_skipped == 6  # ... and dedup drops exactly it
    assert app.store.get("tags") == before
    assert len(events_on(app.settings, "tags")) == 150


@SLICES
def test_updates_during_the_traversal_are_not_lost(
    make_app: Callable[..., App], sim: Simulator, slices: str
) -> None:
    app = make_app(PAGE_SIZE="20", BACKFILL_SLICES=slices)
    assert app.service.sync_once("users").outcome == "success"
    sim.dataset.mutate("users", 30)
    # while the next run walks its pages, records move from unread pages to the end
    sim.schedule_mutation(after_requests=1, resource="users", count=10)
    sim.schedule_mutation(after_requests=2, resource="users", count=10, same_timestamp=True)
    assert app.service.sync_once("users").outcome == "success"
    assert app.service.sync_once("users").outcome == "success"  # quiet final run
    assert kafka_state(app, "users") == source_state(sim, "users")


def test_rate_limits_and_server_errors_are_retried(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app()
    sim.faults.rate_limit(2, retry_after=1, resource="companies")
    sim.faults.server_error(503, 1, resource="companies")
    started = time.monotonic()
    report = app.service.sync_once("companies")
    assert report.outcome == "success", report.error
    assert time.monotonic() - started >= 2.0  # Retry-After honoured twice
    assert report.published == 150


def test_a_client_error_fails_the_run_and_keeps_the_checkpoint(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app()
    assert app.service.sync_once("tags").outcome == "success"
    before = app.store.get("tags")
    bad = make_app(ASKELEPHANT_API_KEY="sk-apik_wrong.key", PRODUCER_ID=app.settings.producer_id)
    report = bad.service.sync_once("tags")
    assert report.outcome == "failure"
    assert report.error is not None
    assert "401" in report.error
    assert "wrong.key" not in report.error
    assert open_checkpoint_store(app.settings).get("tags") == before


def test_undelivered_events_never_move_the_checkpoint(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    # The change topic vanishes after start-up and may not be re-created: no event of the
    # run can be delivered (librdkafka gives up after its delivery timeout).
    app = make_app(
        KAFKA_DELIVERY_TIMEOUT_MS="4000",
        KAFKA_ALLOW_AUTO_CREATE_TOPICS="false",
        KAFKA_TOPIC_METADATA_PROPAGATION_MAX_MS="500",
    )
    admin = AdminClient(app.settings.kafka_config())
    topic = app.settings.topic_for("engagements")
    admin.delete_topics([topic])[topic].result()
    report = app.service.sync_once("engagements")
    assert report.outcome == "failure"
    assert report.error is not None
    assert "not acknowledged" in report.error
    assert report.published == 0
    assert app.store.get("engagements") is None
    assert open_checkpoint_store(app.settings).get("engagements") is None


@SLICES
def test_a_killed_process_leaves_the_checkpoint_and_the_next_run_loses_nothing(
    make_env: Callable[..., dict[str, str]],
    make_app: Callable[..., App],
    sim: Simulator,
    slices: str,
) -> None:
    env = make_env(PAGE_SIZE="10", BACKFILL_SLICES=slices)
    app = make_app(**{k: v for k, v in env.items() if k != "PAGE_SIZE"})
    assert app.service.sync_once("contacts").outcome == "success"
    committed = app.store.get("contacts")
    sim.dataset.mutate("contacts", 60)
    sim.faults.slow(300, resource="contacts")  # slow pages: the kill lands mid-run
    before = sim.stats()["by_resource"].get("contacts", {}).get("requests", 0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "sync", "--resource", "contacts"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while sim.stats()["by_resource"].get("contacts", {}).get("requests", 0) < before + 3:
        assert proc.poll() is None, "the sync finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sim.faults.clear()

    settings = load_settings(env)
    assert open_checkpoint_store(settings).get("contacts") == committed  # unchanged
    rerun = make_app(**env)
    report = rerun.service.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert kafka_state(rerun, "contacts") == source_state(sim, "contacts")


def test_checkpoint_topic_is_compacted_and_keyed_per_resource(
    make_app: Callable[..., App],
) -> None:
    app = make_app(RESOURCES="tags,users")
    for resource in ("tags", "users"):
        assert app.service.sync_once(resource).outcome == "success"
    admin = AdminClient(app.settings.kafka_config())
    assert topic_config(admin, app.settings.checkpoint_topic)["cleanup.policy"] == "compact"
    keys = [
        m.key() for m in scan_to_end(app.settings.kafka_config(), app.settings.checkpoint_topic)
    ]
    prefix = app.settings.producer_id
    assert sorted(k.decode() for k in keys if k) == [f"{prefix}/tags", f"{prefix}/users"]


def test_a_non_compacted_checkpoint_topic_is_refused(
    make_env: Callable[..., dict[str, str]],
) -> None:
    settings = load_settings(make_env())
    admin = AdminClient(settings.kafka_config())
    ensure_topics(admin, [TopicSpec(settings.checkpoint_topic, 1, 1, {"cleanup.policy": "delete"})])
    with pytest.raises(StartupError, match="compact"):
        open_checkpoint_store(settings)


def test_an_unreadable_checkpoint_is_an_error_not_a_restart(
    make_app: Callable[..., App],
) -> None:
    from producer.sync.checkpoint import CheckpointFormatError

    app = make_app()
    app.sink.producer.produce(
        app.settings.checkpoint_topic,
        key=f"{app.settings.producer_id}/contacts".encode(),
        value=b"{not json",
    )
    app.sink.producer.flush(10)
    with pytest.raises(CheckpointFormatError, match="unreadable"):
        open_checkpoint_store(app.settings).get("contacts")


def test_reset_writes_who_and_from_what(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    env = make_env()
    app = make_app(**env)
    assert app.service.sync_once("tags").outcome == "success"
    before = app.store.get("tags")
    assert before is not None
    result = cli(env, "reset", "--resource", "tags", "--to", "2020-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    after = open_checkpoint_store(load_settings(env)).get("tags")
    assert after is not None
    assert after.updated_at == "2020-01-01T00:00:00Z"
    assert after.reset_from == before.updated_at
    assert after.reset_by
    shown = cli(env, "checkpoints", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"reset_by"' in shown.stdout


def test_a_reset_during_a_run_wins_and_reaches_the_next_run(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    import threading

    env = make_env(PAGE_SIZE="10")
    app = make_app(**env)
    assert app.service.sync_once("contacts").outcome == "success"
    sim.dataset.mutate("contacts", 60)
    sim.faults.slow(300, resource="contacts")
    before = sim.stats()["by_resource"]["contacts"]["requests"]
    reports = []
    worker = threading.Thread(target=lambda: reports.append(app.service.sync_once("contacts")))
    worker.start()
    deadline = time.monotonic() + 30
    while sim.stats()["by_resource"]["contacts"]["requests"] < before + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    reset = cli(env, "reset", "--resource", "contacts", "--to", "2020-01-01T00:00:00Z")
    assert reset.returncode == 0, reset.stderr
    worker.join(timeout=60)
    sim.faults.clear()
    [report] = reports
    assert report.outcome == "failure"
    assert "changed while the run was going" in (report.error or "")
    stored = open_checkpoint_store(load_settings(env)).get("contacts")
    assert stored is not None
    assert (stored.updated_at, bool(stored.reset_by)) == ("2020-01-01T00:00:00Z", True)
    # the running producer's next run starts from the reset (read at the run's start)
    after = app.service.sync_once("contacts")
    assert after.outcome == "success", after.error
    assert after.checkpoint_before == "2020-01-01T00:00:00Z"
    assert after.published == sim.dataset.count("contacts")  # the replay the reset asked for


def test_heartbeats_say_up_to_when_each_resource_is_complete(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    import json

    from producer.sync.timestamps import parse_instant

    app = make_app(RESOURCES="tags", HEARTBEAT_TOPIC=f"{uuid.uuid4().hex[:8]}.heartbeats")
    started = time.time()
    assert app.service.sync_once("tags").outcome == "success"
    assert app.service.sync_once("tags").outcome == "success"  # a quiet run beats too
    topic = app.settings.heartbeat_topic
    assert topic is not None
    admin = AdminClient(app.settings.kafka_config())
    assert topic_config(admin, topic)["cleanup.policy"] == "compact"
    beats = [json.loads(m.value()) for m in scan_to_end(app.settings.kafka_config(), topic)]
    assert len(beats) == 2
    assert {b["resource"] for b in beats} == {"tags"}
    complete = [parse_instant(b["complete_up_to"]).timestamp() for b in beats]
    settle = app.settings.settle_seconds  # complete up to the run's start less the window
    assert started - settle - 3 < complete[0] <= complete[1] < time.time()


def test_sync_runs_resources_side_by_side(
    make_env: Callable[..., dict[str, str]], sim: Simulator
) -> None:
    # The API fails every request: each resource spends its whole retry budget (3 s). One
    # after another that is 5 x 3 s; side by side, about 3 s.
    env = make_env(MAX_RETRY_WAIT_SECONDS="3")
    sim.faults.server_error(503, count=None)
    started = time.monotonic()
    result = cli(env, "sync")
    took = time.monotonic() - started
    assert result.returncode == 1
    summary = result.stdout.splitlines()
    assert sum(" failure " in line for line in summary) == len(RESOURCES)
    assert took < 12, f"sync took {took:.1f}s: the resources did not run side by side"


def test_a_time_sliced_first_export_then_incremental_runs(
    make_app: Callable[..., App], sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.dataset.create("contacts", 150)
    time.sleep(2.1)  # the records predate the run by more than the cap's margin
    app = make_app(RESOURCES="contacts", PAGE_SIZE="10", BACKFILL_SLICES="4", SETTLE_SECONDS="1")
    before = sim.stats()["by_resource"].get("contacts", {}).get("requests", 0)
    with caplog.at_level(logging.INFO, logger="producer.service"):
        report = app.service.sync_once("contacts")
    assert report.outcome == "success", report.error
    assert report.snapshot
    assert report.published == 300
    planned = 4 * WINDOWS_PER_SLICE
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "sliced_export"]
    windows = int(getattr(line, "windows"))  # noqa: B009
    # the planned windows, and those split off for idle workers (as many as timing gives)
    assert windows >= planned
    requests = sim.stats()["by_resource"]["contacts"]["requests"] - before
    assert requests >= 1 + windows  # the probe, then each window's own traversal
    events = events_on(app.settings, "contacts")
    assert len({e.key for e in events}) == len(events) == 300  # every record once
    assert {e.value["op"] for e in events} == {"r"}
    checkpoint = app.store.get("contacts")
    assert checkpoint is not None
    newest = max(instant_micros(r["updated_at"]) for r in sim.dataset.records("contacts"))
    assert checkpoint.instant == newest
    sim.dataset.mutate("contacts", 20)
    again = app.service.sync_once("contacts")  # incremental: one traversal
    assert again.outcome == "success", again.error
    assert not again.snapshot
    assert kafka_state(app, "contacts") == source_state(sim, "contacts")
