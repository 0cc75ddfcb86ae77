"""Operators' view of the dead-letter topic: counts, and redrive after a fix or an upgrade.

Redrive reads the dead letters (of this producer id, optionally one resource and reason), runs
each record through the pipeline again (identify -> EventBuilder -> RunSink) and publishes
what now converts. It never puts a version on a change topic that is older than, or the same
as, the one already there: it first reads the change topic's newest `updated_at_us` per key
of the candidates. So a second redrive publishes nothing new, and a record updated (and
published) since it was dead-lettered is skipped as stale. Dead letters stay where they are
(Kafka cannot delete single records); what is still failing is reported, not re-lettered.

Run it while `run` is stopped for that resource, or accept the narrow race of a poll
publishing a newer version between redrive's read of the change topic and its publish.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from producer.kafka.reader import KafkaConfig, TopicReadError, scan_to_end
from producer.pipeline.build import EventBuilder, Rejection, RunContext
from producer.pipeline.dead_letters import DeadLetter, Origin
from producer.pipeline.ports import Sink
from producer.sync.run import Identity, Unplaceable, Version, identify
from producer.sync.timestamps import to_micros


def read_dead_letters(kafka_config: KafkaConfig, topic: str) -> list[DeadLetter]:
    """Every dead letter on `topic`; none when the topic does not exist (nothing is created)."""
    try:
        return [
            DeadLetter.from_message(msg.value(), msg.headers())
            for msg in scan_to_end(kafka_config, topic)
        ]
    except TopicReadError as exc:
        if "UNKNOWN_TOPIC" in str(exc):
            return []
        raise


def count_by_resource_and_reason(letters: Iterable[DeadLetter]) -> dict[tuple[str, str], int]:
    counts = Counter((letter.resource, letter.reason) for letter in letters)
    return dict(sorted(counts.items()))


@dataclass
class RedriveReport:
    published: Counter[str] = field(default_factory=Counter)
    """Per resource: events now on the change topic."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Per resource: the change topic already holds this version or a newer one."""
    still_failing: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Per (resource, reason): records that still cannot become events."""


def newest_versions(
    kafka_config: KafkaConfig, registry: SchemaRegistryClient, topic: str, keys: set[str]
) -> dict[str, int]:
    """Newest `updated_at_us` per key on a change topic, for `keys` only."""
    deserializer = AvroDeserializer(registry)
    newest: dict[str, int] = {}
    context = SerializationContext(topic, MessageField.VALUE)
    for msg in scan_to_end(kafka_config, topic):
        key = (msg.key() or b"").decode("utf-8", "replace")
        if key not in keys or msg.value() is None:
            continue
        event = deserializer(msg.value(), context)
        value = event["updated_at_us"]  # timestamp-micros: fastavro reads a datetime
        instant = to_micros(value) if isinstance(value, datetime) else int(value)
        newest[key] = max(instant, newest.get(key, instant))
    return newest


def redrive(
    letters: Iterable[DeadLetter],
    *,
    sink: Sink,
    topic_for: Mapping[str, str],
    producer_id: str,
    newest_on_topic: Mapping[str, Mapping[str, int]],
    now_ms: int,
) -> RedriveReport:
    """Publish what now converts (see the module docstring). `newest_on_topic`: per resource,
    the newest `updated_at_us` per key already on its change topic."""
    report = RedriveReport()
    candidates = latest_letter_per_record(letters, report)
    run_id = f"redrive-{uuid.uuid4()}"
    for resource, by_id in sorted(candidates.items()):
        if resource not in topic_for:
            report.still_failing[(resource, "unknown_resource")] += len(by_id)
            continue
        run = sink.begin(resource, run_id)
        builder = EventBuilder(resource, producer_id)
        context = RunContext(run_id, snapshot=False, api_version=None, now_ms=now_ms)
        on_topic = newest_on_topic.get(resource, {})
        for record_id, (letter, identity) in sorted(by_id.items()):
            if on_topic.get(record_id, -1) >= identity.instant:
                report.skipped[resource] += 1
                continue
            record = json.loads(letter.value)
            version = Version(record, record_id, identity.updated_at, identity.instant)
            origin = Origin(letter.request_id, letter.page, letter.position, [letter.value])
            built = builder.build(version, origin, context)
            rejection = built if isinstance(built, Rejection) else run.publish(built)
            if rejection is not None:
                report.still_failing[(resource, rejection.reason)] += 1
            else:
                report.published[resource] += 1
        run.commit(None, based_on=None)  # every event acknowledged, no checkpoint involved
    return report


def latest_letter_per_record(
    letters: Iterable[DeadLetter], report: RedriveReport
) -> dict[str, dict[str, tuple[DeadLetter, Identity]]]:
    """Per resource and record id, the newest dead-lettered version that can be placed; the
    others are counted as still failing (no id, no usable `updated_at`, not an object)."""
    chosen: dict[str, dict[str, tuple[DeadLetter, Identity]]] = {}
    for letter in letters:
        try:
            record: object = json.loads(letter.value)
        except ValueError:
            report.still_failing[(letter.resource, "not_json")] += 1
            continue
        identity = identify(record)
        if isinstance(identity, Unplaceable):
            report.still_failing[(letter.resource, identity.reason)] += 1
            continue
        by_id = chosen.setdefault(letter.resource, {})
        known = by_id.get(identity.record_id)
        if known is not None:
            report.skipped[letter.resource] += 1  # an older version of the same record
            if known[1].instant >= identity.instant:
                continue
        by_id[identity.record_id] = (letter, identity)
    return chosen
