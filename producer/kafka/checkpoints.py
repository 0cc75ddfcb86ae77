"""Checkpoints in a compacted Kafka topic, one record per `<producer id>/<resource>` key.

Start-up reads the topic to its end; the latest valid value per key wins. An unreadable value
is never a silent restart from scratch: it is logged (WARNING) and counted (`corrupt_records`);
when a later valid record of the same key follows it, it is skipped (compaction will remove it);
when it is the latest record of its key, only that resource fails (`get` raises
`CheckpointFormatError` with the command that fixes it) and every other resource works.

Writes go through the event producer (so a later
transactional mode can put a run's events and its checkpoint in one transaction) and are
confirmed before `commit` returns.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from confluent_kafka import KafkaError, Message, Producer

from producer.kafka.listings import LISTING_SUFFIX
from producer.kafka.reader import TopicTail
from producer.sync.checkpoint import FORCED, Checkpoint, CheckpointFormatError, supersedes
from producer.sync.progress import PROGRESS_SUFFIX, Progress

log = logging.getLogger(__name__)


class CheckpointStoreError(RuntimeError):
    pass


class CheckpointConflictError(CheckpointStoreError):
    """Someone else (a reset) wrote the checkpoint since the run began."""


class _Unchecked:
    """`commit` without a compare-and-set (the operator's reset)."""


UNCHECKED: Final = _Unchecked()


def _describe(checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return "none"
    if checkpoint.reset_by:
        return f"{checkpoint.updated_at or 'a full export'}, reset by {checkpoint.reset_by}"
    return f"{checkpoint.updated_at} of run {checkpoint.run_id}"


@dataclass(frozen=True)
class CorruptCheckpoint:
    """An unreadable checkpoint record: where it is and why it cannot be read."""

    resource: str
    key: str
    where: str
    """`topic[partition]@offset`"""
    reason: str

    def error(self) -> CheckpointFormatError:
        return CheckpointFormatError(
            f"checkpoint {self.key!r} at {self.where} is unreadable: {self.reason}. "
            f"Write a new one with `askelephant-kafka reset --resource {self.resource}` "
            "(add `--to <instant>` to replay from an instant instead of a full export)."
        )


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
        self._progress: dict[str, Progress] = {}
        self._lock = threading.RLock()
        self._tail: TopicTail | None = None
        self.loaded = False
        self.corrupt_records = 0
        """Unreadable records met by the last `load` (superseded ones included)."""
        self.corrupt_keys: dict[str, CorruptCheckpoint] = {}
        """Resources whose LATEST record is unreadable: `get` raises for exactly these."""
        self.lost: set[str] = set()
        """Tokens of records that lost a compare-and-set in the topic's order (`supersedes`)."""

    def key_for(self, resource: str) -> str:
        return f"{self.producer_id}/{resource}"

    def load(self) -> dict[str, Checkpoint]:
        """Read the whole topic; return this producer's latest readable checkpoint per resource.

        Resources whose latest record is unreadable are left out of the result and listed in
        `corrupt_keys`.
        """
        with self._lock:
            if self._tail is not None:
                self._tail.close()
            self._tail = TopicTail(self._kafka_config, self.topic)
            self._latest, self.corrupt_keys, self.corrupt_records = {}, {}, 0
            self._progress = {}
            self._read_new()
            self.loaded = True
            return dict(self._latest)

    def refresh(self) -> None:
        """Catch up with records written since the last read (e.g. by `reset` elsewhere)."""
        with self._lock:
            if self._tail is None:
                self._tail = TopicTail(self._kafka_config, self.topic)
            self._read_new()

    def close(self) -> None:
        with self._lock:
            if self._tail is not None:
                self._tail.close()
                self._tail = None

    def _read_new(self) -> None:
        assert self._tail is not None
        met: list[CorruptCheckpoint] = []
        prefix = f"{self.producer_id}/"
        latest, corrupt = self._latest, self.corrupt_keys
        for msg in self._tail.read_new():
            key = (msg.key() or b"").decode("utf-8", "replace")
            if not key.startswith(prefix):
                continue  # another producer's checkpoints share the topic
            resource, value = key[len(prefix) :], msg.value()
            if LISTING_SUFFIX in resource:
                continue  # reconciliation's last listing (producer/kafka/listings.py)
            if resource.endswith(PROGRESS_SUFFIX):
                self._read_progress(resource[: -len(PROGRESS_SUFFIX)], value, msg)
                continue
            if value is None:
                latest.pop(resource, None)  # tombstone
                corrupt.pop(resource, None)
                continue
            where = f"{self.topic}[{msg.partition()}]@{msg.offset()}"
            try:
                checkpoint = Checkpoint.from_json(value)
                if checkpoint.resource != resource:
                    raise CheckpointFormatError(
                        f"it names resource {checkpoint.resource!r}, not {resource!r}"
                    )
            except CheckpointFormatError as exc:
                bad = CorruptCheckpoint(resource, key, where, str(exc))
                met.append(bad)
                corrupt[resource] = bad
                latest.pop(resource, None)
                continue
            if not supersedes(checkpoint, latest.get(resource)):
                assert checkpoint.token is not None
                self.lost.add(checkpoint.token)
                log.info(
                    "checkpoint of %s by run %s at %s lost to a concurrent write; ignored",
                    resource,
                    checkpoint.run_id,
                    where,
                    extra={"event": "checkpoint_lost", "resource": resource},
                )
                continue
            latest[resource] = checkpoint
            corrupt.pop(resource, None)
        for bad in met:
            current = corrupt.get(bad.resource) is bad
            log.warning(
                "unreadable checkpoint %r at %s (%s): %s",
                bad.key,
                bad.where,
                bad.reason,
                f"runs of {bad.resource} fail until `askelephant-kafka reset --resource "
                f"{bad.resource}`"
                if current
                else "skipped, a later readable checkpoint of the same key exists",
                extra={
                    "event": "checkpoint_corrupt",
                    "resource": bad.resource,
                    "where": bad.where,
                    "superseded": not current,
                },
            )
        self.corrupt_records += len(met)

    def _read_progress(self, resource: str, value: bytes | None, msg: Message) -> None:
        if value is None:
            self._progress.pop(resource, None)
            return
        try:
            self._progress[resource] = Progress.from_json(value)
        except CheckpointFormatError as exc:
            # A mark is an optimisation: without it a run starts from the checkpoint.
            self._progress.pop(resource, None)
            log.warning(
                "unreadable progress mark of %s at %s[%s]@%s ignored: %s",
                resource,
                self.topic,
                msg.partition(),
                msg.offset(),
                exc,
                extra={"event": "progress_corrupt", "resource": resource},
            )

    def current(self, resource: str) -> Checkpoint | None:
        """`get` after catching up with the topic: what a run starts from."""
        self.refresh()
        return self.get(resource)

    def get(self, resource: str) -> Checkpoint | None:
        """The latest checkpoint of `resource`; raises `CheckpointFormatError` if unreadable."""
        bad = self.corrupt_keys.get(resource)
        if bad is not None:
            raise bad.error()
        return self._latest.get(resource)

    def all(self) -> dict[str, Checkpoint]:
        """Every readable latest checkpoint (see `corrupt_keys` for the unreadable ones)."""
        return dict(self._latest)

    def check_unchanged(self, resource: str, based_on: Checkpoint | None) -> None:
        """Raise `CheckpointConflictError` when the stored checkpoint is no longer `based_on`
        (an operator's `reset` while a run was going): a reset is never silently overwritten."""
        self.refresh()
        with self._lock:
            stored = self._latest.get(resource)
        if stored != based_on:
            raise CheckpointConflictError(
                f"the checkpoint of {resource} changed while the run was going "
                f"(now {_describe(stored)}, the run started from {_describe(based_on)}); "
                "this run's checkpoint is discarded and the next run starts from the new one"
            )

    def record_for(
        self, checkpoint: Checkpoint, based_on: Checkpoint | _Unchecked | None = UNCHECKED
    ) -> tuple[bytes, bytes, Checkpoint]:
        """Key, value and the checkpoint as it will be stored: its reset history carried
        (history only grows, so an empty one means the writer did not carry it), a token of
        its own and the token of `based_on`, what it replaces (`supersedes`)."""
        with self._lock:
            stored = self._latest.get(checkpoint.resource)
        checkpoint = replace(
            checkpoint.carry_history_from(stored),
            token=uuid.uuid4().hex,
            based_on=FORCED
            if isinstance(based_on, _Unchecked)
            else (based_on.token if based_on is not None else None),
        )
        return self.key_for(checkpoint.resource).encode(), checkpoint.to_json(), checkpoint

    def confirm_won(self, stored: Checkpoint) -> None:
        """After the record of `stored` is in the topic: read the topic to its end and raise
        `CheckpointConflictError` when the record lost its compare-and-set there."""
        self.refresh()
        with self._lock:
            lost = stored.token in self.lost
            now = self._latest.get(stored.resource)
        if lost:
            raise CheckpointConflictError(
                f"the checkpoint of {stored.resource} changed while the run was going (now "
                f"{_describe(now)}); this run's checkpoint lost to it and is ignored, the next "
                "run starts from the new one"
            )

    def progress_key(self, resource: str) -> bytes:
        return f"{self.key_for(resource)}{PROGRESS_SUFFIX}".encode()

    def remember(self, checkpoint: Checkpoint) -> None:
        """A checkpoint that Kafka confirmed (or a transaction committed)."""
        with self._lock:
            self._latest[checkpoint.resource] = checkpoint
            self.corrupt_keys.pop(checkpoint.resource, None)

    def remember_progress(self, resource: str, progress: Progress | None) -> None:
        with self._lock:
            if progress is None:
                self._progress.pop(resource, None)
            else:
                self._progress[resource] = progress

    def progress(self, resource: str) -> Progress | None:
        """The progress mark of an interrupted run of `resource`, if any (as last read)."""
        with self._lock:
            return self._progress.get(resource)

    def all_progress(self) -> dict[str, Progress]:
        with self._lock:
            return dict(self._progress)

    def commit(
        self,
        checkpoint: Checkpoint,
        timeout_s: float = 60.0,
        *,
        based_on: Checkpoint | _Unchecked | None = UNCHECKED,
    ) -> None:
        """Write and confirm a checkpoint; raise if Kafka does not acknowledge it.

        `based_on`: the checkpoint the run started from (compare-and-set, see
        `check_unchanged`). `reset` passes nothing: it is meant to overwrite.
        A commit replaces an unreadable latest record of the resource.
        """
        if not isinstance(based_on, _Unchecked):
            self.check_unchanged(checkpoint.resource, based_on)  # the cheap early answer
        key, value, stored = self.record_for(checkpoint, based_on)
        self._write(key, value, f"checkpoint of {checkpoint.resource}", timeout_s)
        if isinstance(based_on, _Unchecked):
            self.remember(stored)
        else:
            self.confirm_won(stored)  # the answer that holds across processes

    def write_progress(self, progress: Progress, timeout_s: float = 60.0) -> None:
        key = self.progress_key(progress.resource)
        self._write(key, progress.to_json(), f"progress of {progress.resource}", timeout_s)
        self.remember_progress(progress.resource, progress)

    def clear_progress(self, resource: str, timeout_s: float = 60.0) -> None:
        """A tombstone for the progress mark (compaction removes it)."""
        if self.progress(resource) is None:
            return
        self._write(self.progress_key(resource), None, f"progress of {resource}", timeout_s)
        self.remember_progress(resource, None)

    def _write(self, key: bytes, value: bytes | None, what: str, timeout_s: float) -> None:
        outcome: list[KafkaError | None] = []
        self._producer.produce(
            self.topic, key=key, value=value, on_delivery=lambda err, _msg: outcome.append(err)
        )
        # Poll for this one record only: a flush() would also wait for every other
        # resource's events in flight on the shared producer.
        deadline = time.monotonic() + timeout_s
        while not outcome and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not outcome:
            raise CheckpointStoreError(f"{what} not confirmed")
        if outcome[0] is not None:
            raise CheckpointStoreError(f"{what}: {outcome[0]}")
