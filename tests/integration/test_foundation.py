"""The foundation every integration test stands on: a real broker and schema registry.

Avro over the Confluent wire format through the real broker, compacted topic configs read
back from the broker, and the registry's compatibility rules.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import (
    MessageField,
    SerializationContext,
    StringDeserializer,
    StringSerializer,
)

from devstack import LocalStack
from producer.kafka.admin import describe_topic_config

CONTACT_V1: dict[str, Any] = {
    "type": "record",
    "name": "FoundationContact",
    "namespace": "ai.askelephant.test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "email", "type": ["null", "string"], "default": None},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}


def _create_topic(admin: AdminClient, topic: str, config: dict[str, str] | None = None) -> None:
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1, config=config or {})],
        operation_timeout=30,
    )
    futures[topic].result(timeout=30)


def _consume_one(consumer: Consumer, topic: str, timeout: float = 30.0) -> Any:
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        return message
    pytest.fail(f"no message on {topic} within {timeout}s")


def test_avro_record_round_trips_through_the_real_broker(
    local_stack: LocalStack, unique_topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": local_stack.bootstrap_servers})
    _create_topic(admin, unique_topic)
    record = {
        "id": "contact-42",
        "email": "ada@example.com",
        "updated_at": 1_700_000_000_123,
        "tags": ["vip", "beta"],
    }
    key_ctx = SerializationContext(unique_topic, MessageField.KEY)
    value_ctx = SerializationContext(unique_topic, MessageField.VALUE)

    with SchemaRegistryClient({"url": local_stack.schema_registry_url}) as registry:
        serializer = AvroSerializer(registry, json.dumps(CONTACT_V1))
        delivered: list[Any] = []
        producer = Producer(
            {"bootstrap.servers": local_stack.bootstrap_servers, "enable.idempotence": True}
        )
        producer.produce(
            unique_topic,
            key=StringSerializer("utf_8")("contact-42", key_ctx),
            value=serializer(record, value_ctx),
            on_delivery=lambda err, msg: delivered.append(err or msg),
        )
        assert producer.flush(30) == 0
        assert len(delivered) == 1
        assert not isinstance(delivered[0], Exception), delivered[0]

        # The serializer registered the schema under the topic-name strategy subject.
        latest = registry.get_latest_version(f"{unique_topic}-value")
        assert latest.version == 1
        assert json.loads(latest.schema.schema_str)["name"] == "FoundationContact"

    consumer = Consumer(
        {
            "bootstrap.servers": local_stack.bootstrap_servers,
            "group.id": f"foundation-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        message = _consume_one(consumer, unique_topic)
    finally:
        consumer.close()

    # A separate registry client, as a consumer elsewhere would have.
    with SchemaRegistryClient({"url": local_stack.schema_registry_url}) as reader_registry:
        value = AvroDeserializer(reader_registry)(message.value(), value_ctx)
    key = StringDeserializer("utf_8")(message.key(), key_ctx)
    assert key == "contact-42"
    assert value is not None
    value["updated_at"] = int(value["updated_at"].timestamp() * 1000)  # logical type decoded
    assert value == record
    assert message.value()[0] == 0  # Confluent wire format: magic byte, then schema id
    assert int.from_bytes(message.value()[1:5], "big") == latest.schema_id


def test_compacted_topic_config_is_read_back(local_stack: LocalStack, unique_topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": local_stack.bootstrap_servers})
    _create_topic(admin, unique_topic, {"cleanup.policy": "compact", "min.insync.replicas": "1"})

    # A broker answers UNKNOWN_TOPIC_OR_PART until a new topic's metadata reached it; the
    # helper waits for that (bounded) instead of describing too early.
    configs = describe_topic_config(admin, unique_topic)

    assert configs["cleanup.policy"].value == "compact"
    assert not configs["cleanup.policy"].is_default
    assert unique_topic in admin.list_topics(timeout=10).topics


def test_registry_enforces_backward_compatibility(local_stack: LocalStack) -> None:
    subject = f"foundation-compat-{uuid.uuid4().hex[:10]}-value"
    phone = {"name": "phone", "type": ["null", "string"], "default": None}
    v2 = {**CONTACT_V1, "fields": [*CONTACT_V1["fields"], phone]}
    v3 = {**CONTACT_V1, "fields": [*CONTACT_V1["fields"], {"name": "score", "type": "int"}]}

    with SchemaRegistryClient({"url": local_stack.schema_registry_url}) as registry:
        first = registry.register_schema(subject, Schema(json.dumps(CONTACT_V1), "AVRO"))
        # Registering the same schema again is idempotent.
        again = registry.register_schema(subject, Schema(json.dumps(CONTACT_V1), "AVRO"))
        assert again == first

        # A new optional field with a default is a BACKWARD compatible change.
        assert registry.test_compatibility(subject, Schema(json.dumps(v2), "AVRO"))
        second = registry.register_schema(subject, Schema(json.dumps(v2), "AVRO"))
        assert second != first
        assert registry.get_versions(subject) == [1, 2]

        # A new required field (no default) cannot read old data: rejected with HTTP 409.
        assert not registry.test_compatibility(subject, Schema(json.dumps(v3), "AVRO"))
        with pytest.raises(SchemaRegistryError) as excinfo:
            registry.register_schema(subject, Schema(json.dumps(v3), "AVRO"))
        assert excinfo.value.http_status_code == 409

        # Lookups by id and by schema agree.
        assert json.loads(registry.get_schema(second).schema_str)["fields"][-1]["name"] == "phone"
        found = registry.lookup_schema(subject, Schema(json.dumps(CONTACT_V1), "AVRO"))
        assert (found.schema_id, found.version) == (first, 1)
