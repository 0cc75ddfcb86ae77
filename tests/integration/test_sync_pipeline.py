"""The producer end to end on the real broker and registry, against the API simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from producer.app import App, open_checkpoint_store
from producer.config import load_settings
from producer.kafka.admin import TopicConfigError, TopicSpec, ensure_topics, topic_config
from producer.kafka.reader import scan_to_end
from producer.schemas import RESOURCES
from producer.simulator.server import Simulator
from producer.sync.timestamps import instant_micros
from tests.integration.conftest import events_on, latest_on


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m producer ARGS` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def source_state(sim: Simulator, resource: str) -> dict[str, str]:
    return {r["id"]: r["updated_at"] for r in sim.dataset.records(resource)}


def kafka_state(app: App, resource: str) -> dict[str, str]:
    return {k: v["updated_at"] for k, v in latest_on(app.settings, resource).items()}


def test_bulk_export_then_incremental_sync(make_app: Callable[..., App], sim: Simulator) -> None:
    app = make_app()
    for resource in RESOURCES:
        report = app.service.sync_once(resource)
        assert report.outcome == "success", report.error
        assert report.snapshot
        assert report.published == sim.dataset.count(resource) == 150
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
    app = make_app()
    sim.dataset.mutate("tags", 6, same_timestamp=True)  # the newest instant is a 6-way tie
    assert app.service.sync_once("tags").outcome == "success"
    before = app.store.get("tags")
    assert before is not None
    # at the boundary instant, or just past a checkpoint capped at the run's start (Date header)
    assert len(before.boundary_ids) + len(before.ahead) == 6
    report = app.service.sync_once("tags")
    assert report.outcome == "success"
    assert report.published == 0
    assert report.stats.fetched == 6  # gte replays the boundary ...
    assert report.stats.boundary_skipped == 6  # ... and dedup drops exactly it
    assert app.store.get("tags") == before
    assert len(events_on(app.settings, "tags")) == 150


def test_updates_during_the_traversal_are_not_lost(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app(PAGE_SIZE="20")
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
    app = make_app()
    admin = AdminClient(app.settings.kafka_config())
    # Events are far larger than this topic accepts: the broker rejects every one.
    topic = app.settings.topic_for("engagements")
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "200", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result()
    report = app.service.sync_once("engagements")
    assert report.outcome == "failure"
    assert report.error is not None
    assert "not acknowledged" in report.error
    assert app.store.get("engagements") is None
    assert open_checkpoint_store(app.settings).get("engagements") is None


def test_a_killed_process_leaves_the_checkpoint_and_the_next_run_loses_nothing(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    env = make_env(PAGE_SIZE="10")
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
    with pytest.raises(TopicConfigError, match="compact"):
        open_checkpoint_store(settings)


def test_an_unreadable_checkpoint_is_an_error_not_a_restart(
    make_app: Callable[..., App],
) -> None:
    from producer.sync.checkpoint import CheckpointFormatError

    app = make_app()
    app.publisher.producer.produce(
        app.settings.checkpoint_topic,
        key=f"{app.settings.producer_id}/contacts".encode(),
        value=b"{not json",
    )
    app.publisher.producer.flush(10)
    with pytest.raises(CheckpointFormatError, match="unreadable"):
        open_checkpoint_store(app.settings)


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
