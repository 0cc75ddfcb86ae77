"""Event values to bytes: the value schemas registered with the registry, and each event
encoded as the Confluent Avro serializer encodes it (magic byte, schema id, Avro body).

The compiled encoder (`producer.kafka.avro_encoder`) writes the same bytes at less than half
the cost (docs/performance.md); a schema or a value it does not vouch for stays with the
library's AvroSerializer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from producer.kafka.avro_encoder import (
    Encoder,
    NotCompilableError,
    NotEncodableError,
    compile_encoder,
)

log = logging.getLogger(__name__)


class EventSerde:
    """The value serializer of each resource's change topic (TopicNameStrategy subjects)."""

    def __init__(
        self,
        registry: SchemaRegistryClient,
        *,
        topics: Mapping[str, str],
        schemas: Mapping[str, str],
    ) -> None:
        """`topics` and `schemas` are keyed by resource (schema: Avro JSON of its events)."""
        self.registry = registry
        self._topics = dict(topics)
        self._schemas = dict(schemas)
        self._serializers: dict[str, AvroSerializer] = {}
        self._encoders: dict[str, Encoder] = {}

    def register_schemas(self) -> dict[str, int]:
        """Register every value schema (TopicNameStrategy); fail fast if incompatible."""
        ids: dict[str, int] = {}
        for resource, schema in self._schemas.items():
            subject = f"{self._topics[resource]}-value"
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

    def serialize(self, resource: str, value: Mapping[str, Any]) -> bytes:
        encode = self._encoders.get(resource)
        if encode is not None:
            try:
                return encode(value)
            except NotEncodableError:
                pass  # a value the compiled encoder does not vouch for: the library decides
        topic = self._topics[resource]
        payload = self._serializers[resource](
            value, SerializationContext(topic, MessageField.VALUE)
        )
        assert payload is not None
        return bytes(payload)
