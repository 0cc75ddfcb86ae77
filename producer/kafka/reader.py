"""Reads a topic from the beginning to its current end.

`scan_to_end` serves the checkpoint store at start-up; `read_topic` decodes Avro values for
the demo and the tests (what downstream consumers see).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

TIMEOUT_S = 30.0
KafkaConfig = Mapping[str, str | int | float | bool]


class TopicReadError(RuntimeError):
    pass


def scan_to_end(kafka_config: KafkaConfig, topic: str) -> Iterator[Message]:
    """Every message of `topic` up to the end offsets seen when the scan starts."""
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"askelephant-reader-{uuid.uuid4()}",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise TopicReadError(f"topic {topic}: {metadata.error}")
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        ends: dict[int, int] = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
            if high > low:
                ends[tp.partition] = high
        consumer.assign(partitions)
        while ends:
            msg = consumer.poll(TIMEOUT_S)
            if msg is None:
                raise TopicReadError(f"timed out reading {topic}")
            error, partition, offset = msg.error(), msg.partition() or 0, msg.offset() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(partition, None)
                    continue
                raise TopicReadError(f"reading {topic}: {error}")
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            yield msg
    finally:
        consumer.close()


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
