"""Exactly-once lanes: a transactional producer per resource, and the run sink that writes
each batch of a run as one transaction, committed or aborted as librdkafka documents it.

A lane's `transactional.id` is stable per resource, so a restarted (or second) instance
initialising it aborts what the previous holder left open and fences that holder
(`producer.kafka.fencing`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producer.kafka.fencing import is_fenced, transactional
from producer.kafka.publisher import (
    DRAIN_TIMEOUT_S,
    PRODUCER_DEFAULTS,
    PRODUCER_REQUIRED,
    DeliveryError,
    KafkaRunSink,
)
from producer.pipeline.ports import Refusal
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress

if TYPE_CHECKING:  # the sink picks this run sink for its lanes; only its type is needed here
    from producer.kafka.sink import KafkaSink

log = logging.getLogger(__name__)

TRANSACTION_COMMIT_S: Final = 60.0
COMMIT_ATTEMPTS: Final = 3
"""A commit that times out is tried again this often before the transaction is aborted."""


def new_transactional_producer(
    kafka_config: Mapping[str, str | int | float | bool],
    *,
    transactional_id: str,
    message_max_bytes: int,
    transaction_timeout_s: float,
) -> Producer:
    """A lane's producer in exactly-once mode (`transactional.id` stable per lane)."""
    transaction_ms = int(transaction_timeout_s * 1000)
    config = {**PRODUCER_DEFAULTS, "message.max.bytes": str(message_max_bytes), **kafka_config}
    # librdkafka requires a message's delivery timeout to fit in its transaction's
    delivery_ms = min(int(config.get("delivery.timeout.ms", transaction_ms)), transaction_ms)
    return Producer(
        {
            **config,
            **PRODUCER_REQUIRED,
            "delivery.timeout.ms": str(delivery_ms),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": str(transaction_ms),
        }
    )


def open_lane(new_lane: Callable[[str], Producer], resource: str, timeout_s: float) -> Producer:
    """A new producer for `resource`'s lane, its transactions initialised.

    Initialising a transactional id aborts what a previous holder left open and fences that
    holder: a second instance started with the same PRODUCER_ID takes the lanes over, and the
    first one's next transactional call fails with `LaneFencedError`.
    """
    lane = new_lane(resource)
    transactional(functools.partial(lane.init_transactions, timeout_s), resource)
    return lane


class TransactionalRunSink(KafkaRunSink):
    """Exactly-once: the run's lane producer writes each batch of pages (events, dead letters
    and the progress mark) as one transaction; the last one holds the final events, the new
    checkpoint and the progress tombstone. Consumers with isolation.level=read_committed see
    a batch whole or not at all, so a run killed mid-batch leaves nothing visible twice."""

    def __init__(self, sink: KafkaSink, resource: str, run_id: str, producer: Producer) -> None:
        super().__init__(sink, resource, run_id, producer)
        self._begin(producer)

    def _begin(self, producer: Producer) -> None:
        try:
            transactional(producer.begin_transaction, self.resource)
        except KafkaException as exc:  # a lane that cannot begin makes no progress
            raise DeliveryError(
                f"cannot begin a transaction of {self.resource}: {exc.args[0]}"
            ) from exc
        self._open = True

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> list[Refusal]:
        """A refusal by the broker leaves the transaction abortable (librdkafka): nothing
        more can be written in it, not even the dead letter. The batch fails here; its size
        is learnt (`KafkaSink.refused_sizes`), so the retried batch dead-letters the event
        before sending it and goes through."""
        refused = super().drain(timeout_s)
        if refused:
            self.abort()
            sizes = ", ".join(r.rejection.detail.get("size", "?") for r in refused)
            raise DeliveryError(
                f"{self.resource}: Kafka refused {len(refused)} event(s) as too large "
                f"({sizes} bytes); the transaction is aborted and the retried batch "
                "dead-letters them before sending"
            )
        return refused

    def mark_progress(self, progress: Progress) -> None:
        self._check_open()
        if self.drain():
            raise DeliveryError("refused event(s) were neither sent nor dead-lettered")
        store = self._sink.checkpoints
        # a large mark comes as chunks and a main record: all in this transaction, so a
        # reader sees them all or none
        for key, value in store.progress_records(progress):
            self._produce_record(store.topic, key, value)
        self._commit_transaction()
        store.remember_progress(self.resource, progress)
        store.sweep_chunks()  # the chunks of the mark this one replaced
        self._begin(self._producer)

    def commit(
        self,
        checkpoint: Checkpoint | None,
        *,
        based_on: Checkpoint | None,
        complete_up_to: datetime | None = None,
    ) -> None:
        self._check_open()
        if self.drain():
            raise DeliveryError("refused event(s) were neither sent nor dead-lettered")
        store = self._sink.checkpoints
        stored: Checkpoint | None = None
        if checkpoint is not None:
            store.check_unchanged(self.resource, based_on)
            # a boundary of any size: chunks and the main record in this one transaction
            records, stored = store.records_for(checkpoint, based_on)
            for key, value in records:
                self._produce_record(store.topic, key, value)
        had_progress = store.progress(self.resource) is not None
        if had_progress:
            self._produce_record(store.topic, store.progress_key(self.resource), None)
        self._commit_transaction()
        self._closed = True
        if stored is not None:
            store.remember(stored)
        store.remember_progress(self.resource, None)
        store.sweep_chunks()  # those of the checkpoint and mark this commit replaced
        if complete_up_to is not None and self._sink.heartbeat_topic:
            self._heartbeat(checkpoint or based_on, complete_up_to)

    def abort(self) -> None:
        self._closed = True
        if not self._open:
            return
        self._open = False
        try:
            # bounded: a stopping service must not wait long; what is left open is aborted by
            # the next init_transactions of this lane anyway
            self._producer.abort_transaction(5.0)
        except KafkaException as exc:
            if self._fenced is not None or is_fenced(exc.args[0]):
                return  # the lane belongs to another instance now: never take it back
            log.warning(
                "could not abort the transaction of %s: %s; reopening its lane (which aborts "
                "what was left open)",
                self.resource,
                exc,
                extra={"component": "kafka", "resource": self.resource},
            )
            self._sink.reopen_lane(self.resource)

    def _produce_record(self, topic: str, key: bytes, value: bytes | None) -> None:
        # no delivery callback of its own: a record that fails fails the commit of its
        # transaction, which is what decides
        self._sink.produce(self._producer, topic, key, value, [], _ignore_delivery)

    def _commit_transaction(self) -> None:
        """Commit as librdkafka documents it: a retriable error (a timeout) is retried
        (the commit is idempotent); an abortable one aborts; a fatal one, or retries that do
        not get through, leave the lane to a new producer of its transactional id (which
        aborts what is open). Never a lane left mid-commit for the next run's
        `begin_transaction` to fail on (issue 17, failure 8)."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                transactional(
                    lambda: self._producer.commit_transaction(TRANSACTION_COMMIT_S),
                    self.resource,
                )
                self._open = False
                return
            except KafkaException as exc:
                error = exc.args[0]
                retry = error.retriable() and not error.fatal() and not error.txn_requires_abort()
                if retry and attempt < COMMIT_ATTEMPTS and not self._sink.stop.is_set():
                    log.warning(
                        "commit of %s's transaction failed (%s); retrying (%d of %d)",
                        self.resource,
                        error.str(),
                        attempt,
                        COMMIT_ATTEMPTS,
                        extra={"component": "kafka", "resource": self.resource},
                    )
                    continue
                if error.fatal():
                    self._open = False
                    self._closed = True
                    self._sink.reopen_lane(self.resource)
                else:
                    self.abort()
                raise DeliveryError(
                    f"transaction of {self.resource} not committed: {error.str()}"
                ) from None


def _ignore_delivery(_err: KafkaError | None, _msg: Message) -> None:
    return None
