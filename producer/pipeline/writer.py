"""The one writer: applies a run's items (producer/pipeline/driver.py) to a run sink.

Every path that writes change events goes through `RunWriter`, so each keeps the same
promises: a record that cannot become an event is a dead letter (or, under
`DEAD_LETTER_POLICY=fail`, the end of the run), never a silent drop; a version older than
its record's delete is suppressed, never published after the tombstone; Kafka's refusals are
dead-lettered before any mark or checkpoint moves past them; and nothing is marked or
committed before Kafka acknowledged every event before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

from producer.pipeline.build import EventBuilder, OutgoingEvent, Rejection
from producer.pipeline.dead_letters import DeadLetter, Origin
from producer.pipeline.deletes import DeleteGuard
from producer.pipeline.driver import Commit, Item, Mark, Publish, Reject
from producer.pipeline.ports import RunSink
from producer.sync.checkpoint import Checkpoint
from producer.sync.timestamps import from_micros

log = logging.getLogger(__name__)

PublishOutcome = Literal["published", "suppressed", "rejected"]
RejectionHook = Callable[[Rejection, Origin, "str | None", "str | None"], None]
DeadLetterPolicy = Literal["dead-letter", "fail"]
DEAD_LETTER_POLICIES: Final = ("dead-letter", "fail")


class RejectedRecordsError(RuntimeError):
    """A record could not become an event and DEAD_LETTER_POLICY=fail: the run fails."""


class WriterObserver(Protocol):
    """What the writer reports (a subset of `RunObserver`)."""

    def add_suppressed(self, resource: str, n: int = 1) -> None: ...

    def add_dead_lettered(self, resource: str, reason: str, n: int = 1) -> None: ...

    def checkpoint_committed(self, resource: str, watermark: datetime | None) -> None: ...

    def complete_up_to(self, resource: str, instant: datetime) -> None: ...


class RunWriter:
    """Applies the items of one run of one resource to its run sink."""

    def __init__(
        self,
        *,
        resource: str,
        run_id: str,
        sink: RunSink,
        builder: EventBuilder | None,
        deletes: DeleteGuard,
        observer: WriterObserver,
        producer_id: str,
        topic: str,
        dead_letter_policy: DeadLetterPolicy = "dead-letter",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_reject: RejectionHook | None = None,
    ) -> None:
        """`on_reject`: rejections go there instead of the dead-letter topic (redrive reports
        what still fails rather than dead-lettering it a second time)."""
        if dead_letter_policy not in DEAD_LETTER_POLICIES:
            raise ValueError(f"unknown dead-letter policy {dead_letter_policy!r}")
        self.resource = resource
        self.run_id = run_id
        self.sink = sink
        self.builder = builder
        self.deletes = deletes
        self.observer = observer
        self.producer_id = producer_id
        self.topic = topic
        self.dead_letter_policy = dead_letter_policy
        self._now = now
        self._on_reject = on_reject

    def apply_all(self, items: Iterable[Item]) -> None:
        for item in items:
            self.apply(item)

    def apply(self, item: Item) -> Checkpoint | None:
        """Apply one item; a `Commit` returns the checkpoint it committed (None: unchanged)."""
        if isinstance(item, Publish):
            self.publish(item)
        elif isinstance(item, Reject):
            self.reject(item.rejection, item.origin, item.record_id, item.updated_at)
        elif isinstance(item, Mark):
            self.settle_refusals()
            progress = item.progress(self.sink.acked, self._stamp())
            if progress is not None:
                self.sink.mark_progress(progress)
        else:
            return self.commit(item)
        return None

    def publish(self, item: Publish) -> PublishOutcome:
        """Build and publish one version: published, suppressed (older than its record's
        delete) or rejected (a dead letter)."""
        version = item.version
        if self.builder is None:
            raise TypeError(f"this writer of {self.resource} writes deletes only")
        built = self.builder.build(version, item.origin, item.context)
        # check and publish under one lock: a delete cannot land between them
        with self.deletes.holding(self.resource):
            if self.deletes.deleted_after(self.resource, version.record_id, version.instant):
                self._suppress(version.record_id, version.updated_at)
                return "suppressed"
            rejection = built if isinstance(built, Rejection) else self.sink.publish(built)
        if rejection is not None:
            self.reject(rejection, item.origin, version.record_id, version.updated_at)
            return "rejected"
        if version.stale:
            log.warning(
                "%s %s is older than the checkpoint (updated_at %s); published anyway",
                self.resource,
                version.record_id,
                version.updated_at,
                extra={"resource": self.resource, "record_id": version.record_id},
            )
        return "published"

    def delete(self, event: OutgoingEvent, slim: Callable[[OutgoingEvent], OutgoingEvent]) -> None:
        """A delete (the `op = "d"` event and its tombstone); one too large for its topic goes
        out with `before` cut to the id (`slim`): the key must be deleted all the same, and
        the full state is dead-lettered."""
        rejection = self.sink.delete(event)
        if rejection is not None:
            rejected = rejection
            rejection = self.sink.delete(slim(event))
            self.reject(rejected, event.origin, event.key, event.updated_at)
        if rejection is not None:
            raise RuntimeError(f"delete of {event.key} refused: {rejection.message}")

    def finish(self) -> None:
        """End a write that moves no checkpoint (a webhook delivery, a reconciliation, a
        redrive): every event acknowledged, refusals dead-lettered, then the sink closed
        without a commit: a commit would touch the lane's checkpoint and progress mark,
        which belong to its runs."""
        self.settle_refusals()
        self.sink.abort()

    def settle_refusals(self) -> None:
        """Wait until Kafka answered for every event so far; dead-letter what it refused."""
        for refusal in self.sink.drain():
            self.reject(refusal.rejection, refusal.origin, refusal.key, refusal.updated_at)

    def commit(self, item: Commit) -> Checkpoint | None:
        self.settle_refusals()
        run = item.run
        checkpoint = run.checkpoint_after(
            run_id=self.run_id, completed_at=self._stamp(), published=self.sink.acked
        )
        complete = None if run.horizon is None else from_micros(run.horizon)
        self.sink.commit(checkpoint, based_on=item.based_on, complete_up_to=complete)
        if complete is not None:
            self.observer.complete_up_to(self.resource, complete)
        if checkpoint is not None:
            newest = run.newest_instant
            self.observer.checkpoint_committed(
                self.resource, from_micros(newest) if newest is not None else None
            )
        return checkpoint

    def reject(
        self,
        rejection: Rejection,
        origin: Origin,
        record_id: str | None,
        updated_at: str | None,
    ) -> None:
        """A record that did not become an event: a dead letter, or the end of the run."""
        if self._on_reject is not None:
            self._on_reject(rejection, origin, record_id, updated_at)
            return
        where = (
            f"request {origin.request_id or 'n/a'}, page {origin.page}, position {origin.position}"
        )
        if self.dead_letter_policy == "fail":
            raise RejectedRecordsError(
                f"record {record_id or '(no id)'} of {self.resource} cannot be synced ({where}): "
                f"{rejection.reason}: {rejection.message} (DEAD_LETTER_POLICY=fail)"
            )
        self.sink.dead_letter(
            DeadLetter(
                resource=self.resource,
                reason=rejection.reason,
                message=rejection.message,
                value=origin.raw,
                run_id=self.run_id,
                producer_id=self.producer_id,
                topic=self.topic,
                request_id=origin.request_id,
                page=origin.page,
                position=origin.position,
                record_id=record_id,
                updated_at=updated_at,
                detail=rejection.detail,
            )
        )
        self.observer.add_dead_lettered(self.resource, rejection.reason)
        log.warning(
            "%s %s dead-lettered (%s): %s",
            self.resource,
            record_id or "(no id)",
            rejection.reason,
            rejection.message,
            extra={
                "event": "dead_letter",
                "resource": self.resource,
                "record_id": record_id,
                "reason": rejection.reason,
                "request_id": origin.request_id,
                "page": origin.page,
                "position": origin.position,
                **rejection.detail,
            },
        )

    def _suppress(self, record_id: str, updated_at: str) -> None:
        """No resurrection: this version was read before the record's delete reached Kafka."""
        self.observer.add_suppressed(self.resource)
        log.info(
            "%s %s (updated_at %s) was deleted since; this older version is not published",
            self.resource,
            record_id,
            updated_at,
            extra={
                "event": "suppressed_after_delete",
                "resource": self.resource,
                "record_id": record_id,
            },
        )

    def _stamp(self) -> str:
        return self._now().isoformat().replace("+00:00", "Z")
