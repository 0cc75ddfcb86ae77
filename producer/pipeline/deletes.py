"""PURE: delete events and the index of deleted ids that keeps pollers from resurrecting them.

A delete follows the Debezium convention (docs/events.md "Deletes"): an event with `op = "d"`,
`before` = the last known state and `after = null`, then a tombstone (same key, null value) so
that log compaction and key-value consumers drop the key.

`DeleteIndex` answers "was this id deleted at or after this version's `updated_at`?" for the
orchestrator (`producer.service`): a poll that read a record before its delete must not put
that older version after the tombstone. Entries expire after a retention (bounded memory).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Final, Protocol

from producer import schemas
from producer.events import (
    EVENT_ID_NAMESPACE,
    SYSTEM,
    RecordConformanceError,
    conform,
    unknown_fields_json,
)
from producer.pipeline.build import OutgoingEvent
from producer.pipeline.resource_locks import ResourceLocks
from producer.sync.timestamps import Micros, format_instant

DELETE_OP: Final = "d"
DELETE_SOURCES: Final = ("webhook", "reconcile")
"""How a delete was learnt: a verified `*.deleted` webhook, or reconciliation."""


def delete_event_id(resource: str, record_id: str, deleted_at_us: Micros) -> str:
    """Deterministic: a replayed delivery of one delete carries the same id. The `\\nd`
    suffix keeps it apart from the id of a change at the same instant."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{resource}\n{record_id}\n{deleted_at_us}\nd"))


def build_delete_event(
    resource: str,
    last_state: Mapping[str, Any],
    *,
    deleted_at_us: Micros,
    run_id: str,
    producer_id: str,
    api_version: str | None,
    now_ms: int,
    record_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `op = "d"` event of `last_state` (needs at least an `id`), deleted at `deleted_at_us`.

    `updated_at`/`updated_at_us` hold the instant of the delete (the webhook's `created_at`, or
    the start of the reconciliation that found the id gone): the version this event describes.
    Raises `RecordConformanceError` when `last_state` has no usable id.
    """
    schema = record_schema if record_schema is not None else schemas.record_schema(resource)
    record_id = last_state.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise RecordConformanceError("missing, empty or non-string id", resource=resource)
    before, unknown = conform(last_state, schema)
    return {
        "event_id": delete_event_id(resource, record_id, deleted_at_us),
        "op": DELETE_OP,
        "ts_ms": now_ms,
        "source": {
            "system": SYSTEM,
            "resource": resource,
            "api_version": api_version,
            "run_id": run_id,
            "snapshot": False,
            "producer_id": producer_id,
        },
        "id": record_id,
        "updated_at": format_instant(deleted_at_us),
        "updated_at_us": deleted_at_us,
        "before": before,
        "after": None,
        "unknown_fields": unknown_fields_json(unknown),
    }


def slim_delete(event: OutgoingEvent) -> OutgoingEvent:
    """The same delete with `before` cut to the id: what still fits when the full last state
    is larger than the topic accepts (the key must be deleted all the same)."""
    value = dict(event.value)
    before = value.get("before")
    value["before"] = {k: (v if k == "id" else None) for k, v in (before or {}).items()} or None
    value["unknown_fields"] = None
    return OutgoingEvent(event.key, value, event.updated_at, event.origin)


class DeleteGuard(Protocol):
    """What the orchestrator asks before publishing a polled version."""

    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool:
        """True when `record_id` was deleted at or after `instant_us` (its version is older
        than the delete: publishing it would resurrect the record)."""
        ...

    def holding(self, resource: str) -> AbstractContextManager[Any]:
        """A context manager: the check and the publish it guards happen under it, so a
        delete cannot slip between them. Per resource: a delete of one resource (which may
        wait for that resource's lane) never blocks another's publishes."""
        ...


@dataclass(frozen=True)
class DeleteEntry:
    deleted_at_us: Micros
    noted_at_us: Micros
    """When this producer learnt it (expiry runs on this clock)."""


class DeleteIndex:
    """Deleted ids (with the delete instant) and seen delivery ids, with expiry (thread-safe).

    `retention_us`: entries noted longer ago than this are dropped by `expire`; the deletes
    topic keeps them as long (`retention.ms`), so memory and topic are bounded alike.
    """

    def __init__(self, retention_us: Micros) -> None:
        self.retention_us = retention_us
        self._deleted: dict[tuple[str, str], DeleteEntry] = {}
        self._deliveries: dict[str, Micros] = {}
        self._lock = threading.Lock()
        """Guards the two dicts only, for the moment of a read or write: never held while
        anything waits for Kafka (that is the resources' guards, `holding`)."""
        self._guards = ResourceLocks()

    def __len__(self) -> int:
        with self._lock:
            return len(self._deleted)

    def holding(self, resource: str) -> AbstractContextManager[Any]:
        return self._guards.holding(resource)

    def note_deleted(
        self, resource: str, record_id: str, deleted_at_us: Micros, noted_at_us: Micros
    ) -> None:
        """Keep the latest delete instant of the id (deliveries may come out of order)."""
        with self._lock:
            known = self._deleted.get((resource, record_id))
            if known is None or deleted_at_us > known.deleted_at_us:
                self._deleted[(resource, record_id)] = DeleteEntry(deleted_at_us, noted_at_us)

    def forget(self, resource: str, record_id: str) -> None:
        with self._lock:
            self._deleted.pop((resource, record_id), None)

    def deleted_at(self, resource: str, record_id: str) -> Micros | None:
        with self._lock:
            entry = self._deleted.get((resource, record_id))
            return None if entry is None else entry.deleted_at_us

    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool:
        deleted = self.deleted_at(resource, record_id)
        return deleted is not None and deleted >= instant_us

    def note_delivery(self, delivery_id: str, noted_at_us: Micros) -> None:
        with self._lock:
            self._deliveries[delivery_id] = noted_at_us

    def seen_delivery(self, delivery_id: str) -> bool:
        with self._lock:
            return delivery_id in self._deliveries

    def expire(self, now_us: Micros) -> int:
        """Drop entries noted before `now_us - retention_us`; returns how many."""
        cutoff = now_us - self.retention_us
        with self._lock:
            old = [k for k, e in self._deleted.items() if e.noted_at_us < cutoff]
            for key in old:
                del self._deleted[key]
            stale = [d for d, at in self._deliveries.items() if at < cutoff]
            for delivery_id in stale:
                del self._deliveries[delivery_id]
            return len(old) + len(stale)


_NOTHING_HELD: Final = nullcontext()
"""Reusable (no state): no generator per published record."""


class NoDeletes:
    """The guard when nothing can delete (no receiver, no reconciliation)."""

    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool:
        return False

    def holding(self, resource: str) -> AbstractContextManager[None]:
        return _NOTHING_HELD
