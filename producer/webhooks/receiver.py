"""What one webhook delivery becomes: another source into the same pipeline.

    body + Svix headers ─► Verifier ─► parse_delivery ─► (dedup by svix-id) ─► RunSink
                                                             │
                                                 DeleteStore (deletes topic, no resurrection)

The answer to Svix is given only after Kafka acknowledged what the delivery produced, so a
2xx always means "in Kafka" and anything else is retried by Svix:

| outcome | status | when |
|---|---|---|
| published | 200 | a delete (op d + tombstone) or, with WEBHOOK_REALTIME, a c/u event is in Kafka |
| duplicate | 200 | this svix-id was handled before (a replay publishes nothing) |
| ignored | 200 | an event type we do not sync (transcript_timeline, a resource not in RESOURCES) |
| suppressed | 200 | a created/updated version older than the record's known delete |
| in_progress | 409 | another copy of this svix-id is being handled right now |
| bad_signature | 401 | missing Svix headers, no secret matches, or a stale/future timestamp |
| malformed | 400 | verified, but not an AskElephant envelope |
| error | 503 | Kafka did not acknowledge; nothing is marked handled |
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from producer.events import RecordConformanceError
from producer.pipeline.build import EventBuilder, OutgoingEvent, RunContext
from producer.pipeline.dead_letters import Origin
from producer.pipeline.deletes import build_delete_event, slim_delete
from producer.pipeline.driver import Publish
from producer.pipeline.ports import Sink
from producer.pipeline.writer import PublishOutcome, RunWriter, WriterObserver
from producer.sync.run import CLOCK_MARGIN_US, Identity, Unplaceable, Version, identify
from producer.sync.timestamps import Micros
from producer.webhooks.delivery import (
    BadSignatureError,
    Delivery,
    MalformedDeliveryError,
    Verifier,
    parse_delivery,
)

log = logging.getLogger(__name__)


class DeleteRecorder(Protocol):
    """What the receiver needs of the deletes store (`producer.kafka.deletes.DeleteStore`)."""

    def holding(self, resource: str) -> AbstractContextManager[None]:
        """As `producer.pipeline.deletes.DeleteGuard.holding` (the receiver names its resource)."""
        ...

    def deleted_after(self, resource: str, record_id: str, instant_us: Micros) -> bool: ...

    def seen_delivery(self, delivery_id: str) -> bool: ...

    def record_delivery(self, delivery_id: str) -> None: ...

    def record_delete(
        self, resource: str, record_id: str, deleted_at_us: Micros, via: str
    ) -> None: ...


class WebhookObserver(WriterObserver, Protocol):
    def webhook_delivery(self, outcome: str) -> None: ...

    def delete_published(self, resource: str, source: str) -> None: ...


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str
    message: str


class _SuppressedError(Exception):
    pass


class WebhookReceiver:
    def __init__(
        self,
        *,
        verifier: Verifier,
        sink: Sink,
        deletes: DeleteRecorder,
        observer: WebhookObserver,
        producer_id: str,
        resources: Collection[str],
        topic_for: Callable[[str], str],
        realtime: bool = False,
        clock: Callable[[], float] = time.time,
        settle_us: Micros = CLOCK_MARGIN_US,
    ) -> None:
        """`settle_us`: SETTLE_SECONDS, the margin a delete without the object's own
        `updated_at` is kept with against polled versions (`guard_instant`)."""
        self.verifier = verifier
        self.sink = sink
        self.deletes = deletes
        self.observer = observer
        self.producer_id = producer_id
        self.resources = frozenset(resources)
        self.topic_for = topic_for
        self.realtime = realtime
        self.clock = clock
        self.settle_us = settle_us
        self._builders = {r: EventBuilder(r, producer_id) for r in self.resources}
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            delivery_id = self.verifier.verify(body, headers)
        except BadSignatureError as exc:
            return self._answer(401, "bad_signature", f"signature not verified: {exc}")
        try:
            delivery = parse_delivery(delivery_id, body)
        except MalformedDeliveryError as exc:
            return self._answer(400, "malformed", f"delivery {delivery_id}: {exc}")
        wanted = delivery.action == "deleted" or self.realtime
        if delivery.resource not in self.resources or not wanted:
            return self._answer(200, "ignored", f"{delivery.event_type} is not synced")
        with self._inflight_lock:
            if delivery_id in self._inflight:
                return self._answer(409, "in_progress", f"{delivery_id} is being handled")
            if self.deletes.seen_delivery(delivery_id):
                return self._answer(200, "duplicate", f"{delivery_id} was handled before")
            self._inflight.add(delivery_id)
        try:
            outcome = self._apply(delivery, body)
        except MalformedDeliveryError as exc:
            return self._answer(400, "malformed", f"delivery {delivery_id}: {exc}")
        except Exception as exc:  # Kafka or the deletes topic: Svix delivers it again
            log.debug("webhook delivery %s failed", delivery_id, exc_info=True)
            return self._answer(503, "error", f"{delivery_id}: {type(exc).__name__}: {exc}")
        finally:
            with self._inflight_lock:
                self._inflight.discard(delivery_id)
        return self._answer(200, outcome, f"{delivery.event_type} {delivery_id}")

    def _answer(self, status: int, outcome: str, message: str) -> Answer:
        self.observer.webhook_delivery(outcome)
        level = logging.INFO if status < 300 else logging.WARNING
        log.log(
            level,
            "webhook delivery %s (%d): %s",
            outcome,
            status,
            message,
            extra={"event": "webhook_delivery", "outcome": outcome, "status": status},
        )
        return Answer(status, outcome, message)

    def _apply(self, delivery: Delivery, body: bytes) -> str:
        resource = delivery.resource
        assert resource is not None
        run_id = f"webhook:{delivery.delivery_id}"
        origin = Origin(delivery.delivery_id, 0, 0, [body])
        sink = self.sink.begin(resource, run_id)
        writer = RunWriter(
            resource=resource,
            run_id=run_id,
            sink=sink,
            builder=self._builders[resource],
            deletes=self.deletes,
            observer=self.observer,
            producer_id=self.producer_id,
            topic=self.topic_for(resource),
        )
        try:
            if delivery.action == "deleted":
                self._delete(writer, delivery, origin)
            elif self._change(writer, delivery, origin) == "suppressed":
                raise _SuppressedError
            writer.finish()  # acknowledged; refusals dead-lettered; no checkpoint touched
        except _SuppressedError:
            sink.abort()
            self.deletes.record_delivery(delivery.delivery_id)
            return "suppressed"
        except BaseException:
            sink.abort()
            raise
        self.deletes.record_delivery(delivery.delivery_id)
        if delivery.action == "deleted":
            self.observer.delete_published(resource, "webhook")
        return "published"

    def _delete(self, writer: RunWriter, delivery: Delivery, origin: Origin) -> None:
        resource = delivery.resource
        assert resource is not None
        try:
            event = build_delete_event(
                resource,
                delivery.object,
                deleted_at_us=delivery.created_at_us,
                run_id=writer.run_id,
                producer_id=self.producer_id,
                api_version=delivery.api_version,
                now_ms=int(self.clock() * 1000),
            )
        except RecordConformanceError as exc:
            raise MalformedDeliveryError(str(exc)) from None
        record_id = str(event["id"])
        outgoing = OutgoingEvent(record_id, event, str(event["updated_at"]), origin)
        # The delete is kept (memory and deletes topic) before its event goes out, under the
        # resource's lock the pollers check under: no older polled version can follow the
        # tombstone. Only this resource's: the delete may wait for its lane (bounded).
        guard = guard_instant(delivery, self.settle_us)
        with self.deletes.holding(resource):
            self.deletes.record_delete(resource, record_id, guard, "webhook")
            writer.delete(outgoing, slim_delete)

    def _change(self, writer: RunWriter, delivery: Delivery, origin: Origin) -> PublishOutcome:
        """A realtime change (WEBHOOK_REALTIME): published like a polled version."""
        identity = identify(delivery.object)
        if isinstance(identity, Unplaceable):
            raise MalformedDeliveryError(identity.message)
        version = Version(
            delivery.object, identity.record_id, identity.updated_at, identity.instant
        )
        context = RunContext(writer.run_id, False, delivery.api_version, int(self.clock() * 1000))
        return writer.publish(Publish(version, origin, context))


def guard_instant(delivery: Delivery, settle_us: Micros) -> Micros:
    """The instant up to which polled versions of a deleted record are older than its delete.

    Like is compared with like (issue 17, failure 5): a polled `updated_at` comes from the
    API's database clock, the envelope's `created_at` from the webhook sender's. Where the
    deleted object carries its own `updated_at` (the database's clock), every version up to
    it is the deleted one or older; the envelope's instant is kept too, since a record is
    never updated after its delete. Without it, only the other clock is known, so the
    settle margin is added: a skew of up to SETTLE_SECONDS cannot let an old version follow
    the tombstone."""
    stamped = delivery.object.get("updated_at")
    if isinstance(stamped, str):
        identity = identify({"id": "-", "updated_at": stamped})
        if isinstance(identity, Identity):
            return max(identity.instant, delivery.created_at_us)
    return delivery.created_at_us + settle_us
