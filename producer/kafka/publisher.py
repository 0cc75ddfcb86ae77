"""One run's writes through the at-least-once path: events, deletes, dead letters and the
checkpoint, each counted until Kafka acknowledged it (`enable.idempotence`, `acks=all`).

Each run (`KafkaSink.begin`) counts only its own messages, so one resource's commit waits for
its own acknowledgements and never for another resource's events in flight (no `flush()` of
the shared producer). The checkpoint is written only after every event and dead letter of the
run was acknowledged, so no checkpoint moves past an event Kafka did not accept.

Sizes: an event larger than its topic's limit (`max.message.bytes`, configured per resource)
is not sent; `publish` answers with a `too_large` rejection and the run dead-letters the
record instead. The broker can still refuse one (an existing topic with a lower limit than
the producer was told): `drain` hands those back as refusals to dead-letter the same way.

The exactly-once run sink builds on this one (`producer.kafka.transactions`); the sink that
hands out both is `producer.kafka.sink`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.serialization import SerializationError

from producer.kafka.fencing import fenced_error, is_fenced
from producer.pipeline.build import OutgoingEvent, Rejection
from producer.pipeline.dead_letters import SCHEMA_MISMATCH, TOO_LARGE, DeadLetter
from producer.pipeline.ports import LaneError, Refusal
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress

if TYPE_CHECKING:  # the sink hands out run sinks; only its type is needed here
    from producer.kafka.sink import KafkaSink

log = logging.getLogger(__name__)

PRODUCER_REQUIRED: Final = {"enable.idempotence": "true", "acks": "all"}
"""Not overridable: the checkpoint guarantee rests on them."""
PRODUCER_DEFAULTS: Final = {
    "compression.type": "zstd",
    "linger.ms": "20",
    "batch.size": "262144",
    "delivery.timeout.ms": "120000",
    # A smaller queue keeps peak memory flat however long the run (the 100,000 default added
    # ~20 MB to the peak RSS of a 1M-record run, docs/performance.md); 20,000 messages are
    # still many linger.ms batches, and a full queue is back-pressure (`produce` waits).
    "queue.buffering.max.messages": "20000",
}
RECORD_OVERHEAD_BYTES: Final = 512
"""Room kept under a topic's `max.message.bytes` for the record batch framing and headers
that the size check does not count exactly."""
STALL_WARNING_S: Final = 5.0
"""A wait for acknowledgements longer than this logs a WARNING (and again every as long)."""
DRAIN_TIMEOUT_S: Final = 180.0
"""Longer than `delivery.timeout.ms`: librdkafka reports every message by then."""
DELETE_FLUSH_TIMEOUT_S: Final = 5.0
"""How long a delete waits for its resource's exactly-once lane to hand Kafka what it holds.
The caller holds the resource's delete guard meanwhile (its pollers wait), and a webhook's
sender waits for the answer: a lane that does not get through by then (a broker stalling)
fails the delete, which is tried again (Svix redelivers on the 503), instead of holding the
guard for up to DRAIN_TIMEOUT_S (issue 17, failure 8b). A healthy lane is through within
about a linger.ms."""


def new_producer(
    kafka_config: Mapping[str, str | int | float | bool], *, message_max_bytes: int | None = None
) -> Producer:
    """The idempotent producer every write goes through (events, dead letters, checkpoints).

    `message_max_bytes`: the largest message any topic of ours accepts; librdkafka refuses
    bigger ones locally (its default is 1,000,000).
    """
    sized = {} if message_max_bytes is None else {"message.max.bytes": str(message_max_bytes)}
    return Producer({**PRODUCER_DEFAULTS, **sized, **kafka_config, **PRODUCER_REQUIRED})


class DeliveryError(LaneError):
    """Kafka did not acknowledge one or more messages of a run."""


class DeliveryInterruptedError(DeliveryError):
    """The service is stopping: the wait for Kafka was cut short (nothing is committed)."""


class CheckpointWriter(Protocol):
    """What the sink needs of the checkpoint store (`producer.kafka.checkpoints`)."""

    topic: str

    def commit(self, checkpoint: Checkpoint, *, based_on: Checkpoint | None) -> None: ...

    def check_unchanged(self, resource: str, based_on: Checkpoint | None) -> None: ...

    def records_for(
        self, checkpoint: Checkpoint, based_on: Checkpoint | None
    ) -> tuple[list[tuple[bytes, bytes | None]], Checkpoint]: ...

    def progress_records(self, progress: Progress) -> list[tuple[bytes, bytes | None]]: ...

    def progress_key(self, resource: str) -> bytes: ...

    def sweep_chunks(self) -> int: ...

    def progress(self, resource: str) -> Progress | None: ...

    def write_progress(self, progress: Progress) -> None: ...

    def clear_progress(self, resource: str) -> None: ...

    def remember(self, checkpoint: Checkpoint) -> None: ...

    def remember_progress(self, resource: str, progress: Progress | None) -> None: ...


class DeliveryObserver(Protocol):
    def add_published(self, resource: str, n: int = 1) -> None: ...

    def add_delivery_errors(self, resource: str, n: int = 1) -> None: ...


@dataclass(frozen=True)
class TopicTarget:
    """Where a resource's events go and the largest message that topic accepts."""

    topic: str
    max_message_bytes: int


class _Tally:
    """Messages of one kind in one run: sent, acknowledged, failed (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.errors: list[str] = []

    @property
    def pending(self) -> int:
        with self.lock:
            return self.sent - self.acked - len(self.errors)


class KafkaRunSink:
    """The `RunSink` of one run of one resource."""

    def __init__(self, sink: KafkaSink, resource: str, run_id: str, producer: Producer) -> None:
        self._sink = sink
        self._producer = producer
        self.resource = resource
        self.run_id = run_id
        self._run_id_header = ("run_id", run_id.encode())
        self.target = sink.targets[resource]
        self._events = _Tally()
        self._letters = _Tally()
        self._tombstones = _Tally()
        self._refused: list[Refusal] = []
        self._closed = False
        self._fenced: KafkaError | None = None

    @property
    def acked(self) -> int:
        return self._events.acked

    @property
    def dead_lettered(self) -> int:
        return self._letters.acked

    @property
    def unacknowledged(self) -> int:
        return self._events.pending + self._letters.pending + self._tombstones.pending

    def publish(self, event: OutgoingEvent) -> Rejection | None:
        self._check_open()
        try:
            payload = self._sink.serialize(self.resource, event.value)
        except (SerializationError, ValueError, TypeError) as exc:
            # conform() should make this impossible; never stall the resource on it
            return Rejection(SCHEMA_MISMATCH, f"Avro serialization failed: {exc}")
        key = event.key.encode()
        event_id = str(event.value["event_id"]).encode()
        headers = [("event_id", event_id), self._run_id_header]
        size = len(payload) + len(key) + len("event_id") + len(event_id) + len("run_id")
        size += len(self._run_id_header[1])
        limit = self.target.max_message_bytes
        if size > limit - RECORD_OVERHEAD_BYTES:
            return _too_large(size, limit, self.target.topic)
        refused = self._sink.refused_sizes.get(self.target.topic)
        if refused is not None and size >= refused:
            return _too_large(size, limit, self.target.topic, refused_at=refused)
        try:
            with self._events.lock:
                self._events.sent += 1
            self._sink.produce(
                self._producer,
                self.target.topic,
                key,
                payload,
                headers,
                self._on_event_delivery(event, size),
            )
        except KafkaException as exc:
            with self._events.lock:
                self._events.sent -= 1
            if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                return _too_large(size, limit, self.target.topic)
            raise
        return None

    def delete(self, event: OutgoingEvent) -> Rejection | None:
        """A delete (Debezium convention, docs/events.md): the `op = "d"` event, then a
        tombstone (same key, null value) so compaction and key-value consumers drop the key.
        Both go to one partition through one idempotent producer, so they stay in this order.

        In exactly-once mode this is a `begin_direct` run sink (the shared producer, outside
        the lanes): first the resource's lane is flushed, so every version it was handed
        before this delete (the caller holds the resource's delete guard) is appended before
        the delete. A lane still holding messages after `DELETE_FLUSH_TIMEOUT_S` fails the
        delete with `DeliveryError` before anything of it is sent."""
        lane = self._sink.lanes.get(self.resource)
        if lane is not None and lane is not self._producer:
            left = int(lane.flush(DELETE_FLUSH_TIMEOUT_S))
            if left > 0:
                raise DeliveryError(
                    f"delete of {self.resource} record {event.key} not sent: the exactly-once "
                    f"lane of {self.resource} still holds {left} message(s) after "
                    f"{DELETE_FLUSH_TIMEOUT_S:g}s (Kafka slow or unreachable); the delete is "
                    "tried again"
                )
        rejection = self.publish(event)
        if rejection is not None:
            return rejection
        delivered = self._counted(
            self._tombstones, f"tombstone of {event.key} to {self.target.topic}"
        )
        headers = [("event_id", str(event.value["event_id"]).encode())]
        self._sink.produce(
            self._producer, self.target.topic, event.key.encode(), None, headers, delivered
        )
        return None

    def _counted(self, tally: _Tally, what: str) -> Callable[[KafkaError | None, Message], None]:
        """Count one message as sent on `tally`; the callback counts its acknowledgement."""
        with tally.lock:
            tally.sent += 1

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with tally.lock:
                if err is None:
                    tally.acked += 1
                else:
                    tally.errors.append(f"{what}: {err}")
            if err is not None:
                self._sink.observer.add_delivery_errors(self.resource)

        return delivered

    def _on_event_delivery(
        self, event: OutgoingEvent, size: int
    ) -> Callable[[KafkaError | None, Message], None]:
        # Keep what a dead letter needs, not the event: this closure lives as long as the
        # message is in flight (up to a full producer queue of them, docs/performance.md).
        key, updated_at, origin = event.key, event.updated_at, event.origin

        def delivered(err: KafkaError | None, msg: Message) -> None:
            tally = self._events
            if err is None:
                with tally.lock:
                    tally.acked += 1
                self._sink.observer.add_published(self.resource)
                return
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                # refused by the broker (a topic limit lower than configured): dead-letter it
                rejection = _too_large(size, self.target.max_message_bytes, self.target.topic)
                topic = self.target.topic
                with tally.lock:
                    known = self._sink.refused_sizes.get(topic)
                    self._sink.refused_sizes[topic] = size if known is None else min(known, size)
                    tally.sent -= 1
                    self._refused.append(Refusal(key, updated_at, origin, rejection))
                return
            with tally.lock:
                tally.errors.append(f"{msg.topic()}[{msg.partition()}] key={key}: {err}")
                if is_fenced(err):
                    self._fenced = err
            self._sink.observer.add_delivery_errors(self.resource)

        return delivered

    def dead_letter(self, letter: DeadLetter) -> None:
        self._check_open()
        target = self._sink.dead_letter_target
        headers = letter.headers()
        size = len(letter.value) + len(letter.key or b"") + sum(len(n) + len(v) for n, v in headers)
        if size > target.max_message_bytes - RECORD_OVERHEAD_BYTES:
            raise DeliveryError(
                f"dead letter of {self.resource} record {letter.record_id or '(no id)'} is "
                f"{size} bytes, over the {target.max_message_bytes}-byte limit of "
                f"{target.topic} (DEAD_LETTER_MAX_MESSAGE_BYTES); the run stops rather than "
                "drop it"
            )
        tally = self._letters
        delivered = self._counted(tally, f"dead letter to {target.topic}")
        try:
            self._sink.produce(
                self._producer, target.topic, letter.key, letter.value, headers, delivered
            )
        except KafkaException as exc:
            with tally.lock:
                tally.sent -= 1
            raise DeliveryError(f"dead letter to {target.topic} refused: {exc}") from None

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> list[Refusal]:
        started = time.monotonic()
        deadline, next_warning = started + timeout_s, started + STALL_WARNING_S
        while self.unacknowledged > 0 and time.monotonic() < deadline:
            if self._sink.stop.is_set():
                raise DeliveryInterruptedError(
                    f"stopping with {self.unacknowledged} message(s) of {self.resource} "
                    "not yet acknowledged"
                )
            self._producer.poll(0.1)
            if time.monotonic() >= next_warning:  # a broker stall is visible while it lasts
                next_warning += STALL_WARNING_S
                log.warning(
                    "Kafka has not acknowledged %d message(s) of %s for %.0fs; still waiting "
                    "(check the brokers at bootstrap.servers)",
                    self.unacknowledged,
                    self.resource,
                    time.monotonic() - started,
                    extra={"component": "kafka", "resource": self.resource},
                )
        if self._fenced is not None:
            raise fenced_error(self._fenced, self.resource)
        errors = self._events.errors + self._letters.errors + self._tombstones.errors
        if errors:
            shown = "; ".join(errors[:3])
            raise DeliveryError(f"{len(errors)} message(s) not acknowledged: {shown}")
        if self.unacknowledged > 0:
            raise DeliveryError(
                f"{self.unacknowledged} message(s) unacknowledged after {timeout_s:g}s"
            )
        with self._events.lock:
            refused, self._refused = self._refused, []
        return refused

    def commit(
        self,
        checkpoint: Checkpoint | None,
        *,
        based_on: Checkpoint | None,
        complete_up_to: datetime | None = None,
    ) -> None:
        self._check_open()
        refused = self.drain()
        if refused:
            raise DeliveryError(
                f"{len(refused)} refused event(s) were neither sent nor dead-lettered"
            )
        self._closed = True
        store = self._sink.checkpoints
        if checkpoint is not None:
            store.commit(checkpoint, based_on=based_on)
        store.clear_progress(self.resource)
        if complete_up_to is not None and self._sink.heartbeat_topic:
            self._heartbeat(checkpoint or based_on, complete_up_to)

    def mark_progress(self, progress: Progress) -> None:
        self._check_open()
        if self.drain():  # the orchestrator dead-letters refusals before it marks progress
            raise DeliveryError("refused event(s) were neither sent nor dead-lettered")
        self._sink.checkpoints.write_progress(progress)

    def _heartbeat(self, checkpoint: Checkpoint | None, complete_up_to: datetime) -> None:
        """`HEARTBEAT_TOPIC`: for consumers that need a watermark, the instant up to which
        this resource is complete in Kafka (README "Resets and heartbeats"); confirmed like a
        checkpoint."""
        topic = self._sink.heartbeat_topic
        assert topic is not None
        body = {
            "resource": self.resource,
            "producer_id": self._sink.producer_id,
            "complete_up_to": complete_up_to.isoformat().replace("+00:00", "Z"),
            "checkpoint": checkpoint.updated_at if checkpoint is not None else None,
            "run_id": self.run_id,
        }
        outcome: list[KafkaError | None] = []
        self._sink.produce(
            self._sink.producer,
            topic,
            f"{self._sink.producer_id}/{self.resource}".encode(),
            json.dumps(body, sort_keys=True).encode(),
            [],
            lambda err, _msg: outcome.append(err),
        )
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not outcome and time.monotonic() < deadline and not self._sink.stop.is_set():
            self._sink.producer.poll(0.1)
        if not outcome or outcome[0] is not None:
            # The checkpoint is already committed; a missing heartbeat only delays the
            # consumers' watermark until the next run.
            log.warning(
                "heartbeat of %s to %s not acknowledged: %s",
                self.resource,
                topic,
                outcome[0] if outcome else "timed out",
                extra={"component": "kafka", "resource": self.resource},
            )

    def abort(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"run {self.run_id} of {self.resource} already ended")


def _too_large(size: int, limit: int, topic: str, refused_at: int | None = None) -> Rejection:
    if refused_at is not None:
        return Rejection(
            TOO_LARGE,
            f"event of {size} bytes: {topic} refused an event of {refused_at} bytes as too "
            f"large (its max.message.bytes is below the configured {limit})",
            {"size": str(size), "limit": str(limit), "refused_at": str(refused_at)},
        )
    return Rejection(
        TOO_LARGE,
        f"event of {size} bytes exceeds the {limit}-byte max.message.bytes of {topic}",
        {"size": str(size), "limit": str(limit)},
    )
