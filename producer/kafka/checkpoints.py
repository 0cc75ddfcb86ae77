"""Checkpoints in a compacted Kafka topic, one record per `<producer id>/<resource>` key.

Start-up reads the topic to its end; the latest value per key wins. An unreadable value is an
error, never a silent restart from scratch. Writes go through the event producer (so a later
transactional mode can put a run's events and its checkpoint in one transaction) and are
confirmed before `commit` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, Producer

from producer.kafka.reader import scan_to_end
from producer.sync.checkpoint import Checkpoint, CheckpointFormatError

log = logging.getLogger(__name__)
TIMEOUT_S = 30.0


class CheckpointStoreError(RuntimeError):
    pass


class CheckpointStore:
    def __init__(
        self,
        kafka_config: Mapping[str, str | int | float | bool],
        topic: str,
        producer_id: str,
        producer: Producer,
    ) -> None:
        self.topic = topic
        self.producer_id = producer_id
        self._kafka_config = dict(kafka_config)
        self._producer = producer
        self._latest: dict[str, Checkpoint] = {}
        self.loaded = False

    def key_for(self, resource: str) -> str:
        return f"{self.producer_id}/{resource}"

    def load(self) -> dict[str, Checkpoint]:
        """Read the whole topic; return this producer's latest checkpoint per resource."""
        latest: dict[str, Checkpoint] = {}
        prefix = f"{self.producer_id}/"
        for msg in scan_to_end(self._kafka_config, self.topic):
            key = (msg.key() or b"").decode("utf-8", "replace")
            if not key.startswith(prefix):
                continue  # another producer's checkpoints share the topic
            resource, value = key[len(prefix) :], msg.value()
            if value is None:
                latest.pop(resource, None)  # tombstone
                continue
            where = f"{self.topic}[{msg.partition()}]@{msg.offset()}"
            try:
                checkpoint = Checkpoint.from_json(value)
            except CheckpointFormatError as exc:
                raise CheckpointFormatError(
                    f"checkpoint {key!r} at {where} is unreadable: {exc}. "
                    "Fix it with `askelephant-kafka reset`."
                ) from None
            if checkpoint.resource != resource:
                raise CheckpointFormatError(
                    f"checkpoint {key!r} at {where} names resource {checkpoint.resource!r}"
                )
            latest[resource] = checkpoint
        self._latest = latest
        self.loaded = True
        return dict(latest)

    def get(self, resource: str) -> Checkpoint | None:
        return self._latest.get(resource)

    def all(self) -> dict[str, Checkpoint]:
        return dict(self._latest)

    def commit(self, checkpoint: Checkpoint, timeout_s: float = 60.0) -> None:
        """Write and confirm a checkpoint; raise if Kafka does not acknowledge it."""
        outcome: list[KafkaError | None] = []
        self._producer.produce(
            self.topic,
            key=self.key_for(checkpoint.resource).encode(),
            value=checkpoint.to_json(),
            on_delivery=lambda err, _msg: outcome.append(err),
        )
        # Poll for this one record only: a flush() would also wait for every other
        # resource's events in flight on the shared producer.
        deadline = time.monotonic() + timeout_s
        while not outcome and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not outcome:
            raise CheckpointStoreError(f"checkpoint of {checkpoint.resource} not confirmed")
        if outcome[0] is not None:
            raise CheckpointStoreError(f"checkpoint of {checkpoint.resource}: {outcome[0]}")
        self._latest[checkpoint.resource] = checkpoint
