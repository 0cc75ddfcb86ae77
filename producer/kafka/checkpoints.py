"""Checkpoints in a compacted Kafka topic, one record per `<producer id>/<resource>` key.

Start-up reads the topic to its end; the latest valid value per key wins. An unreadable value
is never a silent restart from scratch: it is logged (WARNING) and counted (`corrupt_records`);
when a later valid record of the same key follows it, it is skipped (compaction will remove it);
when it is the latest record of its key, only that resource fails (`get` raises
`CheckpointFormatError` with the command that fixes it) and every other resource works.

Writes go through the event producer (so a later
transactional mode can put a run's events and its checkpoint in one transaction) and are
confirmed before `commit` returns.

A checkpoint or progress mark too large for one record is written as chunk records plus a
main record that names them (producer/sync/chunks.py): chunks first (or in the same
transaction), so a reader that sees the main record can find them. Readers assemble once the
topic is read to its end; a main record whose chunks are missing or garbled is unreadable like
any other (`corrupt_keys`). Chunks of records that are no longer the latest get tombstones
(`sweep_chunks`).
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
from producer.pipeline.ports import LaneError
from producer.sync.checkpoint import FORCED, Checkpoint, CheckpointFormatError, supersedes
from producer.sync.chunks import (
    CHUNK_BYTES,
    ChunkRef,
    assemble_checkpoint,
    assemble_progress,
    chunk_key,
    decode_checkpoint_head,
    encode_checkpoint,
    encode_progress,
    parse_chunk_key,
    progress_ref,
)
from producer.sync.progress import PROGRESS_SUFFIX, Progress

log = logging.getLogger(__name__)


class CheckpointStoreError(LaneError):
    pass


class CheckpointConflictError(CheckpointStoreError):
    """Someone else (a reset) wrote the checkpoint since the run began."""


class _Unchecked:
    """`commit` without a compare-and-set (the operator's reset)."""


UNCHECKED: Final = _Unchecked()

AWAIT_CHUNKS_S: Final = 0.5
"""How long `current` waits for chunks not yet readable before calling a checkpoint
unreadable."""

Record = tuple[bytes, bytes | None]
"""A key and value (None: a tombstone) for the checkpoint topic."""


def _describe(checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return "none"
    if checkpoint.reset_by:
        return f"{checkpoint.updated_at or 'a full export'}, reset by {checkpoint.reset_by}"
    return f"{checkpoint.updated_at} of run {checkpoint.run_id}"


@dataclass
class _Awaiting:
    """A main record read from the topic whose chunks are still to be assembled."""

    ref: ChunkRef
    where: str
    head: Checkpoint | None = None
    """The checkpoint's head (None: a progress mark)."""
    reported: bool = False


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
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.topic = topic
        self.chunk_bytes = chunk_bytes
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
        self._last_lost: set[str] = set()
        """Resources whose last checkpoint record read lost: `repair` puts the winner after it."""
        self._chunk_data: dict[str, dict[int, bytes]] = {}
        """token -> n -> value: chunks read and not yet assembled (dropped once they are)."""
        self._chunk_keys: dict[str, set[bytes]] = {}
        """token -> keys of its chunks in the topic (written here or read), until tombstoned."""
        self._mains: set[str] = set()
        """Tokens whose main record is in the topic, or will never be (its chunks failed):
        only their chunks are ever swept (a chunk whose main record is not visible yet may
        belong to a transaction still landing)."""
        self._awaiting: dict[str, _Awaiting] = {}
        """resource -> latest checkpoint read whose chunks are not all read yet."""
        self._awaiting_progress: dict[str, _Awaiting] = {}
        self._topic_tokens: dict[str, str | None] = {}
        """Key (resource, or resource + PROGRESS_SUFFIX) -> token of the latest record read
        from the topic: protected from the sweep as long as a reader may take it as latest."""
        self._progress_tokens: dict[str, str] = {}
        """resource -> token of the chunks of the progress mark held (when it has chunks)."""
        self._staged_progress: dict[str, tuple[Progress, str]] = {}
        """resource -> a mark `progress_records` encoded with chunks, until remembered."""

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
            self._chunk_data, self._chunk_keys, self._mains = {}, {}, set()
            self._awaiting, self._awaiting_progress = {}, {}
            self._topic_tokens, self._progress_tokens = {}, {}
            self._last_lost = set()
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
            chunk = parse_chunk_key(resource)
            if chunk is not None:
                self._read_chunk(msg.key() or b"", chunk[1], chunk[2], value)
                continue
            if resource.endswith(PROGRESS_SUFFIX):
                self._read_progress(resource[: -len(PROGRESS_SUFFIX)], value, msg)
                continue
            if value is None:
                latest.pop(resource, None)  # tombstone
                corrupt.pop(resource, None)
                self._awaiting.pop(resource, None)
                self._topic_tokens.pop(resource, None)
                continue
            where = f"{self.topic}[{msg.partition()}]@{msg.offset()}"
            try:
                checkpoint, ref = decode_checkpoint_head(value)
                if checkpoint.resource != resource:
                    raise CheckpointFormatError(
                        f"it names resource {checkpoint.resource!r}, not {resource!r}"
                    )
            except CheckpointFormatError as exc:
                bad = CorruptCheckpoint(resource, key, where, str(exc))
                met.append(bad)
                corrupt[resource] = bad
                latest.pop(resource, None)
                self._awaiting.pop(resource, None)
                self._topic_tokens.pop(resource, None)
                continue
            if checkpoint.token is not None:
                self._mains.add(checkpoint.token)
            if not supersedes(checkpoint, latest.get(resource)):
                assert checkpoint.token is not None
                self.lost.add(checkpoint.token)
                self._last_lost.add(resource)
                log.info(
                    "checkpoint of %s by run %s at %s lost to a concurrent write; ignored",
                    resource,
                    checkpoint.run_id,
                    where,
                    extra={"event": "checkpoint_lost", "resource": resource},
                )
                continue
            self._topic_tokens[resource] = checkpoint.token
            self._last_lost.discard(resource)
            known = latest.get(resource)
            if (
                ref is not None
                and known is not None
                and known.token == checkpoint.token
                and resource not in self._awaiting
            ):
                # its writer's own record read back: it holds the whole already
                self._chunk_data.pop(ref.token, None)
                continue
            latest[resource] = checkpoint
            corrupt.pop(resource, None)
            if ref is None:
                self._awaiting.pop(resource, None)
            else:
                self._awaiting[resource] = _Awaiting(ref, where, checkpoint)
        # Only now, with the topic read to its end: chunks may sit in other partitions than
        # their main record, and partitions are read in no particular order.
        self._assemble(met)
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

    def _read_chunk(self, key: bytes, token: str, n: int, value: bytes | None) -> None:
        if value is None:  # a tombstone of the sweep
            self._chunk_data.get(token, {}).pop(n, None)
            keys = self._chunk_keys.get(token)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._chunk_keys[token]
                    self._chunk_data.pop(token, None)
            return
        self._chunk_data.setdefault(token, {})[n] = value
        self._chunk_keys.setdefault(token, set()).add(key)

    def _assemble(self, met: list[CorruptCheckpoint]) -> None:
        """Assemble the latest records that name chunks. One whose chunks are not all there
        stays unreadable (and waiting: a transaction's chunks in another partition can
        become visible a moment after its main record)."""
        for resource, wait in list(self._awaiting.items()):
            assert wait.head is not None
            try:
                whole = assemble_checkpoint(
                    wait.head, wait.ref, self._chunk_data.get(wait.ref.token, {})
                )
            except CheckpointFormatError as exc:
                key = self.key_for(resource)
                bad = CorruptCheckpoint(resource, key, wait.where, str(exc))
                self.corrupt_keys[resource] = bad
                if not wait.reported:  # once, not at every refresh while it waits
                    met.append(bad)
                    wait.reported = True
                continue
            del self._awaiting[resource]
            self._chunk_data.pop(wait.ref.token, None)  # assembled: the bytes are not needed
            self._latest[resource] = whole
            self.corrupt_keys.pop(resource, None)
        for resource, wait in list(self._awaiting_progress.items()):
            try:
                mark = assemble_progress(
                    resource, wait.ref, self._chunk_data.get(wait.ref.token, {})
                )
            except CheckpointFormatError as exc:
                if not wait.reported:
                    wait.reported = True
                    log.warning(
                        "progress mark of %s at %s ignored for now: %s",
                        resource,
                        wait.where,
                        exc,
                        extra={"event": "progress_corrupt", "resource": resource},
                    )
                continue
            del self._awaiting_progress[resource]
            self._chunk_data.pop(wait.ref.token, None)
            self._progress[resource] = mark
            self._progress_tokens[resource] = wait.ref.token

    def _read_progress(self, resource: str, value: bytes | None, msg: Message) -> None:
        self._awaiting_progress.pop(resource, None)
        self._progress_tokens.pop(resource, None)
        mark_key = resource + PROGRESS_SUFFIX
        if value is None:
            self._progress.pop(resource, None)
            self._topic_tokens.pop(mark_key, None)
            return
        where = f"{self.topic}[{msg.partition()}]@{msg.offset()}"
        try:
            ref = progress_ref(value)
            if ref is not None:
                # the mark it replaces is gone either way; this one counts once assembled
                self._progress.pop(resource, None)
                self._mains.add(ref.token)
                self._topic_tokens[mark_key] = ref.token
                self._awaiting_progress[resource] = _Awaiting(ref, where)
                return
            self._topic_tokens.pop(mark_key, None)
            self._progress[resource] = Progress.from_json(value)
        except CheckpointFormatError as exc:
            # A mark is an optimisation: without it a run starts from the checkpoint.
            self._progress.pop(resource, None)
            log.warning(
                "unreadable progress mark of %s at %s ignored: %s",
                resource,
                where,
                exc,
                extra={"event": "progress_corrupt", "resource": resource},
            )

    def current(self, resource: str) -> Checkpoint | None:
        """`get` after catching up with the topic: what a run starts from (a winner left
        behind a losing record is written again first: `repair`)."""
        self.refresh()
        try:
            self.repair(resource)
        except CheckpointStoreError as exc:  # the next run tries again; reading goes on
            log.warning("checkpoint of %s not repaired: %s", resource, exc)
        if resource in self._awaiting:
            # A transaction's commit markers land partition by partition: its chunks can
            # become readable a moment after its main record. Look once more before failing.
            time.sleep(AWAIT_CHUNKS_S)
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

    def records_for(
        self, checkpoint: Checkpoint, based_on: Checkpoint | _Unchecked | None = UNCHECKED
    ) -> tuple[list[Record], Checkpoint]:
        """The records to write, in order (chunks first, the main record last), and the
        checkpoint as it will be stored: its reset history carried (history only grows, so
        an empty one means the writer did not carry it), a token of its own and the token of
        `based_on`, what it replaces (`supersedes`)."""
        with self._lock:
            stored = self._latest.get(checkpoint.resource)
        checkpoint = replace(
            checkpoint.carry_history_from(stored),
            token=uuid.uuid4().hex,
            based_on=FORCED
            if isinstance(based_on, _Unchecked)
            else (based_on.token if based_on is not None else None),
        )
        assert checkpoint.token is not None
        main, parts, _ref = encode_checkpoint(checkpoint, self.chunk_bytes)
        base = self.key_for(checkpoint.resource)
        records = self._chunk_records(base, checkpoint.token, parts)
        records.append((base.encode(), main))
        return records, checkpoint

    def _chunk_records(self, base: str, token: str, parts: list[bytes]) -> list[Record]:
        records: list[Record] = [
            (chunk_key(base, token, n).encode(), part) for n, part in enumerate(parts)
        ]
        if records:
            with self._lock:  # known before it is written: a failed write is swept too
                self._chunk_keys.setdefault(token, set()).update(k for k, _ in records)
        return records

    def progress_records(self, progress: Progress) -> list[Record]:
        """The records of a progress mark, chunks first (see `records_for`)."""
        token = uuid.uuid4().hex
        main, parts, ref = encode_progress(progress, token, self.chunk_bytes)
        records = self._chunk_records(self.key_for(progress.resource), token, parts)
        records.append((self.progress_key(progress.resource), main))
        if ref is not None:
            with self._lock:
                self._staged_progress[progress.resource] = (progress, token)
        return records

    def repair(self, resource: str, timeout_s: float = 60.0) -> None:
        """When the last checkpoint record of `resource` in the topic lost its compare-and-set,
        write a copy of the winner after it: compaction keeps a key's last record, and must
        keep the winner (`supersedes`). The copy is based on the winner, so every reader
        takes it; a crash before it is repaired by the next `current` (a run's start) or
        `load` of any process."""
        with self._lock:
            winner = self._latest.get(resource) if resource in self._last_lost else None
        if winner is None:
            return
        records, _ = self.records_for(winner, winner)
        self._write_all(records, f"checkpoint of {resource} (the winner, again)", timeout_s)
        self.refresh()
        log.info(
            "checkpoint of %s written again after a record that lost to it",
            resource,
            extra={"event": "checkpoint_repaired", "resource": resource},
        )

    def confirm_won(self, stored: Checkpoint) -> None:
        """After the record of `stored` is in the topic: read the topic to its end and raise
        `CheckpointConflictError` when the record lost its compare-and-set there (after
        putting the winner after it: `repair`)."""
        self.refresh()
        with self._lock:
            lost = stored.token in self.lost
            now = self._latest.get(stored.resource)
        if lost:
            self.repair(stored.resource)
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
            self._awaiting.pop(checkpoint.resource, None)
            if checkpoint.token is not None:
                self._mains.add(checkpoint.token)

    def remember_progress(self, resource: str, progress: Progress | None) -> None:
        with self._lock:
            self._awaiting_progress.pop(resource, None)
            self._progress_tokens.pop(resource, None)
            staged = self._staged_progress.pop(resource, None)
            if progress is None:
                self._progress.pop(resource, None)
                return
            self._progress[resource] = progress
            if staged is not None and staged[0] is progress:
                self._progress_tokens[resource] = staged[1]
                self._mains.add(staged[1])

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
        records, stored = self.records_for(checkpoint, based_on)
        self._write_all(records, f"checkpoint of {checkpoint.resource}", timeout_s)
        if isinstance(based_on, _Unchecked):
            self.remember(stored)
        else:
            self.confirm_won(stored)  # the answer that holds across processes
        self.sweep_chunks(timeout_s, refresh=False)

    def write_progress(self, progress: Progress, timeout_s: float = 60.0) -> None:
        records = self.progress_records(progress)
        self._write_all(records, f"progress of {progress.resource}", timeout_s)
        self.remember_progress(progress.resource, progress)
        self.sweep_chunks(timeout_s)

    def clear_progress(self, resource: str, timeout_s: float = 60.0) -> None:
        """A tombstone for the progress mark (compaction removes it)."""
        if self.progress(resource) is None:
            return
        self._write(self.progress_key(resource), None, f"progress of {resource}", timeout_s)
        self.remember_progress(resource, None)
        self.sweep_chunks(timeout_s)

    def _referenced(self, *, read: bool = True) -> set[str]:
        """Tokens whose chunks a reader may still need (`read`: with what the topic said
        when last read, not only what this process holds)."""
        tokens = {c.token for c in self._latest.values() if c.token is not None}
        if read:
            tokens.update(t for t in self._topic_tokens.values() if t is not None)
        tokens.update(w.ref.token for w in self._awaiting.values())
        tokens.update(w.ref.token for w in self._awaiting_progress.values())
        tokens.update(self._progress_tokens.values())
        tokens.update(token for _, token in self._staged_progress.values())
        return tokens

    def _sweepable(self, *, read: bool = True) -> list[str]:
        referenced = self._referenced(read=read)
        return [t for t in self._chunk_keys if t in self._mains and t not in referenced]

    def sweep_chunks(self, timeout_s: float = 60.0, *, refresh: bool = True) -> int:
        """Tombstones for the chunks of records that are no longer the latest (compaction
        then removes them); the number of chunks swept. Best effort: a failure is logged and
        the next sweep tries again.

        Only chunks whose main record was read from the topic (or written here) and has
        since been replaced there: `refresh` reads the topic first, so a record replaced in
        this process but not yet readable by others (a transaction's commit marker still
        landing) keeps its chunks until it is."""
        with self._lock:
            if not self._sweepable(read=not refresh):
                return 0  # the usual case, without a read of the topic
        try:
            if refresh:
                self.refresh()
            with self._lock:
                tokens = self._sweepable()
                keys = sorted(k for t in tokens for k in self._chunk_keys[t])
            if not keys:
                return 0
            self._write_all([(k, None) for k in keys], "tombstones of old chunks", timeout_s)
        except Exception as exc:
            # the checkpoint itself is written: this is tidying, it must not fail the run
            log.warning(
                "could not remove the chunks of replaced checkpoints: %s",
                exc,
                extra={"event": "chunk_sweep_failed"},
            )
            return 0
        with self._lock:
            for token in tokens:
                self._chunk_keys.pop(token, None)
                self._chunk_data.pop(token, None)
        return len(keys)

    def _write_all(self, records: list[Record], what: str, timeout_s: float) -> None:
        """Write `records` in order and wait until every one is confirmed: the main record,
        last, goes out only once all its chunks are in, so whoever reads it finds them."""
        if len(records) == 1:
            self._write(*records[0], what, timeout_s)
            return
        *chunks, main = records
        if chunks:
            try:
                self._write_many(chunks, what, timeout_s)
            except CheckpointStoreError:
                # The main record is never written now, so whatever chunks did land are
                # nobody's: let the next sweep remove them.
                with self._lock:
                    for key, _ in chunks:
                        parsed = parse_chunk_key(key.decode())
                        if parsed is not None:
                            self._mains.add(parsed[1])
                raise
        self._write(*main, what, timeout_s)

    def _write_many(self, records: list[Record], what: str, timeout_s: float) -> None:
        outcome: list[KafkaError | None] = []
        for key, value in records:
            self._producer.produce(
                self.topic,
                key=key,
                value=value,
                on_delivery=lambda err, _msg: outcome.append(err),
            )
            self._producer.poll(0)  # serve callbacks: the local queue is bounded
        deadline = time.monotonic() + timeout_s
        while len(outcome) < len(records) and time.monotonic() < deadline:
            self._producer.poll(0.1)
        errors = [e for e in outcome if e is not None]
        if errors:
            raise CheckpointStoreError(f"{what}: {errors[0]}")
        if len(outcome) < len(records):
            raise CheckpointStoreError(f"{what} not confirmed")

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
