"""The deletes topic: what the pollers must not resurrect and which deliveries were handled.

A compacted topic (`DELETES_TOPIC`, default `<TOPIC_PREFIX>deletes`) with two kinds of keys:

- `<producer id>/deleted/<resource>/<id>` -> `{"deleted_at_us", "deleted_at", "via"}`: the id
  was deleted at that instant (a verified webhook, or reconciliation);
- `<producer id>/delivery/<svix-id>` -> `{"noted_at_us"}`: that webhook delivery was handled
  (a replay publishes nothing new, also after a restart).

Start-up reads it to its end into a `DeleteIndex`; records older than `DELETES_RETENTION_DAYS`
are skipped there and removed from the topic by `retention.ms` (`cleanup.policy=compact,delete`),
so memory and topic stay bounded. Writes are confirmed before the caller answers Svix.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Final

from confluent_kafka import KafkaError, Producer

from producer.kafka import TIMEOUT_S
from producer.kafka.reader import scan_to_end
from producer.pipeline.deletes import DeleteIndex
from producer.sync.timestamps import Micros, format_instant

log = logging.getLogger(__name__)
DAY_US: Final = 86_400 * 1_000_000


class DeleteStoreError(RuntimeError):
    pass


def _now_us() -> Micros:
    return int(time.time() * 1_000_000)


class DeleteStore:
    """The `DeleteIndex` of this producer, kept in the deletes topic."""

    def __init__(
        self,
        kafka_config: Mapping[str, str | int | float | bool],
        topic: str,
        producer_id: str,
        producer: Producer,
        retention_days: float,
        clock_us: Callable[[], Micros] = _now_us,
    ) -> None:
        self.topic = topic
        self.producer_id = producer_id
        self._kafka_config = dict(kafka_config)
        self._producer = producer
        self._clock_us = clock_us
        self.index = DeleteIndex(int(retention_days * DAY_US))
        self._next_expiry_us = 0

    # the DeleteGuard port
    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool:
        return self.index.deleted_after(resource, record_id, instant_us)

    def holding(self, resource: str) -> AbstractContextManager[None]:
        return self.index.holding(resource)

    def load(self) -> int:
        """Read the topic to its end; returns the number of deleted ids kept."""
        prefix = f"{self.producer_id}/"
        now = self._clock_us()
        for msg in scan_to_end(self._kafka_config, self.topic):
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            if not key.startswith(prefix) or value is None:
                continue
            try:
                body = json.loads(value)
                noted = int(body["noted_at_us"])
                kind, _, rest = key[len(prefix) :].partition("/")
                if kind == "delivery":
                    self.index.note_delivery(rest, noted)
                elif kind == "deleted":
                    resource, _, record_id = rest.partition("/")
                    self.index.note_deleted(resource, record_id, int(body["deleted_at_us"]), noted)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "unreadable record %r in %s: %s (skipped)",
                    key,
                    self.topic,
                    exc,
                    extra={"topic": self.topic},
                )
        self.index.expire(now)
        return len(self.index)

    def expire(self) -> int:
        return self.index.expire(self._clock_us())

    def record_delete(self, resource: str, record_id: str, deleted_at_us: Micros, via: str) -> None:
        """Note the delete in memory at once (the guard), then write it and wait for Kafka."""
        noted = self._clock_us()
        self.index.note_deleted(resource, record_id, deleted_at_us, noted)
        body = {
            "deleted_at_us": deleted_at_us,
            "deleted_at": format_instant(deleted_at_us),
            "via": via,
            "noted_at_us": noted,
        }
        self._write(f"{self.producer_id}/deleted/{resource}/{record_id}", body)

    def record_delivery(self, delivery_id: str) -> None:
        noted = self._clock_us()
        self._expire_hourly(noted)
        self._write(f"{self.producer_id}/delivery/{delivery_id}", {"noted_at_us": noted})
        self.index.note_delivery(delivery_id, noted)

    def seen_delivery(self, delivery_id: str) -> bool:
        return self.index.seen_delivery(delivery_id)

    def _expire_hourly(self, now_us: Micros) -> None:
        """A long-running process forgets what is past the retention too (not only at start)."""
        if now_us >= self._next_expiry_us:
            self._next_expiry_us = now_us + 3_600_000_000
            self.index.expire(now_us)

    def _write(self, key: str, body: Mapping[str, object]) -> None:
        outcome: list[KafkaError | None] = []
        self._producer.produce(
            self.topic,
            key=key.encode(),
            value=json.dumps(body, sort_keys=True).encode(),
            on_delivery=lambda err, _msg: outcome.append(err),
        )
        deadline = time.monotonic() + TIMEOUT_S
        while not outcome and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not outcome:
            raise DeleteStoreError(f"{key} not confirmed by {self.topic}")
        if outcome[0] is not None:
            raise DeleteStoreError(f"{key} to {self.topic}: {outcome[0]}")
