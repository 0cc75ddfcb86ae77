"""Never stuck: bad records go to the dead-letter topic on the real broker, the run goes on."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from askelephant_simulator.dataset import REMOVE
from askelephant_simulator.server import Simulator
from producer.app import App, open_checkpoint_store
from producer.kafka.reader import scan_to_end
from producer.pipeline.dead_letters import TOO_LARGE, DeadLetter
from producer.sync.progress import Progress
from producer.sync.run import INVALID_UPDATED_AT, MISSING_ID, MISSING_UPDATED_AT
from producer.sync.timestamps import instant_micros
from tests.integration.conftest import events_on
from tests.support.processes import cli

THREE_MB = "x" * 3_000_000

BAD_RECORDS: dict[str, tuple[dict[str, Any], str]] = {
    "contacts": ({"id": REMOVE}, MISSING_ID),
    "companies": ({"updated_at": REMOVE}, MISSING_UPDATED_AT),
    "users": ({"updated_at": "last tuesday"}, INVALID_UPDATED_AT),
    "engagements": ({"description": THREE_MB}, TOO_LARGE),
}


def dead_letters(app: App) -> list[DeadLetter]:
    topic = app.settings.dead_letter_topic
    return [
        DeadLetter.from_message(m.value(), m.headers())
        for m in scan_to_end(app.settings.kafka_config(), topic)
    ]


def dead_lettered_metric(app: App, resource: str, reason: str) -> float | None:
    return app.metrics.registry.get_sample_value(
        "askelephant_producer_records_dead_lettered_total",
        {"resource": resource, "reason": reason},
    )


def place_bad_record_between_good_updates(sim: Simulator, resource: str) -> tuple[str, set[str]]:
    """150 good updates, one damaged record, 150 good new records (in the API's order);
    returns the damaged record's id and the good versions (id|updated_at) Kafka must get."""
    originals = sim.dataset.ids(resource)
    sim.dataset.update(resource, originals)
    [bad] = sim.dataset.create(resource, 1)
    patch, _ = BAD_RECORDS[resource]
    sim.dataset.corrupt(resource, bad, patch)
    created = sim.dataset.create(resource, 150)
    served = [sim.dataset.get(resource, i) for i in [*originals, *created]]
    versions = {f"{r['id']}|{r['updated_at']}" for r in served if r is not None}
    assert len(versions) == 300
    return bad, versions


@pytest.mark.parametrize("resource", sorted(BAD_RECORDS))
def test_a_bad_record_between_good_updates_is_dead_lettered_and_the_run_goes_on(
    resource: str,
    make_app: Callable[..., App],
    sim: Simulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(RESOURCES=resource)
    assert app.service.sync_once(resource).outcome == "success"  # the bulk export
    before = app.store.get(resource)
    bad, good_versions = place_bad_record_between_good_updates(sim, resource)
    _, reason = BAD_RECORDS[resource]

    with caplog.at_level(logging.WARNING, logger="producer.service"):
        report = app.service.sync_once(resource)
    assert report.outcome == "success", report.error
    assert report.published == 300
    assert report.dead_lettered == 1

    published = {
        f"{e.value['id']}|{e.value['updated_at']}" for e in events_on(app.settings, resource)[150:]
    }
    assert published == good_versions  # all 300 good versions, before and after the bad one

    [letter] = dead_letters(app)
    served = sim.dataset.get(resource, bad)
    assert served is not None
    assert json.loads(letter.value) == served  # the record as the API sent it
    assert letter.resource == resource
    assert letter.reason == reason
    assert letter.message
    assert letter.run_id == report.run_id
    assert letter.producer_id == app.settings.producer_id
    assert letter.topic == app.settings.topic_for(resource)
    assert letter.request_id  # the simulator sends X-Request-Id
    assert letter.page >= 2
    expected_key = None if resource == "contacts" else bad
    assert letter.record_id == expected_key
    if reason == TOO_LARGE:
        assert int(letter.detail["size"]) > 3_000_000
        assert int(letter.detail["limit"]) == app.settings.max_message_bytes_for(resource)

    checkpoint = open_checkpoint_store(app.settings).get(resource)
    assert checkpoint is not None
    assert checkpoint != before
    # moved past the bad record: to the newest version, or to the run's start (the cap) with
    # the newer versions and the rejected record remembered for the replay
    newest = max(instant_micros(v.split("|")[1]) for v in good_versions)
    newest_id = max(good_versions, key=lambda v: instant_micros(v.split("|")[1])).split("|")[0]
    assert checkpoint.instant == newest or (newest_id, newest) in checkpoint.ahead
    # a too-large record has an (id, updated_at) to be recognised by; the others a fingerprint
    assert len(checkpoint.rejected) == (0 if reason == TOO_LARGE else 1)

    assert dead_lettered_metric(app, resource, reason) == 1
    lines = [r for r in caplog.records if getattr(r, "event", None) == "dead_letter"]
    assert [(getattr(r, "reason", None), getattr(r, "record_id", None)) for r in lines] == [
        (reason, expected_key)
    ]

    again = app.service.sync_once(resource)
    assert again.outcome == "success", again.error
    assert (again.published, again.dead_lettered) == (0, 0)
    assert len(dead_letters(app)) == 1


@pytest.mark.parametrize("resource", ["contacts", "engagements"])
def test_policy_fail_stops_the_resource_and_keeps_the_checkpoint(
    resource: str, make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app(RESOURCES=resource, DEAD_LETTER_POLICY="fail")
    assert app.service.sync_once(resource).outcome == "success"
    before = app.store.get(resource)
    place_bad_record_between_good_updates(sim, resource)
    report = app.service.sync_once(resource)
    assert report.outcome == "failure"
    assert BAD_RECORDS[resource][1] in (report.error or "")
    assert "DEAD_LETTER_POLICY=fail" in (report.error or "")
    assert open_checkpoint_store(app.settings).get(resource) == before
    assert dead_letters(app) == []


def test_a_dead_letter_the_broker_refuses_fails_the_run_and_keeps_the_checkpoint(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app(RESOURCES="users")
    assert app.service.sync_once("users").outcome == "success"
    before = app.store.get("users")
    place_bad_record_between_good_updates(sim, "users")
    # The producer believes the dead-letter topic takes 16 MiB; the broker now takes 100 bytes.
    alter_topic(app, app.settings.dead_letter_topic, "max.message.bytes", "100")
    report = app.service.sync_once("users")
    assert report.outcome == "failure"
    assert "not acknowledged" in (report.error or "")
    assert "dead letter" in (report.error or "")
    assert open_checkpoint_store(app.settings).get("users") == before


def alter_topic(app: App, topic: str, name: str, value: str) -> None:
    admin = AdminClient(app.settings.kafka_config())
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([resource])[resource].result()


def test_redrive_publishes_what_now_fits_once_and_never_a_stale_version(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    env = make_env(RESOURCES="engagements")
    app = make_app(**env)
    assert app.service.sync_once("engagements").outcome == "success"
    fixed, stale = sim.dataset.ids("engagements")[:2]
    for record_id in (fixed, stale):
        sim.dataset.corrupt("engagements", record_id, {"description": THREE_MB})
    sim.dataset.update("engagements", [fixed, stale])
    report = app.service.sync_once("engagements")
    assert report.dead_lettered == 2, report.error
    # `stale` changes again (small now) and its newer version is published normally
    sim.dataset.repair("engagements", stale)
    sim.dataset.update("engagements", [stale])
    assert app.service.sync_once("engagements").published == 1

    listed = cli(env, "dead-letters", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["dead_letters"]
    assert rows == [{"resource": "engagements", "reason": TOO_LARGE, "count": 2}]

    # the operator's fix: the topic and the producer take 8 MiB engagements
    alter_topic(app, app.settings.topic_for("engagements"), "max.message.bytes", "8388608")
    fixed_env = {**env, "MAX_MESSAGE_BYTES": "2097152,engagements=8388608"}
    for _ in range(2):  # a second redrive publishes nothing new
        result = cli(fixed_env, "dead-letters", "redrive", "--resource", "engagements")
        assert result.returncode == 0, result.stderr
    events = events_on(app.settings, "engagements")
    fixed_events = [e.value for e in events if e.key == fixed]
    assert [len(e["after"]["description"] or "") for e in fixed_events] == [
        len(fixed_events[0]["after"]["description"] or ""),
        3_000_000,
    ]  # the bulk export's version, then the redriven one: once
    stale_sizes = [len(e.value["after"]["description"] or "") for e in events if e.key == stale]
    assert 3_000_000 not in stale_sizes  # the dead-lettered (older) version never appears
    assert events[-1].key == fixed  # nothing after it


def test_an_event_the_broker_refuses_as_too_large_is_dead_lettered_and_a_restart_knows_the_limit(
    make_env: Callable[..., dict[str, str]],
    make_app: Callable[..., App],
    sim: Simulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = make_env(RESOURCES="engagements")
    app = make_app(**env)
    assert app.service.sync_once("engagements").outcome == "success"
    [big] = sim.dataset.ids("engagements")[:1]
    # 200 kB that zstd cannot shrink below the broker's limit (the broker checks compressed)
    noise = base64.b64encode(os.urandom(150_000)).decode()
    sim.dataset.corrupt("engagements", big, {"description": noise})
    sim.dataset.update("engagements", [big])
    topic = app.settings.topic_for("engagements")
    # someone lowered the topic's limit behind the producer's back
    alter_topic(app, topic, "max.message.bytes", "100000")
    report = app.service.sync_once("engagements")
    assert report.outcome == "success", report.error
    [letter] = dead_letters(app)
    assert (letter.reason, letter.record_id) == (TOO_LARGE, big)
    assert letter.detail["limit"] == str(app.settings.max_message_bytes_for("engagements"))

    with caplog.at_level(logging.WARNING, logger="producer.app"):
        restarted = make_app(**env)
    assert any("max.message.bytes=100000" in r.getMessage() for r in caplog.records)
    sim.dataset.update("engagements", [big])
    again = restarted.service.sync_once("engagements")
    assert again.outcome == "success", again.error
    letters = dead_letters(app)
    assert [(x.reason, x.detail["limit"]) for x in letters[1:]] == [(TOO_LARGE, "100000")]


def test_redrive_beside_an_exactly_once_run_fences_nothing_and_keeps_its_progress(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App], sim: Simulator
) -> None:
    """Issue 17, failure 3: redrive used to open the lanes with the running `run`'s
    transactional ids (fencing it) and commit with no checkpoint (tombstoning its mark)."""
    env = make_env(RESOURCES="engagements", DELIVERY="exactly-once", BATCH_PAGES="1")
    app = make_app(**env)  # the running `run`: its lanes are open
    assert app.service.sync_once("engagements").outcome == "success"
    [big] = sim.dataset.ids("engagements")[:1]
    sim.dataset.corrupt("engagements", big, {"description": THREE_MB})
    sim.dataset.update("engagements", [big])
    assert app.service.sync_once("engagements").dead_lettered == 1
    store = app.sink.checkpoints
    mark = Progress(
        resource="engagements",
        mark=store.current("engagements"),
        snapshot=False,
        based_on=None,
        run_id="interrupted-run",
        pages=1,
        written_at="2026-01-01T00:00:00Z",
    )
    store.write_progress(mark)  # an interrupted run's progress the next run resumes from

    alter_topic(app, app.settings.topic_for("engagements"), "max.message.bytes", "8388608")
    fixed_env = {**env, "MAX_MESSAGE_BYTES": "2097152,engagements=8388608"}
    result = cli(fixed_env, "dead-letters", "redrive", "--resource", "engagements")
    assert result.returncode == 0, result.stderr

    reread = open_checkpoint_store(app.settings)
    assert reread.progress("engagements") is not None  # the mark survived the redrive
    sim.dataset.update("engagements", sim.dataset.ids("engagements")[1:3])
    after = app.service.sync_once("engagements")  # the lane is still this process's
    assert after.outcome == "success", after.error
    assert app.service.fenced is None
    redriven = [e for e in events_on(app.settings, "engagements") if e.key == big]
    assert len(redriven[-1].value["after"]["description"]) == 3_000_000
