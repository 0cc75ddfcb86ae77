"""The delete guard is per resource, and a delete never holds it for long (issue 17, failure
8b): a delete flushes its resource's exactly-once lane under the guard, and a lane stuck on a
slow broker must neither block the other resources nor keep its own resource's guard for the
full delivery timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest

from producer.app import DirectSink
from producer.kafka import publisher
from producer.kafka.publisher import DeliveryError
from producer.kafka.sink import KafkaSink
from producer.pipeline.deletes import DeleteIndex
from producer.webhooks.delivery import Verifier, sign
from producer.webhooks.receiver import WebhookReceiver
from tests.unit.test_deletes import SECRET, MemoryDeletes, Outcomes, deliver, envelope
from tests.unit.test_kafka_sink import ScriptedProducer, event, make_sink

pytestmark = pytest.mark.unit

WAIT_S = 5.0
"""The longest any step here waits for another thread: far above what each one needs."""
BLOCKED_S = 0.2
"""How long a thread that must wait for a guard is watched not getting it."""
TAG = {
    "id": "tag_1",
    "object": "tag",
    "name": "vip",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-02-01T00:00:00Z",
}


@dataclass
class StuckLane(ScriptedProducer):
    """An exactly-once lane whose flush does not get through (a broker that stopped
    answering) until the test releases it."""

    flushing: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def flush(self, timeout: float = 0) -> int:
        self.flushing.set()
        return 0 if self.release.wait(timeout) else 1


def receiver_on(sink: KafkaSink) -> tuple[WebhookReceiver, MemoryDeletes]:
    """The receiver as the service wires it: deletes and realtime changes through the
    shared producer, beside the resources' lanes."""
    deletes = MemoryDeletes()
    hook = WebhookReceiver(
        verifier=Verifier([SECRET]),
        sink=DirectSink(sink),
        deletes=deletes,
        observer=Outcomes(),
        producer_id="p",
        resources=["contacts", "tags"],
        topic_for=lambda r: f"t.{r}",
        realtime=True,
    )
    return hook, deletes


def stuck_contacts_lane() -> tuple[KafkaSink, ScriptedProducer, StuckLane]:
    shared = ScriptedProducer()
    sink, _, _ = make_sink(shared)
    lane = StuckLane()
    sink.lanes["contacts"] = lane  # the lane a sync run of contacts is writing through
    return sink, shared, lane


def test_a_delete_stuck_on_its_lane_does_not_block_another_resources_publish() -> None:
    sink, _, lane = stuck_contacts_lane()
    hook, _ = receiver_on(sink)
    with ThreadPoolExecutor(max_workers=2) as pool:
        deleting = pool.submit(deliver, hook, envelope(), "msg_1")
        try:
            assert lane.flushing.wait(WAIT_S), "the delete never reached the lane's flush"
            tagged = pool.submit(deliver, hook, envelope("v1.tag.updated", TAG), "msg_2")
            # a guarded publish of tags, while the contacts delete waits for its lane
            assert tagged.result(timeout=WAIT_S) == (200, "published")
        finally:
            lane.release.set()
        assert deleting.result(timeout=WAIT_S) == (200, "published")


def taken_while(
    held: AbstractContextManager[Any], take: Callable[[], Any], *, within: float
) -> bool:
    """Whether another thread gets the guard `take` returns, `within` seconds, while this one
    holds `held`. Once `held` is let go the other thread must get it: a guard that waited
    was waiting for `held`, nothing else."""
    got = threading.Event()

    def run() -> None:
        with take():
            got.set()

    thread = threading.Thread(target=run, daemon=True)
    with held:
        thread.start()
        during = got.wait(within)
    thread.join(WAIT_S)
    assert got.is_set()
    assert not thread.is_alive()
    return during


def test_guards_of_different_resources_do_not_exclude_each_other() -> None:
    index = DeleteIndex(retention_us=10**12)
    assert taken_while(index.holding("contacts"), lambda: index.holding("tags"), within=WAIT_S)
    assert not taken_while(
        index.holding("contacts"), lambda: index.holding("contacts"), within=BLOCKED_S
    )


def test_a_lane_that_does_not_flush_in_time_fails_the_delete_and_frees_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher, "DELETE_FLUSH_TIMEOUT_S", 0.2)
    sink, shared, lane = stuck_contacts_lane()
    hook, deletes = receiver_on(sink)
    started = time.monotonic()
    body = envelope()
    answer = hook.handle(body, sign(SECRET, "msg_1", time.time(), body))
    # a 503 within the bound (Svix delivers it again), not a guard held for minutes
    assert (answer.status, answer.outcome) == (503, "error")
    assert "lane of contacts" in answer.message
    assert time.monotonic() - started < WAIT_S
    assert not deletes.seen_delivery("msg_1")
    assert shared.delivered == []  # nothing of the delete went out
    # not left held: the resource's next guarded publish goes ahead
    assert taken_while(nullcontext(), lambda: deletes.holding("contacts"), within=WAIT_S)
    lane.release.set()
    assert deliver(hook, body, "msg_1") == (200, "published")  # the retry goes through


def test_a_delete_whose_lane_does_not_flush_in_time_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher, "DELETE_FLUSH_TIMEOUT_S", 0.2)
    sink, shared, _lane = stuck_contacts_lane()
    run = sink.begin_direct("contacts", "r")
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"lane of contacts still holds 1 message\(s\) after"):
        run.delete(event("contacts", "cnt_1"))
    assert time.monotonic() - started < WAIT_S
    assert shared.delivered == []
