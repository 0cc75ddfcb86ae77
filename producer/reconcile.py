"""Reconciliation: deletes that no webhook announced (users have none; a delivery can be lost).

One reconciliation of one resource, holding that resource's run lock (no incremental run of it
goes on meanwhile, so nothing the producer publishes can appear or move under it):

1. list every id the API has now (one full ascending traversal; docs/askelephant-api.md §4.5:
   a record updated while the listing runs moves to the end of an `updated_at:asc` keyset
   traversal, so it is listed later, never skipped);
2. scan the change topic to its current end: for each key the listing did not have, whether
   its last message is a live version (not a tombstone) and that version's bytes; a version
   newer than the listing's start (a realtime webhook meanwhile) is left alone;
3. every key whose last message is live and whose id the API no longer lists gets an `op = "d"`
   event (before = its last version's `after`) and a tombstone; the delete is kept in the
   deletes topic at the listing's start instant, so no older version comes back.

Memory: the API's ids are kept as 64-bit hashes in a set (about 70 bytes per id: 1 M ids ≈
70 MB); topic keys are kept only when their hash is not among the listed ids (the deleted ones),
with the bytes of their last version. A hash collision can only hide a delete until the next
reconciliation with other ids, never invent one. The cost of each run (API requests, keys
scanned, seconds) is logged and counted in `reconcile_*` metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from producer.kafka.listings import Listing
from producer.pipeline.build import OutgoingEvent
from producer.pipeline.dead_letters import Origin
from producer.pipeline.deletes import build_delete_event, slim_delete
from producer.pipeline.ports import Sink, Source, TraversalInterruptedError
from producer.pipeline.writer import RunWriter, WriterObserver
from producer.sync.run import TraversalError
from producer.sync.timestamps import Micros, instant_micros, to_micros

log = logging.getLogger(__name__)


class KeyScanner(Protocol):
    def __call__(self, topic: str) -> Iterator[tuple[str, bytes | None]]:
        """(key, value) of every message of `topic` up to its end now, in offset order."""
        ...


class Decoder(Protocol):
    def __call__(self, topic: str, value: bytes) -> Mapping[str, Any]:
        """The change event of an Avro value of `topic`."""
        ...


class DeleteKeeper(Protocol):
    def holding(self, resource: str) -> AbstractContextManager[None]: ...

    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool: ...

    def record_delete(
        self, resource: str, record_id: str, deleted_at_us: Micros, via: str
    ) -> None: ...


class ListingKeeper(Protocol):
    """The last finished listing per resource (producer/kafka/listings.py)."""

    def load(self, resource: str) -> Listing | None: ...

    def save(self, resource: str, ids: Iterable[str], listed_at_us: Micros) -> None: ...


class ReconcileObserver(WriterObserver, Protocol):
    def reconciled(self, resource: str, outcome: str, requests: int, seconds: float) -> None: ...

    def delete_published(self, resource: str, source: str) -> None: ...


@dataclass
class ReconcileReport:
    resource: str
    outcome: str
    """success, failure, interrupted (stopped) or busy (an incremental run held the resource)"""
    requests: int = 0
    listed: int = 0
    keys_scanned: int = 0
    deleted: list[str] | None = None
    seconds: float = 0.0
    error: str | None = None


def _hash(record_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "big")


class Reconciler:
    def __init__(
        self,
        *,
        source_for: Callable[[str], Source],
        scan: KeyScanner,
        decode: Decoder,
        sink: Sink,
        deletes: DeleteKeeper,
        observer: ReconcileObserver,
        run_lock: Callable[[str], threading.Lock],
        topic_for: Callable[[str], str],
        producer_id: str,
        clock: Callable[[], float] = time.time,
        listings: ListingKeeper | None = None,
    ) -> None:
        """`listings`: where the last finished listing is kept, so that a record whose
        change-topic history has expired is still found deleted (None: the topic alone)."""
        self.source_for = source_for
        self.scan = scan
        self.decode = decode
        self.sink = sink
        self.deletes = deletes
        self.observer = observer
        self.run_lock = run_lock
        self.topic_for = topic_for
        self.producer_id = producer_id
        self.clock = clock
        self.listings = listings

    def reconcile(self, resource: str, *, wait_s: float = 0.0) -> ReconcileReport:
        """One reconciliation; "busy" when a run of `resource` holds it longer than `wait_s`."""
        lock = self.run_lock(resource)
        acquired = lock.acquire(timeout=wait_s) if wait_s > 0 else lock.acquire(blocking=False)
        if not acquired:
            return ReconcileReport(resource, "busy")
        started = self.clock()
        report = ReconcileReport(resource, "failure", deleted=[])
        try:
            self._reconcile(resource, report)
            report.outcome = "success"
        except TraversalInterruptedError:
            report.outcome = "interrupted"
            report.error = "stopped before the listing finished; nothing deleted"
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            log.debug("reconciliation of %s failed", resource, exc_info=True)
        finally:
            lock.release()
            report.seconds = self.clock() - started
            self.observer.reconciled(resource, report.outcome, report.requests, report.seconds)
            log.info(
                "reconciliation of %s: %s, %d id(s) listed in %d request(s), %d message(s) "
                "scanned, %d delete(s), %.1fs%s",
                resource,
                report.outcome,
                report.listed,
                report.requests,
                report.keys_scanned,
                len(report.deleted or []),
                report.seconds,
                f": {report.error}" if report.error else "",
                extra={
                    "event": "reconcile",
                    "resource": resource,
                    "outcome": report.outcome,
                    "requests": report.requests,
                    "listed": report.listed,
                    "scanned": report.keys_scanned,
                    "deletes": len(report.deleted or []),
                    "duration_s": round(report.seconds, 3),
                },
            )
        return report

    def _reconcile(self, resource: str, report: ReconcileReport) -> None:
        topic = self.topic_for(resource)
        # 1. what the API has now
        listing_started_us = to_micros_now(self.clock)
        listed: set[int] = set()
        listed_ids: set[str] = set()  # kept for the next reconciliation (`listings`)
        finished = False
        for page in self.source_for(resource).pages(None):
            report.requests += 1
            if report.requests == 1 and page.server_date is not None:
                listing_started_us = to_micros(page.server_date)  # the API's clock
            for record in page.records:
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    listed.add(_hash(record["id"]))
                    if self.listings is not None:
                        listed_ids.add(record["id"])
            if not page.has_more:
                finished = True
                break
        if not finished:
            # Only a finished listing proves absence: every id it did not reach would be
            # deleted (issue 17, failure 1). A source that stops raises; one that just
            # ends early is caught here.
            raise TraversalError(
                f"{resource}: the listing ended before has_more was false; no delete is "
                "inferred from a partial listing"
            )
        report.listed = len(listed)
        # 2. what the stream knows, kept only for keys the API did not list
        known: dict[str, bytes | None] = {}
        for key, value in self.scan(topic):
            report.keys_scanned += 1
            if _hash(key) not in listed:
                known[key] = value
        # 3. live keys the API no longer lists, and ids of the previous listing that neither
        # the API nor the change topic has any more (history past the topic's retention)
        gone: list[str] = [k for k, v in known.items() if v is not None]
        previous = self.listings.load(resource) if self.listings is not None else None
        if previous is not None:
            gone += sorted(
                record_id
                for record_id in previous.ids
                if _hash(record_id) not in listed
                and record_id not in known
                and not self.deletes.deleted_after(resource, record_id, previous.listed_at_us)
            )
        if gone:
            report.deleted = self._delete(resource, topic, gone, known, listing_started_us)
        if self.listings is not None:
            # after the deletes were acknowledged: a crash before this repeats none of them
            # (the change topic then holds their tombstones)
            self.listings.save(resource, listed_ids, listing_started_us)

    def _delete(
        self,
        resource: str,
        topic: str,
        gone: list[str],
        known: Mapping[str, bytes | None],
        listing_started_us: Micros,
    ) -> list[str]:
        """Delete events and tombstones of `gone`; returns the ids deleted."""
        run_id = f"reconcile:{uuid.uuid4()}"
        sink = self.sink.begin(resource, run_id)
        writer = RunWriter(
            resource=resource,
            run_id=run_id,
            sink=sink,
            builder=None,  # deletes only: a delete event is built from the last state
            deletes=self.deletes,
            observer=self.observer,
            producer_id=self.producer_id,
            topic=topic,
        )
        try:
            deleted_now: list[str] = []
            for record_id in gone:
                raw = known.get(record_id)
                last = self.decode(topic, raw) if raw is not None else {}
                last_state = last.get("after") or {"id": record_id}
                version = last.get("updated_at")
                if isinstance(version, str) and instant_micros(version) > listing_started_us:
                    # published after the listing began (a realtime webhook): not provably gone
                    continue
                event = build_delete_event(
                    resource,
                    last_state,
                    deleted_at_us=listing_started_us,
                    run_id=run_id,
                    producer_id=self.producer_id,
                    api_version=None,
                    now_ms=int(self.clock() * 1000),
                )
                origin = Origin(None, 0, 0, [raw or json.dumps(last_state).encode()])
                outgoing = OutgoingEvent(record_id, event, str(event["updated_at"]), origin)
                with self.deletes.holding(resource):
                    self.deletes.record_delete(resource, record_id, listing_started_us, "reconcile")
                    writer.delete(outgoing, slim_delete)
                deleted_now.append(record_id)
            writer.finish()  # acknowledged; no checkpoint or progress mark touched
        except BaseException:
            sink.abort()
            raise
        for _ in deleted_now:
            self.observer.delete_published(resource, "reconcile")
        return deleted_now

    def run_forever(self, resource: str, interval_s: float, stop: threading.Event) -> None:
        """Reconcile every `interval_s` (the first one after one interval) until `stop`."""
        while not stop.wait(interval_s):
            report = self.reconcile(resource, wait_s=min(interval_s, 60.0))
            if report.outcome == "busy":
                log.info("reconciliation of %s skipped: a sync run holds it", resource)


def to_micros_now(clock: Callable[[], float]) -> Micros:
    return int(clock() * 1_000_000)
