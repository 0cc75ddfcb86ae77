"""Deletes on the real broker: Svix-signed webhooks, replay dedup, no resurrection, and
reconciliation (README "Webhooks and deletes")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from askelephant_simulator.responses import RequestInfo
from askelephant_simulator.server import Simulator
from producer.app import App
from producer.config import Settings, load_settings
from producer.kafka.reader import scan_to_end
from producer.sync.timestamps import format_instant, instant_micros
from producer.webhooks.delivery import sign
from producer.webhooks.server import WebhookServer
from tests.integration.conftest import events_on
from tests.support.secrets import WEBHOOK_SECRET

SECRET = WEBHOOK_SECRET
OTHER_SECRET = "whsec_" + "YW5vdGhlci1zZWNyZXQtbm90LWNvbmZpZ3VyZWQ="
WEBHOOKS = {"WEBHOOK_PORT": "1", "ASKELEPHANT_WEBHOOK_SECRET": SECRET}
"""WEBHOOK_PORT switches the receiver on; the tests serve it on a free port of their own."""


@pytest.fixture
def serve() -> Iterator[Callable[[App], WebhookServer]]:
    servers: list[WebhookServer] = []

    def start(app: App) -> WebhookServer:
        assert app.receiver is not None
        server = WebhookServer(app.receiver, host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def envelope(event_type: str, obj: dict[str, Any], created_at_us: int | None = None) -> bytes:
    created = created_at_us if created_at_us is not None else int(time.time() * 1_000_000)
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": event_type,
            "api_version": "v1",
            "created_at": format_instant(created),
            "workspace_id": "wrks_test",
            "data": {"object": obj, "previous_attributes": {}},
        }
    ).encode()


def post(
    server: WebhookServer, body: bytes, delivery_id: str, secret: str = SECRET
) -> httpx.Response:
    headers = sign(secret, delivery_id, time.time(), body)
    return httpx.post(server.url, content=body, headers=headers, timeout=30)


def messages(app: App, resource: str) -> list[tuple[str, bytes | None]]:
    topic = app.settings.topic_for(resource)
    return [
        ((m.key() or b"").decode(), m.value())
        for m in scan_to_end(app.settings.kafka_config(), topic)
    ]


def history(app: App, resource: str, key: str) -> list[dict[str, Any] | None]:
    """Every message of `key` in order: the decoded event, or None for a tombstone."""
    return [e.value for e in events_on(app.settings, resource) if e.key == key]


def test_signed_delete_gives_d_then_tombstone_and_a_replay_adds_nothing(
    make_app: Callable[..., App], sim: Simulator, serve: Callable[[App], WebhookServer]
) -> None:
    app = make_app(**WEBHOOKS)
    assert app.service.sync_once("contacts").outcome == "success"
    server = serve(app)
    victim = sim.dataset.records("contacts")[0]
    sim.dataset.soft_delete("contacts", [victim["id"]])
    body = envelope("v1.contact.deleted", victim)

    answer = post(server, body, "msg_delete_1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "published"
    seen = history(app, "contacts", victim["id"])
    assert seen[-1] is None  # the tombstone, last
    deleted = seen[-2]
    assert deleted is not None
    assert deleted["op"] == "d"
    assert deleted["after"] is None
    assert deleted["before"]["id"] == victim["id"]
    assert deleted["before"]["updated_at"] == victim["updated_at"]
    count = len(messages(app, "contacts"))

    replay = post(server, body, "msg_delete_1")
    assert (replay.status_code, replay.json()["outcome"]) == (200, "duplicate")
    assert len(messages(app, "contacts")) == count

    # the handled delivery survives a restart (deletes topic)
    app.close()
    again = make_app(**WEBHOOKS)
    assert again.deletes is not None
    assert again.deletes.seen_delivery("msg_delete_1")
    restarted = serve(again)
    assert post(restarted, body, "msg_delete_1").json()["outcome"] == "duplicate"
    assert len(messages(again, "contacts")) == count


def test_bad_signature_and_malformed_body_get_4xx_and_publish_nothing(
    make_app: Callable[..., App], sim: Simulator, serve: Callable[[App], WebhookServer]
) -> None:
    app = make_app(**WEBHOOKS)
    assert app.service.sync_once("tags").outcome == "success"
    server = serve(app)
    count = len(messages(app, "tags"))
    victim = sim.dataset.records("tags")[0]
    body = envelope("v1.tag.deleted", victim)

    forged = post(server, body, "msg_forged", secret=OTHER_SECRET)
    assert (forged.status_code, forged.json()["outcome"]) == (401, "bad_signature")
    headers = sign(SECRET, "msg_stale", time.time() - 3600, body)
    stale = httpx.post(server.url, content=body, headers=headers, timeout=30)
    assert (stale.status_code, stale.json()["outcome"]) == (401, "bad_signature")
    unsigned = httpx.post(server.url, content=body, timeout=30)
    assert unsigned.status_code == 401
    malformed = post(server, b'{"type": "v1.tag.deleted"}', "msg_malformed")
    assert (malformed.status_code, malformed.json()["outcome"]) == (400, "malformed")

    assert len(messages(app, "tags")) == count
    assert app.deletes is not None
    assert not app.deletes.deleted_after("tags", victim["id"], 0)
    value = app.metrics.webhook_deliveries.labels(outcome="bad_signature")._value.get()
    assert value == 3


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_delete_landing_during_a_traversal_is_never_followed_by_an_older_version(
    make_app: Callable[..., App], sim: Simulator, delivery: str
) -> None:
    # exactly-once: the run's lane has a transaction open while the delete goes out
    app = make_app(PAGE_SIZE="20", DELIVERY=delivery, BATCH_PAGES="100", **WEBHOOKS)
    assert app.service.sync_once("contacts").outcome == "success"
    changed = sim.dataset.mutate("contacts", 30)
    rendered = [r for r in sim.dataset.records("contacts") if r["id"] in set(changed)]
    victim = min(rendered, key=lambda r: instant_micros(r["updated_at"]))  # on the first page
    receiver = app.receiver
    assert receiver is not None
    fired: list[int] = []

    def delete_while_the_page_is_in_flight(info: RequestInfo) -> None:
        # the first page is built (it holds the victim's version) but not yet sent
        if fired or info.resource != "contacts":
            return
        fired.append(info.seq)
        sim.dataset.soft_delete("contacts", [victim["id"]])
        deleted_at = max(int(time.time() * 1_000_000), instant_micros(victim["updated_at"]) + 1000)
        body = envelope("v1.contact.deleted", victim, deleted_at)
        answer = receiver.handle(body, sign(SECRET, "msg_mid_traversal", time.time(), body))
        assert answer.status == 200, answer.message

    remove = sim.add_request_hook(delete_while_the_page_is_in_flight)
    try:
        report = app.service.sync_once("contacts")
    finally:
        remove()
    assert report.outcome == "success", report.error
    assert fired
    assert app.metrics.records_suppressed.labels(resource="contacts")._value.get() >= 1
    assert app.service.sync_once("contacts").outcome == "success"  # a quiet run after it

    seen = history(app, "contacts", victim["id"])
    ops = [None if e is None else e["op"] for e in seen]
    assert ops[-2:] == ["d", None], ops  # nothing after the delete and its tombstone
    older = [e for e in seen[: ops.index("d")] if e is not None]
    assert all(
        instant_micros(e["updated_at"]) < instant_micros(victim["updated_at"]) for e in older
    )


def test_reconciliation_finds_a_removed_user_and_deletes_it_in_the_stream(
    make_app: Callable[..., App], sim: Simulator
) -> None:
    app = make_app(RECONCILE_INTERVAL_SECONDS="0,users=3600")
    assert app.service.sync_once("users").outcome == "success"
    assert app.reconciler is not None
    quiet = app.reconciler.reconcile("users")
    assert (quiet.outcome, quiet.deleted) == ("success", [])
    assert quiet.listed == 150
    assert quiet.requests == 2

    gone = sim.dataset.delete_random("users", 3)
    report = app.reconciler.reconcile("users")
    assert report.outcome == "success", report.error
    assert sorted(report.deleted or []) == sorted(gone)
    for user_id in gone:
        seen = history(app, "users", user_id)
        assert seen[-1] is None
        last = seen[-2]
        assert last is not None
        assert last["op"] == "d"
        assert last["before"]["id"] == user_id
    assert app.reconciler.reconcile("users").deleted == []  # nothing left to delete
    # an incremental run does not bring them back, and the counters show the cost
    assert app.service.sync_once("users").outcome == "success"
    assert all(history(app, "users", u)[-1] is None for u in gone)
    assert app.metrics.reconcile_requests.labels(resource="users")._value.get() == 6
    assert (
        app.metrics.deletes_published.labels(resource="users", source="reconcile")._value.get() == 3
    )


def test_reconciliation_never_runs_beside_an_incremental_run_of_the_resource(
    make_app: Callable[..., App],
) -> None:
    app = make_app(RECONCILE_INTERVAL_SECONDS="0,users=3600")
    assert app.reconciler is not None
    with app.service.run_lock("users"):
        assert app.reconciler.reconcile("users").outcome == "busy"


def test_realtime_updates_are_published_with_the_polling_event_id(
    make_app: Callable[..., App], sim: Simulator, serve: Callable[[App], WebhookServer]
) -> None:
    app = make_app(WEBHOOK_REALTIME="true", **WEBHOOKS)
    assert app.service.sync_once("companies").outcome == "success"
    server = serve(app)
    [changed] = sim.dataset.mutate("companies", 1)
    record = next(r for r in sim.dataset.records("companies") if r["id"] == changed)
    answer = post(server, envelope("v1.company.updated", record), "msg_update_1")
    assert (answer.status_code, answer.json()["outcome"]) == (200, "published")
    assert app.service.sync_once("companies").outcome == "success"
    seen = [e for e in history(app, "companies", changed) if e is not None]
    pushed, polled = seen[-2], seen[-1]
    assert pushed["op"] == polled["op"] == "u"
    assert pushed["event_id"] == polled["event_id"]
    assert pushed["after"] == polled["after"]
    # a version older than a known delete is not pushed either
    sim.dataset.soft_delete("companies", [changed])
    later = int(time.time() * 1_000_000)
    assert (
        post(server, envelope("v1.company.deleted", record, later), "msg_del_2").status_code == 200
    )
    late = post(server, envelope("v1.company.updated", record), "msg_update_late")
    assert late.json()["outcome"] == "suppressed"
    assert history(app, "companies", changed)[-1] is None


def test_run_serves_the_receiver_and_reconciles_users_as_a_process(
    make_env: Callable[..., dict[str, str]], sim: Simulator, tmp_path: Path
) -> None:
    from tests.support.processes import free_port, wait_for

    hook_port = free_port()
    env = make_env(
        WEBHOOK_PORT=str(hook_port),
        ASKELEPHANT_WEBHOOK_SECRET=f"{OTHER_SECRET},{SECRET}",  # a rotation: both accepted
        RECONCILE_INTERVAL_SECONDS="0,users=2",
        POLL_INTERVAL_SECONDS="1",
        RESOURCES="tags,users",
        LOG_FORMAT="json",
    )
    settings = load_settings(env)
    victim = sim.dataset.records("tags")[0]
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producer", "run"],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{hook_port}/webhooks/askelephant"

            def tags_exported() -> bool:
                try:
                    return len(history_of(settings, "tags", victim["id"])) == 1
                except Exception:  # the topic is not there yet
                    return False

            wait_for(tags_exported, 60, "the export of tags")

            def users_exported() -> bool:
                try:
                    return len(events_on(settings, "users")) == 150
                except Exception:  # the topic is not there yet
                    return False

            wait_for(users_exported, 60, "the export of users")  # before one is removed
            sim.dataset.soft_delete("tags", [victim["id"]])
            body = envelope("v1.tag.deleted", victim)
            headers = sign(SECRET, "msg_process_1", time.time(), body)
            answer = httpx.post(url, content=body, headers=headers, timeout=30)
            assert (answer.status_code, answer.json()["outcome"]) == (200, "published")
            [gone] = sim.dataset.delete_random("users", 1)
            wait_for(
                lambda: history_of(settings, "users", gone)[-1:] == [None],
                60,
                "reconciliation to delete the user",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0
    ops = [None if e is None else e["op"] for e in history_of(settings, "tags", victim["id"])]
    assert ops == ["r", "d", None]
    log = log_path.read_text()
    assert "reconciliation of users: success" in log
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in log
        assert secret.removeprefix("whsec_") not in log


def history_of(settings: Settings, resource: str, key: str) -> list[dict[str, Any] | None]:
    return [e.value for e in events_on(settings, resource) if e.key == key]
