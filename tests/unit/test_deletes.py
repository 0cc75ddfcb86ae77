"""Deletes without a broker: the delete event, the index of deleted ids, webhook verification
and parsing, the receiver, reconciliation and the orchestrator's no-resurrection check."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer import schemas
from producer.config import ConfigError, load_settings
from producer.events import event_id_for
from producer.pipeline.deletes import DeleteIndex, build_delete_event, delete_event_id
from producer.reconcile import Reconciler
from producer.service import SyncService
from producer.sync.timestamps import Micros, format_instant, instant_micros
from producer.webhooks.delivery import (
    BadSignatureError,
    MalformedDeliveryError,
    Verifier,
    parse_delivery,
    sign,
)
from producer.webhooks.receiver import WebhookReceiver
from tests.support.fakes import FakeLiveness, FakeObserver, FakeSink, ListSource, page

SECRET = "whsec_" + "dW5pdC10ZXN0LXNlY3JldC1vbmUtMTIzNDU2Nzg="
NEW_SECRET = "whsec_" + "dW5pdC10ZXN0LXNlY3JldC10d28tODc2NTQzMjE="
T0 = instant_micros("2026-03-01T00:00:00Z")
CONTACT = {
    "id": "cnt_1",
    "object": "contact",
    "first_name": "Ada",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-02-01T00:00:00Z",
}

pytestmark = pytest.mark.unit


def write_avro(resource: str, event: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(json.loads(schemas.schema_str(resource)))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, event)
    buffer.seek(0)
    read: dict[str, Any] = fastavro.schemaless_reader(buffer, parsed, parsed)  # type: ignore[assignment]
    return read


# ---------------------------------------------------------------- the delete event


def test_a_delete_event_holds_the_last_state_in_before_and_null_after() -> None:
    event = build_delete_event(
        "contacts",
        CONTACT,
        deleted_at_us=T0,
        run_id="r",
        producer_id="p",
        api_version="v1",
        now_ms=1,
    )
    assert (event["op"], event["after"], event["updated_at_us"]) == ("d", None, T0)
    assert event["before"]["first_name"] == "Ada"
    assert event["updated_at"] == format_instant(T0)
    assert write_avro("contacts", event)["before"]["id"] == "cnt_1"
    assert event["event_id"] == delete_event_id("contacts", "cnt_1", T0)
    assert event["event_id"] != event_id_for("contacts", "cnt_1", format_instant(T0))


def test_a_delete_of_an_object_with_only_an_id_still_fits_the_schema() -> None:
    event = build_delete_event(
        "tags",
        {"id": "tag_1"},
        deleted_at_us=T0,
        run_id="r",
        producer_id="p",
        api_version=None,
        now_ms=1,
    )
    assert write_avro("tags", event)["before"]["id"] == "tag_1"


# ---------------------------------------------------------------- the index


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 10**6)), max_size=20),
    st.sampled_from(["a", "b"]),
    st.integers(0, 10**6),
)
def test_deleted_after_answers_for_the_latest_delete_of_the_id(
    deletes: list[tuple[str, int]], record_id: str, instant: int
) -> None:
    index = DeleteIndex(retention_us=10**12)
    for rid, at in deletes:
        index.note_deleted("contacts", rid, at, noted_at_us=0)
    latest = max((at for rid, at in deletes if rid == record_id), default=None)
    expected = latest is not None and latest >= instant
    assert index.deleted_after("contacts", record_id, instant) is expected
    assert not index.deleted_after("tags", record_id, instant)  # per resource


def test_entries_expire_after_the_retention() -> None:
    index = DeleteIndex(retention_us=100)
    index.note_deleted("contacts", "old", 5, noted_at_us=0)
    index.note_deleted("contacts", "new", 5, noted_at_us=150)
    index.note_delivery("msg_old", 0)
    assert index.expire(now_us=200) == 2
    assert index.deleted_at("contacts", "old") is None
    assert index.deleted_at("contacts", "new") == 5
    assert not index.seen_delivery("msg_old")


# ---------------------------------------------------------------- verification and parsing


def envelope(event_type: str = "v1.contact.deleted", obj: Any = None, **extra: Any) -> bytes:
    body = {
        "id": "evt_1",
        "type": event_type,
        "api_version": "v1",
        "created_at": "2026-03-01T00:00:00.000Z",
        "workspace_id": "wrks_1",
        "data": {"object": CONTACT if obj is None else obj, "previous_attributes": {}},
        **extra,
    }
    return json.dumps(body).encode()


def test_either_secret_verifies_during_a_rotation_and_others_do_not() -> None:
    body = envelope()
    verifier = Verifier([SECRET, NEW_SECRET])
    for secret in (SECRET, NEW_SECRET):
        assert verifier.verify(body, sign(secret, "msg_1", time.time(), body)) == "msg_1"
    with pytest.raises(BadSignatureError):
        Verifier([SECRET]).verify(body, sign(NEW_SECRET, "msg_1", time.time(), body))
    with pytest.raises(BadSignatureError, match="too old"):
        verifier.verify(body, sign(SECRET, "msg_1", time.time() - 600, body))
    with pytest.raises(BadSignatureError, match="missing header"):
        verifier.verify(body, {})
    tampered = body.replace(b"Ada", b"Eve")
    with pytest.raises(BadSignatureError):
        verifier.verify(tampered, sign(SECRET, "msg_1", time.time(), body))


def test_an_envelope_names_resource_action_and_instant() -> None:
    delivery = parse_delivery("msg_1", envelope())
    assert (delivery.resource, delivery.action, delivery.created_at_us) == (
        "contacts",
        "deleted",
        T0,
    )
    ignored = parse_delivery("msg_2", envelope("v1.engagement.transcript_timeline.completed"))
    assert ignored.resource is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"type": "v1.contact.deleted"}).encode(),
        envelope(obj={"first_name": "no id"}),
        envelope(created_at="yesterday"),
    ],
)
def test_a_malformed_envelope_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedDeliveryError):
        parse_delivery("msg_1", body)


# ---------------------------------------------------------------- the receiver


class MemoryDeletes:
    def __init__(self) -> None:
        self.index = DeleteIndex(retention_us=10**12)
        self.written: list[tuple[str, str, int, str]] = []

    def holding(self, resource: str) -> AbstractContextManager[None]:
        return self.index.holding(resource)

    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool:
        return self.index.deleted_after(resource, record_id, instant_us)

    def seen_delivery(self, delivery_id: str) -> bool:
        return self.index.seen_delivery(delivery_id)

    def record_delivery(self, delivery_id: str) -> None:
        self.index.note_delivery(delivery_id, 0)

    def record_delete(self, resource: str, record_id: str, deleted_at_us: Micros, via: str) -> None:
        self.index.note_deleted(resource, record_id, deleted_at_us, 0)
        self.written.append((resource, record_id, deleted_at_us, via))


class Outcomes:
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.deletes: list[tuple[str, str]] = []
        self.reconciles: list[tuple[str, str, int]] = []

    def webhook_delivery(self, outcome: str) -> None:
        self.outcomes.append(outcome)

    def delete_published(self, resource: str, source: str) -> None:
        self.deletes.append((resource, source))

    def reconciled(self, resource: str, outcome: str, requests: int, seconds: float) -> None:
        self.reconciles.append((resource, outcome, requests))

    def add_suppressed(self, resource: str, n: int = 1) -> None:
        self.outcomes.append("writer:suppressed")

    def add_dead_lettered(self, resource: str, reason: str, n: int = 1) -> None:
        self.outcomes.append(f"writer:dead_lettered:{reason}")

    def checkpoint_committed(self, resource: str, watermark: object) -> None:
        raise AssertionError("a webhook or a reconciliation never commits a checkpoint")

    def complete_up_to(self, resource: str, instant: object) -> None:
        raise AssertionError("a webhook or a reconciliation never commits a checkpoint")


def receiver(
    *, realtime: bool = False
) -> tuple[WebhookReceiver, FakeSink, MemoryDeletes, Outcomes]:
    sink, deletes, observer = FakeSink(), MemoryDeletes(), Outcomes()
    hook = WebhookReceiver(
        verifier=Verifier([SECRET]),
        sink=sink,
        deletes=deletes,
        observer=observer,
        producer_id="p",
        resources=["contacts", "users"],
        topic_for=lambda r: f"t.{r}",
        realtime=realtime,
    )
    return hook, sink, deletes, observer


def deliver(hook: WebhookReceiver, body: bytes, delivery_id: str) -> tuple[int, str]:
    answer = hook.handle(body, sign(SECRET, delivery_id, time.time(), body))
    return answer.status, answer.outcome


def test_a_delete_delivery_publishes_d_then_a_tombstone_once() -> None:
    hook, sink, deletes, observer = receiver()
    body = envelope()
    assert deliver(hook, body, "msg_1") == (200, "published")
    [event] = sink.published
    assert (event.key, event.value["op"], event.value["after"]) == ("cnt_1", "d", None)
    assert sink.tombstones == ["cnt_1"]
    assert deletes.written == [("contacts", "cnt_1", T0, "webhook")]
    assert deliver(hook, body, "msg_1") == (200, "duplicate")
    assert len(sink.published) == 1
    assert observer.outcomes == ["published", "duplicate"]
    assert observer.deletes == [("contacts", "webhook")]


def test_bad_signatures_and_malformed_bodies_publish_nothing() -> None:
    hook, sink, _, observer = receiver()
    body = envelope()
    forged = hook.handle(body, sign(NEW_SECRET, "msg_1", time.time(), body))
    assert (forged.status, forged.outcome) == (401, "bad_signature")
    assert deliver(hook, b'{"type": 1}', "msg_2") == (400, "malformed")
    assert sink.published == []
    assert observer.outcomes == ["bad_signature", "malformed"]


def test_changes_are_ignored_unless_realtime_and_older_versions_are_suppressed() -> None:
    hook, sink, _, _ = receiver()
    assert deliver(hook, envelope("v1.contact.updated"), "msg_1") == (200, "ignored")
    assert deliver(hook, envelope("v1.company.deleted"), "msg_2") == (200, "ignored")  # not synced
    hook, sink, _, _ = receiver(realtime=True)
    assert deliver(hook, envelope("v1.contact.updated"), "msg_3") == (200, "published")
    [event] = sink.published
    assert event.value["event_id"] == event_id_for("contacts", "cnt_1", CONTACT["updated_at"])
    assert deliver(hook, envelope(), "msg_4") == (200, "published")  # deleted at T0
    assert deliver(hook, envelope("v1.contact.updated"), "msg_5") == (200, "suppressed")


def test_a_kafka_failure_is_a_503_and_the_delivery_is_not_marked_handled() -> None:
    hook, sink, deletes, _observer = receiver()
    sink.dead_letters_fail = True
    sink.too_large.add("cnt_1")  # the d event is refused, its dead letter is not acknowledged
    assert deliver(hook, envelope(), "msg_1") == (503, "error")
    assert not deletes.seen_delivery("msg_1")


# ---------------------------------------------------------------- reconciliation


def reconciler(
    listed: list[str], on_topic: list[tuple[str, bytes | None]], lock: threading.Lock
) -> tuple[Reconciler, FakeSink, MemoryDeletes]:
    sink, deletes = FakeSink(), MemoryDeletes()
    records = [{"id": i, "updated_at": "2026-02-01T00:00:00Z"} for i in listed]
    source = ListSource([page(records[:2], has_more=True, next_cursor="c"), page(records[2:])])

    def scan(topic: str) -> Iterator[tuple[str, bytes | None]]:
        assert topic == "t.users"
        yield from on_topic

    def decode(topic: str, value: bytes) -> dict[str, Any]:
        return dict(json.loads(value))

    return (
        Reconciler(
            source_for=lambda _r: source,
            scan=scan,
            decode=decode,
            sink=sink,
            deletes=deletes,
            observer=Outcomes(),
            run_lock=lambda _r: lock,
            topic_for=lambda r: f"t.{r}",
            producer_id="p",
            clock=lambda: T0 / 1_000_000,
        ),
        sink,
        deletes,
    )


def version(record_id: str, updated_at: str = "2026-02-01T00:00:00Z") -> bytes:
    return json.dumps(
        {"updated_at": updated_at, "after": {"id": record_id, "updated_at": updated_at}}
    ).encode()


def test_reconciliation_deletes_live_keys_the_api_no_longer_lists() -> None:
    on_topic = [
        ("u1", version("u1")),
        ("u2", version("u2")),
        ("u3", version("u3")),
        ("u4", version("u4")),
        ("u4", None),  # already deleted: not again
        ("u5", version("u5", "2026-03-02T00:00:00Z")),  # newer than the listing: left alone
    ]
    hook, sink, deletes = reconciler(["u1", "u3"], on_topic, threading.Lock())
    report = hook.reconcile("users")
    assert report.outcome == "success", report.error
    assert (report.deleted, report.requests, report.listed) == (["u2"], 2, 2)
    [event] = sink.published
    assert (event.value["op"], event.value["before"]["id"]) == ("d", "u2")
    assert sink.tombstones == ["u2"]
    assert deletes.written == [("users", "u2", T0, "reconcile")]


def test_reconciliation_waits_for_no_incremental_run() -> None:
    lock = threading.Lock()
    hook, sink, _ = reconciler([], [("u1", version("u1"))], lock)
    with lock:
        assert hook.reconcile("users").outcome == "busy"
    assert sink.published == []


# ---------------------------------------------------------------- no resurrection


def test_a_polled_version_older_than_its_delete_is_not_published() -> None:
    records = [
        {"id": "c1", "updated_at": "2026-02-01T00:00:00Z"},
        {"id": "c2", "updated_at": "2026-02-01T00:00:01Z"},
        {"id": "c3", "updated_at": "2026-03-02T00:00:00Z"},  # re-created after the delete
    ]
    index = DeleteIndex(retention_us=10**12)
    index.note_deleted("contacts", "c1", T0, 0)
    index.note_deleted("contacts", "c3", T0, 0)
    sink, observer = FakeSink(), FakeObserver()
    svc = SyncService(
        resources=["contacts"],
        topic_for=lambda r: f"t.{r}",
        source_for=lambda _r: ListSource([page(records)]),
        sink=sink,
        checkpoints=sink,
        observer=observer,
        liveness=FakeLiveness(),
        producer_id="p",
        clock=lambda: 1_900_000_000.0,
        deletes=index,
    )
    assert svc.sync_once("contacts").outcome == "success"
    assert [e.key for e in sink.published] == ["c2", "c3"]
    assert observer.counts["suppressed"] == 1


# ---------------------------------------------------------------- settings


def test_webhook_and_reconcile_settings() -> None:
    settings = load_settings(
        {
            "WEBHOOK_PORT": "8090",
            "ASKELEPHANT_WEBHOOK_SECRET": f"{SECRET}, {NEW_SECRET}",
            "RECONCILE_INTERVAL_SECONDS": "0,users=3600",
            "TOPIC_PREFIX": "x.",
        }
    )
    assert [s.get_secret_value() for s in settings.webhook_secrets] == [SECRET, NEW_SECRET]
    assert SECRET not in repr(settings.webhook_secrets)
    assert settings.reconcile_interval.for_resource("users") == 3600
    assert settings.reconcile_interval.for_resource("contacts") == 0
    assert (settings.deletes_topic, settings.deletes_enabled) == ("x.deletes", True)
    assert not load_settings({}).deletes_enabled
    with pytest.raises(ConfigError, match="ASKELEPHANT_WEBHOOK_SECRET"):
        load_settings({"WEBHOOK_PORT": "8090"})
    with pytest.raises(ConfigError, match="whsec_"):
        load_settings({"WEBHOOK_PORT": "8090", "ASKELEPHANT_WEBHOOK_SECRET": "plain"})
    with pytest.raises(ConfigError, match="RECONCILE_INTERVAL_SECONDS"):
        load_settings({"RECONCILE_INTERVAL_SECONDS": "0,nobody=5"})


def test_the_kafka_sink_sends_the_delete_then_a_tombstone_of_the_same_key() -> None:
    from tests.unit.test_kafka_sink import ScriptedProducer, make_sink

    producer = ScriptedProducer()
    sink, _, _ = make_sink(producer)
    run = sink.begin("contacts", "r")
    event = build_delete_event(
        "contacts",
        CONTACT,
        deleted_at_us=T0,
        run_id="r",
        producer_id="p",
        api_version=None,
        now_ms=1,
    )
    from producer.pipeline.build import OutgoingEvent
    from producer.pipeline.dead_letters import Origin

    assert run.delete(OutgoingEvent("cnt_1", event, "x", Origin(None, 0, 0, [b"{}"]))) is None
    run.commit(None, based_on=None)
    [(t1, k1, v1), (t2, k2, v2)] = producer.delivered
    assert (t1, k1, t2, k2, v2) == ("t.contacts", b"cnt_1", "t.contacts", b"cnt_1", None)
    assert v1 is not None
    assert run.unacknowledged == 0


def test_a_slim_delete_keeps_only_the_id_and_still_fits_the_schema() -> None:
    from producer.pipeline.build import OutgoingEvent
    from producer.pipeline.dead_letters import Origin
    from producer.pipeline.deletes import slim_delete

    event = build_delete_event(
        "contacts",
        {**CONTACT, "surprise": "x" * 100},
        deleted_at_us=T0,
        run_id="r",
        producer_id="p",
        api_version=None,
        now_ms=1,
    )
    slim = slim_delete(OutgoingEvent("cnt_1", event, "x", Origin(None, 0, 0, [b"{}"]))).value
    assert slim["before"]["id"] == "cnt_1"
    assert slim["before"]["first_name"] is None
    assert slim["unknown_fields"] is None
    assert (slim["op"], slim["event_id"]) == ("d", event["event_id"])
    assert write_avro("contacts", slim)["before"]["id"] == "cnt_1"
