"""Publishes change events: Avro values through the schema registry, string keys, tracked acks.

One idempotent producer (`enable.idempotence`, `acks=all`) serves every resource. Each run
gets a `DeliveryTracker`; the run may commit its checkpoint only when `wait` reports every
event of that run acknowledged, so no checkpoint moves past an event Kafka did not accept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

PRODUCER_REQUIRED = {"enable.idempotence": "true", "acks": "all"}
"""Not overridable: the checkpoint guarantee rests on them."""
PRODUCER_DEFAULTS = {
    "compression.type": "zstd",
    "linger.ms": "20",
    "batch.size": "262144",
    "delivery.timeout.ms": "120000",
}


def new_producer(kafka_config: Mapping[str, str | int | float | bool]) -> Producer:
    """The idempotent producer every write goes through (events and checkpoints)."""
    return Producer({**PRODUCER_DEFAULTS, **kafka_config, **PRODUCER_REQUIRED})


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge one or more events of a run."""


class DeliveryTracker:
    """Counts one run's events in flight; thread-safe (callbacks come from poll())."""

    def __init__(
        self,
        on_error: Callable[[KafkaError], None] | None = None,
        on_ack: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.errors: list[str] = []
        self._on_error = on_error
        self._on_ack = on_ack

    @property
    def pending(self) -> int:
        with self._lock:
            return self.sent - self.acked - len(self.errors)

    def sent_one(self) -> None:
        with self._lock:
            self.sent += 1

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is None:
                self.acked += 1
            else:
                self.errors.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err}")
        if err is None:
            if self._on_ack is not None:
                self._on_ack()
        elif self._on_error is not None:
            self._on_error(err)


class EventPublisher:
    def __init__(
        self,
        kafka_config: Mapping[str, str | int | float | bool],
        registry: SchemaRegistryClient,
        schemas: Mapping[str, str],
        *,
        producer: Producer | None = None,
    ) -> None:
        """`schemas` maps topic -> Avro schema JSON (the value schema of that topic)."""
        self.producer = producer or new_producer(kafka_config)
        self.registry = registry
        self._keys = StringSerializer("utf_8")
        self._schemas = dict(schemas)
        self._serializers: dict[str, AvroSerializer] = {}

    def register_schemas(self) -> dict[str, int]:
        """Register every value schema (TopicNameStrategy); fail fast if incompatible."""
        ids: dict[str, int] = {}
        for topic, schema in self._schemas.items():
            subject = f"{topic}-value"
            ids[subject] = self.registry.register_schema(subject, Schema(schema, "AVRO"))
            self._serializers[topic] = AvroSerializer(
                self.registry,
                schema,
                conf={"auto.register.schemas": False, "normalize.schemas": False},
            )
        return ids

    def publish(
        self,
        topic: str,
        key: str,
        value: Mapping[str, Any],
        tracker: DeliveryTracker,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        serializer = self._serializers[topic]
        payload = serializer(value, SerializationContext(topic, MessageField.VALUE))
        key_bytes = self._keys(key, SerializationContext(topic, MessageField.KEY))
        while True:
            try:
                self.producer.produce(
                    topic,
                    key=key_bytes,
                    value=payload,
                    headers=list((headers or {}).items()),
                    on_delivery=tracker,
                )
                break
            except BufferError:  # local queue full: serve callbacks, then try again
                self.producer.poll(0.1)
        tracker.sent_one()
        self.producer.poll(0)

    def wait(self, tracker: DeliveryTracker, timeout_s: float = 180.0) -> None:
        """Block until every event of `tracker` is acknowledged; raise on any failure."""
        deadline = time.monotonic() + timeout_s
        while tracker.pending > 0 and time.monotonic() < deadline:
            self.producer.poll(0.1)
        if tracker.errors:
            shown = "; ".join(tracker.errors[:3])
            raise DeliveryError(f"{len(tracker.errors)} event(s) not acknowledged: {shown}")
        if tracker.pending > 0:
            raise DeliveryError(f"{tracker.pending} event(s) unacknowledged after {timeout_s}s")

    def queue_length(self) -> int:
        return len(self.producer)

    def flush(self, timeout_s: float) -> int:
        """Deliver what was produced; returns the number of messages still queued."""
        return int(self.producer.flush(timeout_s))

    def close(self, timeout_s: float) -> int:
        """Flush, then release the registry client's connections."""
        left = self.flush(timeout_s)
        self.registry.close()
        return left
