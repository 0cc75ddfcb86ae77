"""Reads a topic from the beginning to its current end.

`scan_to_end` serves the checkpoint store at start-up; `read_topic` decodes Avro values for
the demo and the tests (what downstream consumers see).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from producer.kafka import TIMEOUT_S

KafkaConfig = Mapping[str, str | int | float | bool]


class TopicReadError(RuntimeError):
    pass


def scan_to_end(kafka_config: KafkaConfig, topic: str) -> Iterator[Message]:
    """Every message of `topic` up to the end offsets seen when the scan starts."""
    tail = TopicTail(kafka_config, topic)
    try:
        yield from tail.read_new()
    finally:
        tail.close()


class TopicTail:
    """A consumer that stays assigned to every partition of a topic: each `read_new` yields
    what was written since the previous call, up to the end offsets seen when it starts.

    The checkpoint store uses it to see, at each run's start, checkpoints that another
    process (`askelephant-kafka reset`) wrote, at the cost of one offsets request.
    Not thread-safe: callers serialise calls.
    """

    def __init__(self, kafka_config: KafkaConfig, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": f"askelephant-reader-{uuid.uuid4()}",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                "isolation.level": "read_committed",
            }
        )
        try:
            metadata = self._consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
            if metadata.error is not None:
                raise TopicReadError(f"topic {topic}: {metadata.error}")
            self._position = dict.fromkeys(metadata.partitions, 0)
            """Per partition, the next offset to read."""
            self._consumer.assign(
                [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
            )
        except BaseException:
            self._consumer.close()
            raise

    def read_new(self) -> Iterator[Message]:
        ends: dict[int, int] = {}
        for partition, position in self._position.items():
            tp = TopicPartition(self.topic, partition)
            low, high = self._consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
            if high > max(low, position):
                ends[partition] = high
        deadline = time.monotonic() + TIMEOUT_S
        while ends:
            msg = self._consumer.poll(0.2)
            if msg is None:
                # A transaction's commit marker takes an offset but is never delivered, and
                # no end-of-partition event may follow it: ask where the consumer stands.
                for tp in self._consumer.position(
                    [TopicPartition(self.topic, p) for p in list(ends)]
                ):
                    if tp.offset >= ends[tp.partition]:
                        ends.pop(tp.partition, None)
                if ends and time.monotonic() > deadline:
                    raise TopicReadError(f"timed out reading {self.topic}")
                continue
            error, partition, offset = msg.error(), msg.partition() or 0, msg.offset() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # an end-of-partition event of an earlier call can still be queued
                    if offset >= ends.get(partition, 0):
                        ends.pop(partition, None)
                    continue
                raise TopicReadError(f"reading {self.topic}: {error}")
            self._position[partition] = offset + 1
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            yield msg

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True)
class ReadEvent:
    key: str
    value: dict[str, Any]
    partition: int
    offset: int
    headers: dict[str, bytes]


def read_topic(
    kafka_config: KafkaConfig, registry: SchemaRegistryClient, topic: str
) -> list[ReadEvent]:
    deserializer = AvroDeserializer(registry)
    events = []
    for msg in scan_to_end(kafka_config, topic):
        value = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
        headers: dict[str, bytes] = {}
        for header in msg.headers() or []:
            name, raw = header[0], header[1]
            headers[str(name)] = raw if isinstance(raw, bytes) else str(raw or "").encode()
        events.append(
            ReadEvent(
                key=(msg.key() or b"").decode(),
                value=value,
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                headers=headers,
            )
        )
    return events


def latest_per_key(events: list[ReadEvent]) -> dict[str, dict[str, Any]]:
    """What a compacting consumer ends with: the last event per key (per-key order holds)."""
    return {e.key: e.value for e in events}
