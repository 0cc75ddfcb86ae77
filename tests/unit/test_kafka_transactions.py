"""The exactly-once run sink against a fake transactional producer: timed-out, abortable and
fatal errors as librdkafka reports them, and a broker's too-large refusal (issue 17, 8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from producer import schemas
from producer.kafka.publisher import DeliveryError, TopicTarget
from producer.kafka.sink import KafkaSink
from producer.kafka.transactions import COMMIT_ATTEMPTS
from producer.pipeline.dead_letters import TOO_LARGE
from producer.sync.checkpoint import Checkpoint
from producer.sync.progress import Progress
from tests.unit.test_kafka_sink import MockRegistry, Observer, ScriptedProducer, Store, event


def timed_out() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))


def abortable() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True))


def fatal() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._FATAL, "fatal", fatal=True))


@dataclass
class TransactionalProducer(ScriptedProducer):
    """Keeps librdkafka's transaction state: `begin` fails while a transaction is open or
    a commit was left half-done; `commit_errors` are raised by the next commits, in order."""

    commit_errors: list[KafkaException] = field(default_factory=list)
    abort_errors: list[KafkaException] = field(default_factory=list)
    state: str = "new"
    calls: list[str] = field(default_factory=list)
    calls_at: list[str] = field(default_factory=list)
    """The transaction state at each `produce`."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.calls_at.append(self.state)
        super().produce(topic, *args, **kwargs)

    def init_transactions(self, _timeout: float = 0) -> None:
        self.calls.append("init")
        self.state = "ready"

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        if self.state != "ready":
            raise KafkaException(KafkaError(KafkaError._STATE, f"cannot begin in {self.state}"))
        self.state = "open"

    def commit_transaction(self, _timeout: float = 0) -> None:
        self.calls.append("commit")
        self.poll()
        if self.commit_errors:
            error = self.commit_errors.pop(0)
            code = error.args[0]
            self.state = (
                "fatal"
                if code.fatal()
                else "abortable"
                if code.txn_requires_abort()
                else "committing"
            )
            raise error
        self.state = "ready"

    def abort_transaction(self, _timeout: float = 0) -> None:
        self.calls.append("abort")
        if self.abort_errors:
            raise self.abort_errors.pop(0)
        if self.state == "fatal":
            raise fatal()
        self.queue.clear()
        self.state = "ready"


def transactional_sink(
    lanes: list[TransactionalProducer],
) -> tuple[KafkaSink, Store]:
    """A sink whose lane producers come from `lanes`, in order (a reopened lane takes the
    next one)."""
    store = Store()
    spare = iter(lanes)

    def lane_producer(_resource: str) -> TransactionalProducer:
        return next(spare)

    sink = KafkaSink(
        ScriptedProducer(),  # type: ignore[arg-type]
        MockRegistry({"url": "mock://transactions"}),
        targets={"contacts": TopicTarget("t.contacts", 1_000_000)},
        schemas={"contacts": schemas.schema_str("contacts")},
        dead_letter=TopicTarget("t.dlq", 16_000_000),
        checkpoints=store,
        observer=Observer(),
        producer_id="p",
        lane_producer=lane_producer,  # type: ignore[arg-type]
    )
    sink.register_schemas()
    sink.open_lanes(["contacts"])
    return sink, store


CHECKPOINT = Checkpoint("contacts", "2026-03-01T00:00:00Z")


def test_a_timed_out_commit_is_retried_and_goes_through() -> None:
    lane = TransactionalProducer(commit_errors=[timed_out()])
    sink, store = transactional_sink([lane])
    run = sink.begin("contacts", "r1")
    assert run.publish(event("contacts", "c1")) is None
    run.commit(CHECKPOINT, based_on=None)
    assert lane.calls.count("commit") == 2
    assert store.commits[-1] == CHECKPOINT
    sink.begin("contacts", "r2").abort()  # the lane is usable again


def test_a_commit_that_keeps_timing_out_is_aborted_and_the_next_run_can_begin() -> None:
    lane = TransactionalProducer(commit_errors=[timed_out() for _ in range(COMMIT_ATTEMPTS)])
    sink, store = transactional_sink([lane])
    run = sink.begin("contacts", "r1")
    run.publish(event("contacts", "c1"))
    with pytest.raises(DeliveryError, match="not committed"):
        run.commit(CHECKPOINT, based_on=None)
    assert lane.calls[-1] == "abort"
    assert store.commits == []
    sink.begin("contacts", "r2")  # before: "cannot begin in committing", on every run
    assert lane.state == "open"


def test_an_abortable_commit_error_aborts_and_the_next_run_can_begin() -> None:
    lane = TransactionalProducer(commit_errors=[abortable()])
    sink, _ = transactional_sink([lane])
    run = sink.begin("contacts", "r1")
    run.publish(event("contacts", "c1"))
    with pytest.raises(DeliveryError):
        run.commit(CHECKPOINT, based_on=None)
    assert lane.calls.count("commit") == 1  # never retried
    sink.begin("contacts", "r2")


def test_a_fatal_commit_error_reopens_the_lane() -> None:
    first, second = TransactionalProducer(commit_errors=[fatal()]), TransactionalProducer()
    sink, _ = transactional_sink([first, second])
    run = sink.begin("contacts", "r1")
    run.publish(event("contacts", "c1"))
    with pytest.raises(DeliveryError):
        run.commit(CHECKPOINT, based_on=None)
    assert sink.lanes["contacts"] is second
    assert second.calls == ["init"]
    sink.begin("contacts", "r2")


def test_an_abort_that_fails_reopens_the_lane() -> None:
    first = TransactionalProducer(abort_errors=[timed_out()])
    second = TransactionalProducer()
    sink, _ = transactional_sink([first, second])
    sink.begin("contacts", "r1").abort()
    assert sink.lanes["contacts"] is second


def test_a_broker_refusal_aborts_the_batch_once_and_the_retry_dead_letters_it() -> None:
    lane = TransactionalProducer(errors={"t.contacts": KafkaError.MSG_SIZE_TOO_LARGE})
    sink, _ = transactional_sink([lane])
    big = event("contacts", "c1", first_name="x" * 50_000)
    run = sink.begin("contacts", "r1")
    assert run.publish(big) is None  # within the configured limit: sent
    with pytest.raises(DeliveryError, match="too large"):
        run.commit(CHECKPOINT, based_on=None)
    assert lane.calls[-1] == "abort"
    lane.errors.clear()
    retry = sink.begin("contacts", "r2")
    rejection = retry.publish(big)  # the same batch again: refused before it is sent
    assert rejection is not None
    assert rejection.reason == TOO_LARGE
    assert retry.publish(event("contacts", "c2")) is None  # small events still go
    retry.commit(CHECKPOINT, based_on=None)


@dataclass
class ChunkingStore(Store):
    """Writes every checkpoint and mark as two chunks and a main record, as the real store
    does for a large one."""

    def records_for(
        self, checkpoint: Checkpoint, based_on: Checkpoint | None = None
    ) -> tuple[list[tuple[bytes, bytes | None]], Checkpoint]:
        key = checkpoint.resource.encode()
        chunks = [(key + b"/chunks/t1/0", b"a"), (key + b"/chunks/t1/1", b"b")]
        return [*chunks, (key, checkpoint.to_json())], checkpoint

    def progress_records(self, progress: Progress) -> list[tuple[bytes, bytes | None]]:
        key = self.progress_key(progress.resource)
        return [(b"contacts/chunks/t2/0", b"c"), (key, progress.to_json())]


def test_a_chunked_checkpoint_and_mark_go_in_their_transaction_whole() -> None:
    """Issue 17, failure 8a: the chunks of a large boundary are in the transaction of the
    record that names them (read_committed readers see all or none), and the chunks of the
    replaced records are swept once it committed."""
    lane = TransactionalProducer()
    sink, _ = transactional_sink([lane])
    store = ChunkingStore()
    sink.checkpoints = store
    run = sink.begin("contacts", "r1")
    mark = Progress("contacts", CHECKPOINT, False, None, "r1", 1, "now")
    run.mark_progress(mark)
    run.commit(CHECKPOINT, based_on=None)
    written = [(key, lane.calls_at[i]) for i, (topic, key, _) in enumerate(lane.delivered)]
    assert [k for k, _ in written] == [
        b"contacts/chunks/t2/0",
        b"contacts/progress",
        b"contacts/chunks/t1/0",
        b"contacts/chunks/t1/1",
        b"contacts",
        b"contacts/progress",  # the mark's tombstone
    ]
    assert all(state == "open" for _, state in written)  # each inside a transaction
    assert lane.calls.count("commit") == 2
    assert store.sweeps == 2  # after the mark, after the checkpoint
