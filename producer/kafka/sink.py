"""The Kafka `Sink`: the one idempotent producer every write goes through, in exactly-once
mode a transactional lane per resource besides it, and the run sinks handed out on them.

At least once (`producer.kafka.publisher`): every run writes through the shared producer.
Exactly once (`producer.kafka.transactions`): a sync run writes through its resource's lane;
the webhook receiver and reconciliation still write through the shared producer
(`begin_direct`). Values are encoded by `producer.kafka.serde`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from producer.kafka.fencing import fenced_error, is_fenced
from producer.kafka.publisher import (
    CheckpointWriter,
    DeliveryInterruptedError,
    DeliveryObserver,
    KafkaRunSink,
    TopicTarget,
)
from producer.kafka.serde import EventSerde
from producer.kafka.transactions import TransactionalRunSink, open_lane

POLL_EVERY: Final = 256
"""Messages produced between two polls for delivery reports (the queue holds 100,000)."""


class KafkaSink:
    """The `Sink` port on confluent-kafka; also registers the value schemas."""

    def __init__(
        self,
        producer: Producer,
        registry: SchemaRegistryClient,
        *,
        targets: Mapping[str, TopicTarget],
        schemas: Mapping[str, str],
        dead_letter: TopicTarget,
        checkpoints: CheckpointWriter,
        observer: DeliveryObserver,
        producer_id: str,
        stop: threading.Event | None = None,
        heartbeat_topic: str | None = None,
        lane_producer: Callable[[str], Producer] | None = None,
    ) -> None:
        """`targets` and `schemas` are keyed by resource (schema: Avro JSON of its events);
        `stop` cuts waits for Kafka short when the service stops. `lane_producer` makes it
        exactly-once: a transactional producer per resource (see `open_lanes`)."""
        self.producer = producer
        self.registry = registry
        self.targets = dict(targets)
        self.dead_letter_target = dead_letter
        self.checkpoints = checkpoints
        self.observer = observer
        self.producer_id = producer_id
        self.serde = EventSerde(
            registry, topics={r: t.topic for r, t in self.targets.items()}, schemas=schemas
        )
        self.stop = stop or threading.Event()
        self.heartbeat_topic = heartbeat_topic
        self._produced = 0
        self._lane_producer = lane_producer
        self.lanes: dict[str, Producer] = {}
        self.refused_sizes: dict[str, int] = {}
        """Per topic, the smallest event size the broker refused as too large: an event at
        least this large is dead-lettered before it is sent. The broker's own limit (a topic
        altered behind the producer's back) is learnt, so a retried batch does not send the
        same refused event again (issue 17, failure 8: in exactly-once mode a refusal aborts
        the whole transaction, and the batch would be retried forever)."""

    @property
    def exactly_once(self) -> bool:
        return self._lane_producer is not None

    def open_lanes(self, resources: Sequence[str], timeout_s: float = 30.0) -> None:
        """Exactly-once: one transactional producer per resource, `init_transactions` at once
        (which fences a previous holder of the lane, `open_lane`)."""
        assert self._lane_producer is not None
        for resource in resources:
            self.lanes[resource] = open_lane(self._lane_producer, resource, timeout_s)

    def register_schemas(self) -> dict[str, int]:
        """Register every value schema (TopicNameStrategy); fail fast if incompatible."""
        return self.serde.register_schemas()

    def reopen_lane(self, resource: str, timeout_s: float = 30.0) -> None:
        """A lane whose producer hit a fatal transactional error gets a new producer with the
        same transactional id: its `init_transactions` aborts the open transaction."""
        assert self._lane_producer is not None
        old = self.lanes.pop(resource, None)
        if old is not None:
            old.flush(0)
        self.lanes[resource] = open_lane(self._lane_producer, resource, timeout_s)

    def begin_direct(self, resource: str, run_id: str) -> KafkaRunSink:
        """A run sink on the shared idempotent producer, never a transactional lane: for the
        webhook receiver and reconciliation, which must not open a second transaction on the
        lane a sync run of the resource may be using. Their writes are visible at once."""
        return KafkaRunSink(self, resource, run_id, self.producer)

    def begin(self, resource: str, run_id: str) -> KafkaRunSink:
        if self.exactly_once:
            return TransactionalRunSink(self, resource, run_id, self.lanes[resource])
        return KafkaRunSink(self, resource, run_id, self.producer)

    def produce(
        self,
        producer: Producer,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """Produce, waiting while the local queue is full (back-pressure)."""
        while True:
            try:
                producer.produce(
                    topic, key=key, value=value, headers=list(headers), on_delivery=on_delivery
                )
                break
            except KafkaException as exc:
                if is_fenced(exc.args[0]):
                    raise fenced_error(exc.args[0], topic) from None
                raise
            except BufferError:  # local queue full: serve callbacks, then try again
                if self.stop.is_set():
                    raise DeliveryInterruptedError(
                        "stopping while the producer queue is full"
                    ) from None
                producer.poll(0.1)
        # Delivery reports are served in batches, not after every message: each poll gives
        # up the GIL, and with the sync and prefetch threads each give-up costs a thread
        # switch (issue 11). Acks are counted by `drain`, which polls until all are in.
        self._produced += 1
        if self._produced % POLL_EVERY == 0:
            producer.poll(0)

    def serialize(self, resource: str, value: Mapping[str, Any]) -> bytes:
        return self.serde.serialize(resource, value)

    def queue_length(self) -> int:
        return len(self.producer) + sum(len(lane) for lane in self.lanes.values())

    def flush(self, timeout_s: float) -> int:
        """Deliver what was produced; returns the number of messages still queued. A lane's
        open transaction (a run cut short) is left to the next `init_transactions` of its
        transactional id, which aborts it: its events are never visible to read_committed."""
        deadline = time.monotonic() + timeout_s
        left = int(self.producer.flush(timeout_s))
        for lane in self.lanes.values():
            left += int(lane.flush(max(0.0, deadline - time.monotonic())))
        return left

    def close(self, timeout_s: float) -> int:
        """Flush, then release the registry client's connections."""
        left = self.flush(timeout_s)
        self.registry.close()
        return left
