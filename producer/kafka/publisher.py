"""The Kafka sink: Avro change events, dead letters and checkpoints through one idempotent
producer (`enable.idempotence`, `acks=all`), scoped per run.

Each run (`KafkaSink.begin`) counts only its own messages, so one resource's commit waits for
its own acknowledgements and never for another resource's events in flight (no `flush()` of
the shared producer). The checkpoint is written only after every event and dead letter of the
run was acknowledged, so no checkpoint moves past an event Kafka did not accept.

Sizes: an event larger than its topic's limit (`max.message.bytes`, configured per resource)
is not sent; `publish` answers with a `too_large` rejection and the run dead-letters the
record instead. The broker can still refuse one (an existing topic with a lower limit than
the producer was told): `drain` hands those back as refusals to dead-letter the same way.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from producer.kafka.avro_encoder import (
    Encoder,
    NotCompilableError,
    NotEncodableError,
    compile_encoder,
)
from producer.pipeline.build import OutgoingEvent, Rejection
from producer.pipeline.dead_letters import SCHEMA_MISMATCH, TOO_LARGE, DeadLetter
from producer.pipeline.ports import LaneFencedError, Refusal
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress

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
POLL_EVERY: Final = 256
"""Messages produced between two polls for delivery reports (the queue holds 100,000)."""
DRAIN_TIMEOUT_S: Final = 180.0
"""Longer than `delivery.timeout.ms`: librdkafka reports every message by then."""


def new_producer(
    kafka_config: Mapping[str, str | int | float | bool], *, message_max_bytes: int | None = None
) -> Producer:
    """The idempotent producer every write goes through (events, dead letters, checkpoints).

    `message_max_bytes`: the largest message any topic of ours accepts; librdkafka refuses
    bigger ones locally (its default is 1,000,000).
    """
    sized = {} if message_max_bytes is None else {"message.max.bytes": str(message_max_bytes)}
    return Producer({**PRODUCER_DEFAULTS, **sized, **kafka_config, **PRODUCER_REQUIRED})


def new_transactional_producer(
    kafka_config: Mapping[str, str | int | float | bool],
    *,
    transactional_id: str,
    message_max_bytes: int,
    transaction_timeout_s: float,
) -> Producer:
    """A lane's producer in exactly-once mode (`transactional.id` stable per lane)."""
    transaction_ms = int(transaction_timeout_s * 1000)
    config = {**PRODUCER_DEFAULTS, "message.max.bytes": str(message_max_bytes), **kafka_config}
    # librdkafka requires a message's delivery timeout to fit in its transaction's
    delivery_ms = min(int(config.get("delivery.timeout.ms", transaction_ms)), transaction_ms)
    return Producer(
        {
            **config,
            **PRODUCER_REQUIRED,
            "delivery.timeout.ms": str(delivery_ms),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": str(transaction_ms),
        }
    )


class DeliveryError(RuntimeError):
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
        self._schemas = dict(schemas)
        self._serializers: dict[str, AvroSerializer] = {}
        self._encoders: dict[str, Encoder] = {}
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
        """Exactly-once: one transactional producer per resource, `init_transactions` at once.

        Initialising a transactional id aborts what a previous holder left open and fences
        that holder: a second instance started with the same PRODUCER_ID takes the lanes over,
        and the first one's next transactional call fails with `LaneFencedError`.
        """
        assert self._lane_producer is not None
        for resource in resources:
            lane = self._lane_producer(resource)
            _transactional(functools.partial(lane.init_transactions, timeout_s), resource)
            self.lanes[resource] = lane

    def register_schemas(self) -> dict[str, int]:
        """Register every value schema (TopicNameStrategy); fail fast if incompatible."""
        ids: dict[str, int] = {}
        for resource, schema in self._schemas.items():
            subject = f"{self.targets[resource].topic}-value"
            ids[subject] = self.registry.register_schema(subject, Schema(schema, "AVRO"))
            self._serializers[resource] = AvroSerializer(
                self.registry,
                schema,
                conf={
                    "auto.register.schemas": False,
                    "normalize.schemas": False,
                    # named, not left to the default: newer clients default to a strategy that
                    # looks the topic up (under a lock) for every message (issue 11)
                    "subject.name.strategy": topic_subject_name_strategy,
                },
            )
            self._compile(resource, schema, ids[subject])
        return ids

    def _compile(self, resource: str, schema: str, schema_id: int) -> None:
        """The compiled encoder of `resource`'s events, framed as the Confluent serializer
        frames them (magic byte 0, the schema id as 4 bytes big-endian): the same bytes at
        less than half the cost (docs/performance.md). A schema it does not compile stays
        with the serializer alone."""
        try:
            encode = compile_encoder(json.loads(schema))
        except NotCompilableError as exc:
            log.info("%s: events encoded by the Avro serializer only (%s)", resource, exc)
            return
        framing = b"\0" + schema_id.to_bytes(4, "big")

        def framed(value: Any) -> bytes:
            return framing + encode(value)

        self._encoders[resource] = framed

    def reopen_lane(self, resource: str, timeout_s: float = 30.0) -> None:
        """A lane whose producer hit a fatal transactional error gets a new producer with the
        same transactional id: its `init_transactions` aborts the open transaction."""
        assert self._lane_producer is not None
        old = self.lanes.pop(resource, None)
        if old is not None:
            old.flush(0)
        lane = self._lane_producer(resource)
        _transactional(functools.partial(lane.init_transactions, timeout_s), resource)
        self.lanes[resource] = lane

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
                if _is_fenced(exc.args[0]):
                    raise _fenced_error(exc.args[0], topic) from None
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
        encode = self._encoders.get(resource)
        if encode is not None:
            try:
                return encode(value)
            except NotEncodableError:
                pass  # a value the compiled encoder does not vouch for: the library decides
        topic = self.targets[resource].topic
        payload = self._serializers[resource](
            value, SerializationContext(topic, MessageField.VALUE)
        )
        assert payload is not None
        return bytes(payload)

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
        before this delete (the caller holds the delete guard) is appended before the delete."""
        lane = self._sink.lanes.get(self.resource)
        if lane is not None and lane is not self._producer:
            lane.flush(DRAIN_TIMEOUT_S)
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
                if _is_fenced(err):
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
            raise _fenced_error(self._fenced, self.resource)
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


class TransactionalRunSink(KafkaRunSink):
    """Exactly-once: the run's lane producer writes each batch of pages (events, dead letters
    and the progress mark) as one transaction; the last one holds the final events, the new
    checkpoint and the progress tombstone. Consumers with isolation.level=read_committed see
    a batch whole or not at all, so a run killed mid-batch leaves nothing visible twice."""

    def __init__(self, sink: KafkaSink, resource: str, run_id: str, producer: Producer) -> None:
        super().__init__(sink, resource, run_id, producer)
        _transactional(producer.begin_transaction, resource)
        self._open = True

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> list[Refusal]:
        """A refusal by the broker leaves the transaction abortable (librdkafka): nothing
        more can be written in it, not even the dead letter. The batch fails here; its size
        is learnt (`KafkaSink.refused_sizes`), so the retried batch dead-letters the event
        before sending it and goes through."""
        refused = super().drain(timeout_s)
        if refused:
            self.abort()
            sizes = ", ".join(r.rejection.detail.get("size", "?") for r in refused)
            raise DeliveryError(
                f"{self.resource}: Kafka refused {len(refused)} event(s) as too large "
                f"({sizes} bytes); the transaction is aborted and the retried batch "
                "dead-letters them before sending"
            )
        return refused

    def mark_progress(self, progress: Progress) -> None:
        self._check_open()
        if self.drain():
            raise DeliveryError("refused event(s) were neither sent nor dead-lettered")
        store = self._sink.checkpoints
        # a large mark comes as chunks and a main record: all in this transaction, so a
        # reader sees them all or none
        for key, value in store.progress_records(progress):
            self._produce_record(store.topic, key, value)
        self._commit_transaction()
        store.remember_progress(self.resource, progress)
        store.sweep_chunks()  # the chunks of the mark this one replaced
        _transactional(self._producer.begin_transaction, self.resource)
        self._open = True

    def commit(
        self,
        checkpoint: Checkpoint | None,
        *,
        based_on: Checkpoint | None,
        complete_up_to: datetime | None = None,
    ) -> None:
        self._check_open()
        if self.drain():
            raise DeliveryError("refused event(s) were neither sent nor dead-lettered")
        store = self._sink.checkpoints
        stored: Checkpoint | None = None
        if checkpoint is not None:
            store.check_unchanged(self.resource, based_on)
            # a boundary of any size: chunks and the main record in this one transaction
            records, stored = store.records_for(checkpoint, based_on)
            for key, value in records:
                self._produce_record(store.topic, key, value)
        had_progress = store.progress(self.resource) is not None
        if had_progress:
            self._produce_record(store.topic, store.progress_key(self.resource), None)
        self._commit_transaction()
        self._closed = True
        if stored is not None:
            store.remember(stored)
        store.remember_progress(self.resource, None)
        store.sweep_chunks()  # those of the checkpoint and mark this commit replaced
        if complete_up_to is not None and self._sink.heartbeat_topic:
            self._heartbeat(checkpoint or based_on, complete_up_to)

    def abort(self) -> None:
        self._closed = True
        if not self._open:
            return
        self._open = False
        try:
            # bounded: a stopping service must not wait long; what is left open is aborted by
            # the next init_transactions of this lane anyway
            self._producer.abort_transaction(5.0)
        except KafkaException as exc:
            if self._fenced is not None or _is_fenced(exc.args[0]):
                return  # the lane belongs to another instance now: never take it back
            log.warning(
                "could not abort the transaction of %s: %s; reopening its lane (which aborts "
                "what was left open)",
                self.resource,
                exc,
                extra={"component": "kafka", "resource": self.resource},
            )
            self._sink.reopen_lane(self.resource)

    def _produce_record(self, topic: str, key: bytes, value: bytes | None) -> None:
        # no delivery callback of its own: a record that fails fails the commit of its
        # transaction, which is what decides
        self._sink.produce(self._producer, topic, key, value, [], _ignore_delivery)

    def _commit_transaction(self) -> None:
        """Commit as librdkafka documents it: a retriable error (a timeout) is retried
        (the commit is idempotent); an abortable one aborts; a fatal one, or retries that do
        not get through, leave the lane to a new producer of its transactional id (which
        aborts what is open). Never a lane left mid-commit for the next run's
        `begin_transaction` to fail on (issue 17, failure 8)."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                _transactional(
                    lambda: self._producer.commit_transaction(TRANSACTION_COMMIT_S),
                    self.resource,
                )
                self._open = False
                return
            except KafkaException as exc:
                error = exc.args[0]
                retry = error.retriable() and not error.fatal() and not error.txn_requires_abort()
                if retry and attempt < COMMIT_ATTEMPTS and not self._sink.stop.is_set():
                    log.warning(
                        "commit of %s's transaction failed (%s); retrying (%d of %d)",
                        self.resource,
                        error.str(),
                        attempt,
                        COMMIT_ATTEMPTS,
                        extra={"component": "kafka", "resource": self.resource},
                    )
                    continue
                if error.fatal():
                    self._open = False
                    self._closed = True
                    self._sink.reopen_lane(self.resource)
                else:
                    self.abort()
                raise DeliveryError(
                    f"transaction of {self.resource} not committed: {error.str()}"
                ) from None


TRANSACTION_COMMIT_S: Final = 60.0
COMMIT_ATTEMPTS: Final = 3
"""A commit that times out is tried again this often before the transaction is aborted."""
_FENCED_CODES: Final = frozenset(
    code
    for code in (
        getattr(KafkaError, "_FENCED", None),
        getattr(KafkaError, "PRODUCER_FENCED", None),
        getattr(KafkaError, "INVALID_PRODUCER_EPOCH", None),
    )
    if code is not None
)


def _is_fenced(error: KafkaError) -> bool:
    return error.code() in _FENCED_CODES


def _fenced_error(error: KafkaError, where: str) -> LaneFencedError:
    return LaneFencedError(
        f"the exactly-once lane of {where} was taken over by another instance with the same "
        f"PRODUCER_ID ({error.str()}); this instance stops writing"
    )


def _transactional(call: Callable[[], object], resource: str) -> None:
    """Run a transactional API call; a fenced producer becomes `LaneFencedError`."""
    try:
        call()
    except KafkaException as exc:
        if _is_fenced(exc.args[0]):
            raise _fenced_error(exc.args[0], resource) from None
        raise


def _ignore_delivery(_err: KafkaError | None, _msg: Message) -> None:
    return None
