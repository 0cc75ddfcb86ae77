"""The producer over a secured broker: SASL_SSL (SCRAM-SHA-512) and mutual TLS.

Each broker is the project's own (devstack, `secure_kafka`): its only client listener is the
secured one, with certificates made at its start. The producer gets the security settings
the way an operator gives them: `KAFKA_*` variables (docs/security.md). Every test runs over
both modes unless it names one; connection failures must be one ERROR line naming the cause,
quickly, without the secret."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from askelephant_simulator.server import Simulator
from devstack.kafka import RunningKafka
from devstack.tls import make_ca
from producer.app import STARTUP_TIMEOUT_S, build_app
from producer.config import load_settings
from producer.sync.run import INVALID_UPDATED_AT
from producer.webhooks.server import WebhookServer
from tests.integration.conftest import events_on, latest_on
from tests.integration.test_deletes import WEBHOOKS, envelope, history, post
from tests.support.processes import cli, error_lines
from tests.support.secrets import SASL_PASSWORD, assert_no_secret


def test_sync_checkpoints_reset_and_dead_letters(
    secure_env: Callable[..., dict[str, str]], sim: Simulator
) -> None:
    bad = sim.dataset.ids("users")[0]
    sim.dataset.corrupt("users", bad, {"updated_at": "last tuesday"})
    env = secure_env(RESOURCES="tags,users")

    synced = cli(env, "sync")
    assert synced.returncode == 0, synced.stderr
    settings = load_settings(env)
    assert set(latest_on(settings, "tags")) == set(sim.dataset.ids("tags"))
    assert set(latest_on(settings, "users")) == set(sim.dataset.ids("users")) - {bad}

    shown = cli(env, "checkpoints", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {"tags", "users"} <= set(json.loads(shown.stdout))

    reset = cli(env, "reset", "--resource", "tags", "--to", "2020-01-01T00:00:00Z")
    assert reset.returncode == 0, reset.stderr
    again = json.loads(cli(env, "checkpoints", "--json").stdout)
    assert again["tags"]["reset_by"]

    letters = cli(env, "dead-letters", "--json")
    assert letters.returncode == 0, letters.stderr
    rows = json.loads(letters.stdout)["dead_letters"]
    assert rows == [{"resource": "users", "reason": INVALID_UPDATED_AT, "count": 1}]

    for result in (synced, shown, reset, letters):
        assert_no_secret(result)
        assert not error_lines(result), result.stderr


def test_an_exactly_once_sync(secure_env: Callable[..., dict[str, str]], sim: Simulator) -> None:
    env = secure_env(RESOURCES="tags", DELIVERY="exactly-once")
    first = cli(env, "sync")
    assert first.returncode == 0, first.stderr
    changed = sim.dataset.mutate("tags", 5)
    second = cli(env, "sync")
    assert second.returncode == 0, second.stderr

    # read_committed: what the transactions committed, each version once
    events = events_on(load_settings(env), "tags")
    versions = [(e.key, e.value["after"]["updated_at"]) for e in events if e.value is not None]
    assert len(versions) == len(set(versions)) == 150 + 5
    assert {key for key, _ in versions[-5:]} == set(changed)
    assert_no_secret(first)
    assert_no_secret(second)


def test_a_signed_webhook_delete_publishes_the_delete_and_its_tombstone(
    secure_env: Callable[..., dict[str, str]], sim: Simulator
) -> None:
    app = build_app(load_settings(secure_env(RESOURCES="contacts", **WEBHOOKS)))
    assert app.receiver is not None
    server = WebhookServer(app.receiver, host="127.0.0.1", port=0)
    server.start()
    try:
        assert app.service.sync_once("contacts").outcome == "success"
        victim = sim.dataset.records("contacts")[0]
        sim.dataset.soft_delete("contacts", [victim["id"]])

        answer = post(server, envelope("v1.contact.deleted", victim), "msg_secure_delete")
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "published"
        seen = history(app, "contacts", victim["id"])
        assert seen[-1] is None  # the tombstone, last
        assert seen[-2] is not None
        assert seen[-2]["op"] == "d"
    finally:
        server.stop()
        app.close()


def _fails_fast_with(
    env: dict[str, str], cause: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    started = time.monotonic()
    result = cli(env, "checkpoints")
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    [line] = errors
    assert "Kafka at 127." in line
    assert f"{cause} failed" in line
    assert "Traceback" not in result.stderr
    assert_no_secret(result)
    # named as soon as it is known, well before the metadata timeout (STARTUP_TIMEOUT_S)
    assert seconds < STARTUP_TIMEOUT_S - 5, seconds
    return result, line


@pytest.mark.parametrize("secure_kafka", ["sasl_ssl"], indirect=True)
def test_a_wrong_password_is_one_error_line_naming_authentication(
    secure_env: Callable[..., dict[str, str]],
) -> None:
    wrong = "Wrong-" + SASL_PASSWORD[::-1]
    result, line = _fails_fast_with(secure_env(KAFKA_SASL_PASSWORD=wrong), "authentication")
    assert "askelephant-producer" in line  # the user, so the operator knows whose password
    assert "KAFKA_SASL_PASSWORD" in line
    assert wrong not in result.stdout + result.stderr


def test_an_untrusted_broker_certificate_is_one_error_line_naming_trust(
    secure_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    other = make_ca(tmp_path, "another-ca")
    _, line = _fails_fast_with(secure_env(KAFKA_SSL_CA_LOCATION=str(other.cert)), "TLS trust")
    assert "KAFKA_SSL_CA_LOCATION" in line


def test_a_hostname_the_certificate_does_not_name_is_one_error_line_naming_it(
    secure_env: Callable[..., dict[str, str]], secure_kafka: RunningKafka
) -> None:
    # The broker's certificate names localhost and 127.0.0.1; "127.1" is the same loopback
    # address spelled as a name the certificate does not carry.
    port = secure_kafka.bootstrap_servers.rsplit(":", 1)[1]
    _, line = _fails_fast_with(
        secure_env(KAFKA_BOOTSTRAP_SERVERS=f"127.1:{port}"), "TLS hostname verification"
    )
    assert "not valid for 127.1" in line


@pytest.mark.parametrize("secure_kafka", ["mtls"], indirect=True)
def test_a_client_without_a_certificate_is_refused_by_the_mtls_broker(
    secure_env: Callable[..., dict[str, str]],
) -> None:
    env = secure_env()
    del env["KAFKA_SSL_CERTIFICATE_LOCATION"], env["KAFKA_SSL_KEY_LOCATION"]
    _, line = _fails_fast_with(env, "TLS client authentication")
    assert "KAFKA_SSL_CERTIFICATE_LOCATION" in line
