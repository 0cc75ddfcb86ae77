"""The Kafka sink adapter against a scripted producer and a `mock://` registry (unit only)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
    MockSchemaRegistryClient,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from producer import schemas
from producer.kafka import publisher
from producer.kafka.publisher import DeliveryError, DeliveryInterruptedError, TopicTarget
from producer.kafka.sink import KafkaSink
from producer.pipeline.build import EventBuilder, OutgoingEvent, RunContext
from producer.pipeline.dead_letters import TOO_LARGE, DeadLetter, Origin
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress
from producer.sync.run import Version
from producer.sync.timestamps import instant_micros


class MockRegistry(MockSchemaRegistryClient):  # type: ignore[misc]
    """The mock's lookup compares schema objects field by field; the subject's latest is it."""

    def lookup_schema(self, subject_name: str, schema: Schema, *_: Any, **__: Any) -> Any:
        latest: RegisteredSchema = self.get_latest_version(subject_name)
        return latest


@dataclass
class FakeMessage:
    _topic: str
    _key: bytes | None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def key(self) -> bytes | None:
        return self._key


@dataclass
class ScriptedProducer:
    """Delivers on poll(); topics in `held` are never answered, `errors` fail them."""

    held: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)
    queue: list[tuple[str, bytes | None, Callable[..., None]]] = field(default_factory=list)
    delivered: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)

    def produce(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Any = None,
        on_delivery: Callable[..., None] | None = None,
    ) -> None:
        assert on_delivery is not None
        self.queue.append((topic, key, on_delivery))
        self.delivered.append((topic, key, value))

    def poll(self, _timeout: float = 0) -> int:
        waiting = [m for m in self.queue if m[0] in self.held]
        for topic, key, callback in [m for m in self.queue if m[0] not in self.held]:
            code = self.errors.get(topic)
            callback(None if code is None else KafkaError(code), FakeMessage(topic, key))
        self.queue = waiting
        return 0

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)


@dataclass
class Store:
    commits: list[Checkpoint] = field(default_factory=list)
    marks: dict[str, Progress] = field(default_factory=dict)
    topic: str = "t.checkpoints"
    sweeps: int = 0

    def commit(self, checkpoint: Checkpoint, *, based_on: Checkpoint | None) -> None:
        self.commits.append(checkpoint)

    def check_unchanged(self, resource: str, based_on: Checkpoint | None) -> None:
        return None

    def records_for(
        self, checkpoint: Checkpoint, based_on: Checkpoint | None = None
    ) -> tuple[list[tuple[bytes, bytes | None]], Checkpoint]:
        return [(checkpoint.resource.encode(), checkpoint.to_json())], checkpoint

    def progress_records(self, progress: Progress) -> list[tuple[bytes, bytes | None]]:
        return [(self.progress_key(progress.resource), progress.to_json())]

    def progress_key(self, resource: str) -> bytes:
        return f"{resource}/progress".encode()

    def sweep_chunks(self) -> int:
        self.sweeps += 1
        return 0

    def progress(self, resource: str) -> Progress | None:
        return self.marks.get(resource)

    def write_progress(self, progress: Progress) -> None:
        self.marks[progress.resource] = progress

    def clear_progress(self, resource: str) -> None:
        self.marks.pop(resource, None)

    def remember(self, checkpoint: Checkpoint) -> None:
        self.commits.append(checkpoint)

    def remember_progress(self, resource: str, progress: Progress | None) -> None:
        self.clear_progress(resource) if progress is None else self.write_progress(progress)


@dataclass
class Observer:
    published: int = 0
    errors: int = 0

    def add_published(self, resource: str, n: int = 1) -> None:
        self.published += n

    def add_delivery_errors(self, resource: str, n: int = 1) -> None:
        self.errors += n


def make_sink(
    producer: ScriptedProducer, *, limit: int = 1_000_000, stop: threading.Event | None = None
) -> tuple[KafkaSink, Store, Observer]:
    store, observer = Store(), Observer()
    sink = KafkaSink(
        producer,  # type: ignore[arg-type]
        MockRegistry({"url": "mock://sink-tests"}),
        targets={r: TopicTarget(f"t.{r}", limit) for r in ("contacts", "tags")},
        schemas={r: schemas.schema_str(r) for r in ("contacts", "tags")},
        dead_letter=TopicTarget("t.dlq", 16_000_000),
        checkpoints=store,
        observer=observer,
        producer_id="p",
        stop=stop,
    )
    sink.register_schemas()
    return sink, store, observer


def event(resource: str, record_id: str, **extra: Any) -> OutgoingEvent:
    record = {"id": record_id, "updated_at": "2026-03-01T00:00:00Z", **extra}
    version = Version(record, record_id, record["updated_at"], instant_micros(record["updated_at"]))
    origin = Origin("req", 1, 0, [b"{}"])
    built = EventBuilder(resource, "p").build(version, origin, RunContext("run", False, None, 0))
    assert isinstance(built, OutgoingEvent)
    return built


def test_a_commit_waits_for_its_own_events_only() -> None:
    producer = ScriptedProducer(held={"t.tags"})
    sink, store, observer = make_sink(producer)
    tags, contacts = sink.begin("tags", "r1"), sink.begin("contacts", "r2")
    assert tags.publish(event("tags", "t1")) is None
    assert contacts.publish(event("contacts", "c1")) is None
    checkpoint = Checkpoint("contacts", "2026-03-01T00:00:00Z")
    contacts.commit(checkpoint, based_on=None)  # tags' event is still in flight
    assert store.commits == [checkpoint]
    assert (contacts.acked, tags.acked, observer.published) == (1, 0, 1)


def test_an_event_over_the_topic_limit_is_not_sent() -> None:
    producer = ScriptedProducer()
    sink, _, _ = make_sink(producer, limit=2_000)
    run = sink.begin("contacts", "r")
    rejection = run.publish(event("contacts", "c1", first_name="x" * 5_000))
    assert rejection is not None
    assert rejection.reason == TOO_LARGE
    assert int(rejection.detail["size"]) > 5_000
    assert rejection.detail["limit"] == "2000"
    assert producer.delivered == []


def test_an_event_the_broker_refuses_as_too_large_comes_back_from_drain() -> None:
    producer = ScriptedProducer(errors={"t.contacts": KafkaError.MSG_SIZE_TOO_LARGE})
    sink, _, observer = make_sink(producer)
    run = sink.begin("contacts", "r")
    sent = event("contacts", "c1")
    assert run.publish(sent) is None
    [refusal] = run.drain()
    assert (refusal.key, refusal.updated_at, refusal.origin) == (
        sent.key,
        sent.updated_at,
        sent.origin,
    )
    assert refusal.rejection.reason == TOO_LARGE
    assert observer.errors == 0
    run.commit(None, based_on=None)  # the refusal was handed back: nothing left in flight


def test_any_other_delivery_error_fails_the_drain() -> None:
    producer = ScriptedProducer(errors={"t.dlq": KafkaError.TOPIC_AUTHORIZATION_FAILED})
    sink, store, observer = make_sink(producer)
    run = sink.begin("contacts", "r")
    run.dead_letter(DeadLetter("contacts", "missing_id", "no id", b"{}", "r", "p", "t.contacts"))
    with pytest.raises(DeliveryError, match="not acknowledged"):
        run.commit(Checkpoint("contacts", "2026-03-01T00:00:00Z"), based_on=None)
    assert store.commits == []
    assert observer.errors == 1


def test_a_stalled_broker_is_a_warning_while_it_lasts_and_a_stop_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(publisher, "STALL_WARNING_S", 0.2)
    stop = threading.Event()
    producer = ScriptedProducer(held={"t.contacts"})
    sink, _, _ = make_sink(producer, stop=stop)
    run = sink.begin("contacts", "r")
    run.publish(event("contacts", "c1"))
    threading.Timer(0.7, stop.set).start()
    with (
        caplog.at_level(logging.WARNING, logger="producer.kafka.publisher"),
        pytest.raises(DeliveryInterruptedError),
    ):
        run.drain()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) >= 2
    assert "has not acknowledged 1 message(s) of contacts" in warnings[0]


def test_payloads_are_the_confluent_serializers_bytes() -> None:
    """The compiled encoder and its framing against AvroSerializer itself; a value it does not
    vouch for (a datetime where the schema has a timestamp) goes to the serializer."""
    sink, _, _ = make_sink(ScriptedProducer())
    serializer = AvroSerializer(
        sink.registry, schemas.schema_str("contacts"), conf={"auto.register.schemas": False}
    )
    context = SerializationContext("t.contacts", MessageField.VALUE)
    value = dict(event("contacts", "c1", first_name="Ada", emails=["a@x"]).value)
    assert sink.serialize("contacts", value) == serializer(value, context)
    value["ts_ms"] = datetime(2026, 3, 1, tzinfo=UTC)
    assert sink.serialize("contacts", value) == serializer(value, context)
