"""Operators' view of the dead-letter topic: counts, and redrive after a fix or an upgrade.

Redrive reads the dead letters (of this producer id, optionally one resource and reason), runs
each record through the pipeline again (identify -> EventBuilder -> RunSink) and publishes
what now converts. It never puts a version on a change topic that is older than, or the same
as, the one already there: it first reads the change topic's newest `updated_at_us` per key
of the candidates. So a second redrive publishes nothing new, and a record updated (and
published) since it was dead-lettered is skipped as stale. Dead letters stay where they are
(Kafka cannot delete single records); what is still failing is reported, not re-lettered.

Deleted records stay deleted (issue 17, failure 4): a letter is skipped when the record was
deleted at or after its version, by the deletes topic (`DeleteGuard`), or when the change
topic's last word on its key is a tombstone (after compaction that is all that is left of
the delete there).

Redrive never takes a lane from a running `run` (issue 17, failure 3): it writes through the
shared idempotent producer under no transactional id (`KafkaSink.begin_direct`), so it fences
nobody, and it never writes or clears a checkpoint or progress mark. A redrive that crashes
is simply run again: what it published is on the change topic and is skipped the second time.
The narrow race left: a poll publishing a newer version between redrive's read of the change
topic and its publish (run it while `run` is stopped for that resource to rule it out).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from producer.config import Settings
from producer.kafka.deletes import DeleteStore
from producer.kafka.reader import KafkaConfig, TopicReadError, scan_to_end
from producer.pipeline.build import EventBuilder, Rejection, RunContext
from producer.pipeline.dead_letters import DeadLetter, Origin
from producer.pipeline.deletes import DeleteGuard, NoDeletes
from producer.pipeline.driver import Publish
from producer.pipeline.ports import Sink
from producer.pipeline.writer import RunWriter
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


def load_deletes(settings: Settings, producer: Producer) -> DeleteGuard | None:
    """The deleted ids this producer keeps in its deletes topic; None when there is none."""
    store = DeleteStore(
        settings.kafka_config(),
        settings.deletes_topic,
        settings.producer_id,
        producer,
        settings.deletes_retention_days,
    )
    try:
        store.load()
    except TopicReadError as exc:
        if "UNKNOWN_TOPIC" in str(exc):
            return None
        raise
    return store


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


TOMBSTONED: Final = sys.maxsize
"""`newest_versions` of a key whose last message is a tombstone: deleted, at an instant
compaction may have erased; no dead-lettered version of it is newer."""


def newest_versions(
    kafka_config: KafkaConfig, registry: SchemaRegistryClient, topic: str, keys: set[str]
) -> dict[str, int]:
    """Newest `updated_at_us` per key on a change topic, for `keys` only (`TOMBSTONED` for a
    key whose last message is a tombstone)."""
    deserializer = AvroDeserializer(registry)
    newest: dict[str, int] = {}
    context = SerializationContext(topic, MessageField.VALUE)
    tombstoned: set[str] = set()
    for msg in scan_to_end(kafka_config, topic):
        key = (msg.key() or b"").decode("utf-8", "replace")
        if key not in keys:
            continue
        if msg.value() is None:
            tombstoned.add(key)
            continue
        tombstoned.discard(key)
        event = deserializer(msg.value(), context)
        value = event["updated_at_us"]  # timestamp-micros: fastavro reads a datetime
        instant = to_micros(value) if isinstance(value, datetime) else int(value)
        newest[key] = max(instant, newest.get(key, instant))
    for key in tombstoned:
        newest[key] = TOMBSTONED
    return newest


def redrive(
    letters: Iterable[DeadLetter],
    *,
    sink: Sink,
    topic_for: Mapping[str, str],
    producer_id: str,
    newest_on_topic: Mapping[str, Mapping[str, int]],
    now_ms: int,
    deletes: DeleteGuard | None = None,
) -> RedriveReport:
    """Publish what now converts (see the module docstring). `newest_on_topic`: per resource,
    the newest `updated_at_us` per key already on its change topic; `deletes`: the deleted
    ids (the deletes topic). `sink` must not be a lane's: pass `begin_direct` sinks."""
    guard = deletes or NoDeletes()
    report = RedriveReport()
    candidates = latest_letter_per_record(letters, report)
    run_id = f"redrive-{uuid.uuid4()}"
    for resource, by_id in sorted(candidates.items()):
        if resource not in topic_for:
            report.still_failing[(resource, "unknown_resource")] += len(by_id)
            continue
        failing = _StillFailing(report, resource)
        writer = RunWriter(
            resource=resource,
            run_id=run_id,
            sink=sink.begin(resource, run_id),
            builder=EventBuilder(resource, producer_id),
            deletes=guard,
            observer=_UNOBSERVED,
            producer_id=producer_id,
            topic=topic_for[resource],
            on_reject=failing,
        )
        try:
            _redrive_resource(writer, failing, by_id, newest_on_topic.get(resource, {}), now_ms)
        except BaseException:
            writer.sink.abort()
            raise
    return report


class _StillFailing:
    """Rejections are reported, not dead-lettered again (module docstring)."""

    def __init__(self, report: RedriveReport, resource: str) -> None:
        self.report, self.resource = report, resource
        self.draining = False
        """Set for Kafka's refusals at the end: those were counted as published first."""

    def __call__(self, rejection: Rejection, *_: object) -> None:
        self.report.still_failing[(self.resource, rejection.reason)] += 1
        if self.draining:
            self.report.published[self.resource] -= 1


def _redrive_resource(
    writer: RunWriter,
    failing: _StillFailing,
    by_id: Mapping[str, tuple[DeadLetter, Identity]],
    on_topic: Mapping[str, int],
    now_ms: int,
) -> None:
    resource, report = writer.resource, failing.report
    context = RunContext(writer.run_id, snapshot=False, api_version=None, now_ms=now_ms)
    for record_id, (letter, identity) in sorted(by_id.items()):
        if on_topic.get(record_id, -1) >= identity.instant:
            report.skipped[resource] += 1
            continue
        record = json.loads(letter.value)
        version = Version(record, record_id, identity.updated_at, identity.instant)
        origin = Origin(letter.request_id, letter.page, letter.position, [letter.value])
        outcome = writer.publish(Publish(version, origin, context))
        if outcome == "published":
            report.published[resource] += 1
        elif outcome == "suppressed":  # deleted since (the deletes topic)
            report.skipped[resource] += 1
    failing.draining = True
    writer.finish()  # acknowledged; no checkpoint or progress mark touched


class _Unobserved:
    """Redrive runs as a command: its outcome is the printed report, not metrics."""

    def add_suppressed(self, resource: str, n: int = 1) -> None:
        return None

    def add_dead_lettered(self, resource: str, reason: str, n: int = 1) -> None:
        return None

    def checkpoint_committed(self, resource: str, watermark: datetime | None) -> None:
        return None

    def complete_up_to(self, resource: str, instant: datetime) -> None:
        return None


_UNOBSERVED: Final = _Unobserved()


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
