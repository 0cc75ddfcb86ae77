"""Chunked checkpoints and progress marks (issue 17, failure 8a): the pure split and
assembly, and the checkpoint store against an in-memory topic of several partitions."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.kafka import checkpoints as checkpoints_module
from producer.kafka.checkpoints import CheckpointStore
from producer.sync import chunks
from producer.sync.checkpoint import Checkpoint, CheckpointFormatError
from producer.sync.progress import Progress
from producer.sync.timestamps import instant_micros

AT = "2026-03-04T18:25:00Z"
LATER = "2026-03-05T00:00:00Z"
EARLY = "2020-01-01T00:00:00Z"
ids_strategy = st.frozensets(st.text(min_size=1, max_size=12), max_size=60)


def checkpoint(ids: frozenset[str], **kw: Any) -> Checkpoint:
    base: dict[str, Any] = {
        "resource": "contacts",
        "updated_at": AT,
        "boundary_ids": ids,
        "ahead": frozenset((i, instant_micros(AT) + 1) for i in list(ids)[:5]),
        "run_id": "run-1",
        "completed_at": "2026-03-05T00:00:00Z",
        "token": uuid.uuid4().hex,
        "based_on": None,
    }
    base.update(kw)
    return Checkpoint(**base)


# --- pure ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=3000), size=st.integers(1, 700))
def test_any_payload_round_trips_through_its_chunks(payload: bytes, size: int) -> None:
    ref, parts = chunks.split(payload, "ab12", size)
    assert all(len(p) <= size for p in parts)
    assert ref.count == len(parts) >= 1
    assert chunks.assemble(ref, dict(enumerate(parts))) == payload


@settings(max_examples=100, deadline=None)
@given(ids=ids_strategy, size=st.integers(40, 400))
def test_any_set_of_ids_round_trips_through_chunks(ids: frozenset[str], size: int) -> None:
    cp = checkpoint(ids)
    main, parts, ref = chunks.encode_checkpoint(cp, size)
    head, named = chunks.decode_checkpoint_head(main)
    assert named == ref
    again = head if ref is None else chunks.assemble_checkpoint(head, ref, dict(enumerate(parts)))
    assert again == cp
    assert again.token == cp.token


@settings(max_examples=100, deadline=None)
@given(ids=ids_strategy.filter(lambda s: len(s) > 3), data=st.data())
def test_a_missing_extra_or_garbled_chunk_is_unreadable_never_a_wrong_boundary(
    ids: frozenset[str], data: st.DataObject
) -> None:
    cp = checkpoint(ids)
    main, parts, ref = chunks.encode_checkpoint(cp, 40)
    assert ref is not None
    assert len(parts) > 1
    head, _ = chunks.decode_checkpoint_head(main)
    whole = dict(enumerate(parts))
    n = data.draw(st.integers(0, len(parts) - 1))

    missing = {k: v for k, v in whole.items() if k != n}
    extra = {**whole, len(parts): data.draw(st.binary(max_size=40))}
    garbled_part = bytearray(parts[n])
    at = data.draw(st.integers(0, len(garbled_part) - 1))
    garbled_part[at] ^= data.draw(st.integers(1, 255))
    garbled = {**whole, n: bytes(garbled_part)}
    truncated = {**whole, n: parts[n][:-1]}
    for broken in (missing, extra, garbled, truncated):
        with pytest.raises(CheckpointFormatError):
            chunks.assemble_checkpoint(head, ref, broken)


def test_the_chunks_of_another_record_are_refused() -> None:
    ids = frozenset(f"cnt_{i:04d}" for i in range(200))
    first, second = checkpoint(ids), checkpoint(ids)
    main, _, ref = chunks.encode_checkpoint(first, 500)
    _, other_parts, other_ref = chunks.encode_checkpoint(second, 500)
    assert ref is not None
    assert other_ref is not None
    assert ref.count == other_ref.count
    head, _ = chunks.decode_checkpoint_head(main)
    with pytest.raises(CheckpointFormatError):
        chunks.assemble_checkpoint(head, ref, dict(enumerate(other_parts)))


def test_a_release_without_chunks_replays_the_boundary_rather_than_trust_an_empty_one() -> None:
    cp = checkpoint(frozenset(f"cnt_{i:04d}" for i in range(200)))
    main, parts, ref = chunks.encode_checkpoint(cp, 500)
    assert ref is not None
    assert parts
    old_reader = Checkpoint.from_json(main)  # what an older release makes of it
    assert not old_reader.boundary_complete
    assert old_reader.boundary_ids == frozenset()
    assert old_reader.updated_at == cp.updated_at
    assert old_reader.token == cp.token
    assert len(main) < 1000


def test_a_small_checkpoint_stays_one_record_as_before() -> None:
    cp = checkpoint(frozenset({"a", "b"}))
    main, parts, ref = chunks.encode_checkpoint(cp)
    assert (main, parts, ref) == (cp.to_json(), [], None)


@settings(max_examples=50, deadline=None)
@given(ids=ids_strategy, size=st.integers(60, 400))
def test_a_progress_mark_round_trips_through_chunks(ids: frozenset[str], size: int) -> None:
    progress = Progress("contacts", checkpoint(ids), False, "run-0", "run-1", 3, "now")
    main, parts, ref = chunks.encode_progress(progress, "cafe", size)
    assert chunks.progress_ref(main) == ref
    again = (
        Progress.from_json(main)
        if ref is None
        else chunks.assemble_progress("contacts", ref, dict(enumerate(parts)))
    )
    assert again == progress
    if ref is not None:
        with pytest.raises(CheckpointFormatError):
            Progress.from_json(main)  # an older release ignores the mark: a run from the start


def test_chunk_keys_are_told_from_checkpoint_and_progress_keys() -> None:
    key = chunks.chunk_key("p1/contacts", "ab12", 7)
    assert chunks.parse_chunk_key(key) == ("p1/contacts", "ab12", 7)
    assert chunks.parse_chunk_key("p1/contacts") is None
    assert chunks.parse_chunk_key("p1/contacts/progress") is None


# --- the store against an in-memory topic ----------------------------------------------------


@dataclass
class Message:
    _key: bytes | None
    _value: bytes | None
    _partition: int
    _offset: int

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@dataclass
class Topic:
    """A topic of `partitions` partitions; keys are spread by a hash, as a partitioner does.
    `reversed_order` makes readers take the partitions last to first."""

    partitions: int = 4
    logs: list[list[Message]] = field(default_factory=list)
    reversed_order: bool = False

    def __post_init__(self) -> None:
        self.logs = [[] for _ in range(self.partitions)]

    def append(self, key: bytes | None, value: bytes | None) -> None:
        log = self.logs[zlib.crc32(key or b"") % self.partitions]
        log.append(Message(key, value, self.logs.index(log), len(log)))

    def records(self) -> list[Message]:
        return [m for log in self.logs for m in log]

    def drop(self, predicate: Callable[[Message], bool]) -> None:
        for log in self.logs:
            log[:] = [m for m in log if not predicate(m)]


@dataclass
class Producer:
    topic: Topic
    pending: list[tuple[bytes | None, bytes | None, Callable[..., None]]] = field(
        default_factory=list
    )
    refuse: Callable[[bytes | None], bool] = lambda _key: False
    """Keys whose delivery fails (nothing lands)."""

    def produce(
        self,
        _topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        on_delivery: Callable[..., None] | None = None,
    ) -> None:
        assert on_delivery is not None
        self.pending.append((key, value, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        pending, self.pending = self.pending, []
        for key, value, callback in pending:
            if self.refuse(key):
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), None)
                continue
            self.topic.append(key, value)
            callback(None, None)
        return 0


def tail_of(topic: Topic) -> type:
    class Tail:
        def __init__(self, _config: object, _name: str) -> None:
            self.read = [0] * topic.partitions

        def read_new(self) -> Iterator[Message]:
            order = range(topic.partitions)
            for p in reversed(order) if topic.reversed_order else order:
                log = topic.logs[p]
                yield from log[self.read[p] :]
                self.read[p] = len(log)

        def close(self) -> None:
            pass

    return Tail


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Topic:
    topic = Topic()
    monkeypatch.setattr(checkpoints_module, "TopicTail", tail_of(topic))
    return topic


def store_on(topic: Topic, chunk_bytes: int = 2_000) -> CheckpointStore:
    producer: Any = Producer(topic)
    store = CheckpointStore({}, "t.checkpoints", "p1", producer, chunk_bytes=chunk_bytes)
    store.load()
    return store


def boundary(n: int, prefix: str = "cnt_") -> frozenset[str]:
    return frozenset(f"{prefix}{i:06d}" for i in range(n))


def keys(topic: Topic) -> list[str]:
    return [(m.key() or b"").decode() for m in topic.records()]


@pytest.mark.parametrize("reversed_order", [False, True])
def test_a_fresh_store_reads_a_chunked_checkpoint_whole(topic: Topic, reversed_order: bool) -> None:
    topic.reversed_order = reversed_order  # main record before or after its chunks
    writer = store_on(topic)
    cp = Checkpoint("contacts", AT, boundary_ids=boundary(3_000), run_id="r1")
    writer.commit(cp, based_on=None)
    assert sum("/chunks/" in k for k in keys(topic)) > 10
    assert max(len(m.value() or b"") for m in topic.records()) <= 2_000
    reader = store_on(topic)
    got = reader.get("contacts")
    assert got is not None
    assert got.boundary_complete
    assert got.boundary_ids == cp.boundary_ids
    assert reader.corrupt_keys == {}


def test_a_checkpoint_whose_chunk_is_gone_is_unreadable_not_a_smaller_boundary(
    topic: Topic,
) -> None:
    writer = store_on(topic)
    writer.commit(Checkpoint("contacts", AT, boundary_ids=boundary(3_000)), based_on=None)
    writer.commit(Checkpoint("companies", AT, boundary_ids=boundary(10)), based_on=None)
    gone = next(k for k in keys(topic) if "/chunks/" in k)
    topic.drop(lambda m: (m.key() or b"").decode() == gone)
    reader = store_on(topic)
    with pytest.raises(CheckpointFormatError, match=r"missing.*reset --resource contacts"):
        reader.get("contacts")
    assert set(reader.corrupt_keys) == {"contacts"}
    assert reader.get("companies") is not None  # every other resource works


def test_a_garbled_chunk_is_unreadable(topic: Topic) -> None:
    writer = store_on(topic)
    writer.commit(Checkpoint("contacts", AT, boundary_ids=boundary(3_000)), based_on=None)
    victim = next(m for m in topic.records() if b"/chunks/" in (m.key() or b""))
    victim._value = (victim.value() or b"").replace(b"cnt_", b"cnt-", 1)
    with pytest.raises(CheckpointFormatError, match="digest"):
        store_on(topic).get("contacts")


def test_chunks_that_land_after_their_main_record_are_assembled_by_the_next_read(
    topic: Topic,
) -> None:
    """A transaction's commit markers land partition by partition: a reader can see the main
    record first. It waits for the chunks instead of taking an empty boundary."""
    writer = store_on(topic)
    cp = Checkpoint("contacts", AT, boundary_ids=boundary(3_000))
    held = []
    writer.commit(cp, based_on=None)
    for log in topic.logs:  # take the chunks away for a moment
        held += [m for m in log if b"/chunks/" in (m.key() or b"")]
    topic.drop(lambda m: b"/chunks/" in (m.key() or b""))
    reader = store_on(topic)
    assert "contacts" in reader.corrupt_keys
    for m in held:
        topic.append(m.key(), m.value())
    got = reader.current("contacts")
    assert got is not None
    assert got.boundary_ids == cp.boundary_ids
    assert reader.corrupt_keys == {}


def test_the_chunks_of_a_replaced_checkpoint_get_tombstones(topic: Topic) -> None:
    writer = store_on(topic)
    first = Checkpoint("contacts", AT, boundary_ids=boundary(3_000))
    writer.commit(first, based_on=None)
    first_keys = {k for k in keys(topic) if "/chunks/" in k}
    stored = writer.get("contacts")
    second = Checkpoint("contacts", AT, boundary_ids=boundary(3_000, "new_"))
    writer.commit(second, based_on=stored)
    tombstoned = {(m.key() or b"").decode() for m in topic.records() if m.value() is None}
    assert tombstoned == first_keys
    # what compaction does to the chunk keys: the tombstoned chunks are gone
    chunk_keys = {m.key() for m in topic.records() if b"/chunks/" in (m.key() or b"")}
    gone = {m.key() for m in topic.records() if m.value() is None} & chunk_keys
    topic.drop(lambda m: m.key() in gone)
    got = store_on(topic).get("contacts")
    assert got is not None
    assert got.boundary_ids == second.boundary_ids


def test_a_chunked_progress_mark_survives_a_restart_and_is_swept_once_cleared(
    topic: Topic,
) -> None:
    writer = store_on(topic)
    mark = Checkpoint("contacts", AT, boundary_ids=boundary(3_000))
    progress = Progress("contacts", mark, True, None, "r1", 4, "now")
    writer.write_progress(progress)
    assert store_on(topic).progress("contacts") == progress
    newer = replace(progress, pages=8)
    writer.write_progress(newer)  # the first mark's chunks are swept
    assert store_on(topic).progress("contacts") == newer
    writer.clear_progress("contacts")
    live: dict[bytes | None, bytes | None] = {}
    for m in topic.records():
        live[m.key()] = m.value()
    assert [k for k, v in live.items() if v is not None] == []
    assert store_on(topic).progress("contacts") is None


def test_a_chunked_checkpoint_that_lost_its_compare_and_set_is_ignored_and_swept(
    topic: Topic,
) -> None:
    a, b = store_on(topic), store_on(topic)
    a.commit(Checkpoint("contacts", AT, boundary_ids=boundary(3_000, "a_")), based_on=None)
    # b wrote in the window between its early check and its record: the topic's order decides
    b.check_unchanged = lambda *_: None  # type: ignore[method-assign]
    with pytest.raises(checkpoints_module.CheckpointConflictError):
        b.commit(Checkpoint("contacts", AT, boundary_ids=boundary(3_000, "b_")), based_on=None)
    got = store_on(topic).get("contacts")
    assert got is not None
    assert min(got.boundary_ids).startswith("a_")
    small = Checkpoint("contacts", AT, boundary_ids=boundary(2, "c_"))
    a.commit(small, based_on=a.current("contacts"))
    live: dict[bytes | None, bytes | None] = {}
    for m in topic.records():
        live[m.key()] = m.value()
    assert [k for k, v in live.items() if v is not None and b"/chunks/" in (k or b"")] == []


def test_json_of_a_chunked_main_record_names_its_chunks(topic: Topic) -> None:
    writer = store_on(topic)
    writer.commit(Checkpoint("contacts", AT, boundary_ids=boundary(3_000)), based_on=None)
    main = next(m for m in topic.records() if m.key() == b"p1/contacts")
    body = json.loads(main.value() or b"")
    assert body["chunks"]["count"] == sum("/chunks/" in k for k in keys(topic))
    assert body["chunks"]["token"] == body["token"]


def test_the_chunks_of_a_write_that_failed_midway_are_swept_later(topic: Topic) -> None:
    writer = store_on(topic)
    producer = writer._producer
    assert isinstance(producer, Producer)
    producer.refuse = lambda key: (key or b"").endswith(b"/1")  # the second chunk fails
    with pytest.raises(checkpoints_module.CheckpointStoreError):
        writer.commit(Checkpoint("contacts", AT, boundary_ids=boundary(3_000)), based_on=None)
    landed = {m.key() for m in topic.records() if m.value() is not None}
    assert landed
    assert all(b"/chunks/" in (k or b"") for k in landed)  # no main record
    producer.refuse = lambda _key: False
    writer.commit(Checkpoint("contacts", AT, boundary_ids=boundary(2)), based_on=None)
    live: dict[bytes | None, bytes | None] = {}
    for m in topic.records():
        live[m.key()] = m.value()
    assert [k for k, v in live.items() if v is not None] == [b"p1/contacts"]


def compact(topic: Topic) -> None:
    """What log compaction leaves: the last record of each key (tombstones kept)."""
    last: dict[bytes | None, Message] = {}
    for m in topic.records():
        last[m.key()] = m
    kept = {id(m) for m in last.values()}
    topic.drop(lambda m: id(m) not in kept)


def test_a_checkpoint_whose_predecessor_was_compacted_away_is_still_read(topic: Topic) -> None:
    store = store_on(topic)
    store.commit(Checkpoint("contacts", AT, run_id="a"), based_on=None)
    store.commit(Checkpoint("contacts", LATER, run_id="b"), based_on=store.current("contacts"))
    compact(topic)  # the record `b` is based on is gone
    got = store_on(topic).get("contacts")
    assert got is not None
    assert got.run_id == "b"


def test_a_reset_that_won_survives_compaction_of_the_losing_record_after_it(
    topic: Topic,
) -> None:
    runner, operator = store_on(topic), store_on(topic)
    runner.commit(Checkpoint("contacts", AT, run_id="a"), based_on=None)
    started_from = runner.current("contacts")
    operator.commit(Checkpoint("contacts", EARLY, reset_by="ops"))  # lands first
    runner.check_unchanged = lambda *_: None  # type: ignore[method-assign]
    with pytest.raises(checkpoints_module.CheckpointConflictError):
        runner.commit(Checkpoint("contacts", LATER, run_id="late"), based_on=started_from)
    compact(topic)  # keeps each key's last record: it must be the reset's, not the loser's
    got = store_on(topic).get("contacts")
    assert got is not None
    assert (got.updated_at, got.reset_by) == (EARLY, "ops")


def test_a_run_start_repairs_a_winner_left_behind_a_loser_by_a_crash(topic: Topic) -> None:
    runner, operator = store_on(topic), store_on(topic)
    runner.commit(Checkpoint("contacts", AT, run_id="a"), based_on=None)
    started_from = runner.current("contacts")
    operator.commit(Checkpoint("contacts", EARLY, reset_by="ops"))
    # the losing writer crashed right after its record landed: nobody repaired yet
    records, _ = runner.records_for(Checkpoint("contacts", LATER, run_id="late"), started_from)
    for key, value in records:
        topic.append(key, value)
    restarted = store_on(topic)
    assert restarted.current("contacts") is not None  # the run's start repairs
    compact(topic)
    got = store_on(topic).get("contacts")
    assert got is not None
    assert got.reset_by == "ops"
