"""Checkpoint topic and store on the real broker: corrupt records, reset audit, topic policy,
read-only commands, and start-up failures reported as one line."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from askelephant_simulator.server import Simulator
from producer import app as app_module
from producer.app import App, StartupError, build_app, open_checkpoint_store
from producer.cli import main
from producer.config import load_settings
from producer.kafka.admin import TopicSpec, ensure_topics, topic_config
from producer.kafka.checkpoints import CheckpointConflictError
from producer.kafka.listings import ListingStore
from producer.kafka.publisher import new_producer
from producer.sync.checkpoint import Checkpoint, CheckpointFormatError
from producer.sync.progress import Progress, WindowProgress
from tests.support.processes import cli


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`main()` run in-process installs its log handler on the root logger; take it away."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_raw(env: dict[str, str], resource: str, value: bytes | None) -> None:
    """Put a record on the checkpoint topic as a broken or foreign writer would."""
    settings = load_settings(env)
    producer = new_producer(settings.kafka_config())
    producer.produce(
        settings.checkpoint_topic, key=f"{settings.producer_id}/{resource}".encode(), value=value
    )
    assert producer.flush(30) == 0


def topics(env: dict[str, str]) -> set[str]:
    settings = load_settings(env)
    return set(AdminClient(settings.kafka_config()).list_topics(timeout=30).topics)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ corrupt records


def test_a_corrupt_record_followed_by_a_valid_one_is_skipped_and_counted(
    make_env: Callable[..., dict[str, str]],
    make_app: Callable[..., App],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = make_env(RESOURCES="tags")
    app = make_app(**env)
    assert app.service.sync_once("tags").outcome == "success"
    write_raw(env, "tags", b"{not json")
    # a running producer reads it at the next run's start: only that resource fails ...
    failed = app.service.sync_once("tags")
    assert failed.outcome == "failure"
    assert "askelephant-kafka reset --resource tags" in (failed.error or "")
    # ... and the advice works: a reset writes a valid record after it
    reset = cli(env, "reset", "--resource", "tags")
    assert reset.returncode == 0, reset.stderr
    assert app.service.sync_once("tags").outcome == "success"

    with caplog.at_level(logging.WARNING, logger="producer.kafka.checkpoints"):
        store = open_checkpoint_store(load_settings(env))
    checkpoint = store.get("tags")
    assert checkpoint is not None
    assert checkpoint.updated_at is not None
    assert store.corrupt_records == 1
    assert store.corrupt_keys == {}
    assert "skipped, a later readable checkpoint" in caplog.text


def test_a_corrupt_latest_record_fails_only_its_resource_and_reset_fixes_it(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App]
) -> None:
    env = make_env(RESOURCES="tags,users")
    app = make_app(**env)
    for resource in ("tags", "users"):
        assert app.service.sync_once(resource).outcome == "success"
    write_raw(env, "tags", b'{"resource": "tags", "updated_at": "yesterday"}')

    store = open_checkpoint_store(load_settings(env))
    assert store.corrupt_records == 1
    assert set(store.corrupt_keys) == {"tags"}
    assert store.get("users") is not None  # the other resource works
    with pytest.raises(CheckpointFormatError) as info:
        store.get("tags")
    assert "askelephant-kafka reset --resource tags" in str(info.value)

    shown = cli(env, "checkpoints")
    assert shown.returncode == 0, shown.stderr
    assert "UNREADABLE" in shown.stdout
    assert "users" in shown.stdout

    # The advice in the message works although the latest record is unreadable.
    fixed = cli(env, "reset", "--resource", "tags")
    assert fixed.returncode == 0, fixed.stderr
    assert "unreadable checkpoint" in fixed.stdout
    after = open_checkpoint_store(load_settings(env))
    assert after.corrupt_keys == {}
    reset = after.get("tags")
    assert reset is not None
    assert reset.updated_at is None  # a full export
    assert reset.resets[-1].note is not None
    assert "unreadable" in reset.resets[-1].note


# ------------------------------------------------------------------------ reset audit


def test_a_reset_is_logged_and_its_history_survives_later_runs(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App]
) -> None:
    env = make_env(RESOURCES="tags", LOG_FORMAT="json")
    app = make_app(**env)
    assert app.service.sync_once("tags").outcome == "success"
    before = app.store.get("tags")
    assert before is not None

    result = cli(env, "reset", "--resource", "tags", "--to", "2020-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    audit = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "checkpoint_reset"
    ]
    assert len(audit) == 1
    assert audit[0]["resource"] == "tags"
    assert audit[0]["reset_from"] == before.updated_at
    assert audit[0]["reset_to"] == "2020-01-01T00:00:00Z"
    assert "@" in audit[0]["reset_by"]

    # The next run writes a new checkpoint; the reset history is still in it.
    rerun = make_app(**env)
    assert rerun.service.sync_once("tags").outcome == "success"
    latest = open_checkpoint_store(load_settings(env)).get("tags")
    assert latest is not None
    assert latest.run_id
    assert not latest.run_id.startswith("reset-")
    assert [(e.from_, e.to) for e in latest.resets] == [(before.updated_at, "2020-01-01T00:00:00Z")]
    assert latest.resets[0].by == audit[0]["reset_by"]


def test_a_reset_to_the_future_needs_force(make_env: Callable[..., dict[str, str]]) -> None:
    env = make_env(RESOURCES="tags")
    refused = cli(env, "reset", "--resource", "tags", "--to", "2099-01-01T00:00:00Z")
    assert refused.returncode == 2
    assert "in the future" in refused.stderr
    assert "--force" in refused.stderr
    assert load_settings(env).checkpoint_topic not in topics(env)  # nothing was written

    forced = cli(env, "reset", "--resource", "tags", "--to", "2099-01-01T00:00:00Z", "--force")
    assert forced.returncode == 0, forced.stderr
    stored = open_checkpoint_store(load_settings(env)).get("tags")
    assert stored is not None
    assert stored.updated_at == "2099-01-01T00:00:00Z"


# ----------------------------------------------------------------------------- topics


@pytest.mark.parametrize("policy", ["delete", "compact,delete"])
def test_a_checkpoint_topic_that_is_not_compact_only_is_refused_before_other_topics(
    make_env: Callable[..., dict[str, str]], policy: str
) -> None:
    env = make_env(RESOURCES="tags")
    settings = load_settings(env)
    admin = AdminClient(settings.kafka_config())
    ensure_topics(admin, [TopicSpec(settings.checkpoint_topic, 1, 1, {"cleanup.policy": policy})])

    with pytest.raises(StartupError, match=r"cleanup\.policy") as info:
        build_app(settings)
    assert info.value.component == "checkpoint topic"
    assert settings.topic_for("tags") not in topics(env)  # no change topic was created


def test_a_created_checkpoint_topic_is_compact_only(
    make_env: Callable[..., dict[str, str]],
) -> None:
    env = make_env(RESOURCES="tags")
    settings = load_settings(env)
    store = open_checkpoint_store(settings)
    assert store.all() == {}
    admin = AdminClient(settings.kafka_config())
    assert topic_config(admin, settings.checkpoint_topic)["cleanup.policy"] == "compact"


def test_read_only_checkpoints_command_creates_nothing(
    make_env: Callable[..., dict[str, str]],
) -> None:
    env = make_env()
    shown = cli(env, "checkpoints")
    assert shown.returncode == 0, shown.stderr
    assert "no checkpoints yet" in shown.stdout
    as_json = cli(env, "checkpoints", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {}
    prefix = env["TOPIC_PREFIX"]
    assert not {t for t in topics(env) if t.startswith(prefix)}


def test_the_checkpoints_command_shows_progress_marks(
    make_env: Callable[..., dict[str, str]],
) -> None:
    """One traversal's mark shows where it resumes; a sliced export's, how many windows are
    done (README "Resumable runs")."""
    env = make_env()
    store = open_checkpoint_store(load_settings(env))
    mark = Checkpoint("contacts", "2026-03-01T00:00:00Z", run_id="r1")
    common = {"snapshot": True, "based_on": None, "pages": 4, "written_at": "2026-03-01T00:01:00Z"}
    store.write_progress(Progress(resource="contacts", mark=mark, run_id="r1", **common))
    tags_mark = Checkpoint("tags", "2026-01-15T00:00:00Z", run_id="r2")
    windows = (
        WindowProgress("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", tags_mark, True, 1),
        WindowProgress("2026-02-01T00:00:00Z", None, None, False, 1),
    )
    store.write_progress(
        Progress(resource="tags", mark=None, run_id="r2", windows=windows, **common)
    )
    shown = cli(env, "checkpoints")
    assert shown.returncode == 0, shown.stderr
    assert "contacts: run r1 in progress (or interrupted) at 2026-03-01T00:00:00Z" in shown.stdout
    assert "tags: run r2 in progress (or interrupted) at 1 of 2 windows done" in shown.stdout
    as_json = json.loads(cli(env, "checkpoints", "--json").stdout)
    assert len(as_json["tags"]["progress"]["windows"]) == 2


# ------------------------------------------------------------------------ start-up


def test_stray_kafka_variables_do_not_stop_a_command(
    make_env: Callable[..., dict[str, str]], make_app: Callable[..., App]
) -> None:
    env = make_env(RESOURCES="tags")
    assert make_app(**env).service.sync_once("tags").outcome == "success"
    stray = {
        "KAFKA_HOME": "/opt/kafka",
        "KAFKA_HEAP_OPTS": "-Xmx1G",
        "KAFKA_OPTS": "-Dx=y",
        # What a Kubernetes service link named "kafka" injects.
        "KAFKA_PORT": "tcp://127.0.0.1:9",
        "KAFKA_PORT_9092_TCP_ADDR": "127.0.0.1",
    }
    shown = cli({**env, **stray}, "checkpoints")
    assert shown.returncode == 0, shown.stderr
    assert "tags" in shown.stdout
    assert "KAFKA_HOME" in shown.stderr  # the warning
    assert "KAFKA_PORT" in shown.stderr
    assert "-Xmx1G" not in shown.stderr  # names only, never values


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


def test_an_unreachable_broker_is_one_error_line(
    make_env: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    env = make_env(KAFKA_BOOTSTRAP_SERVERS=address, RESOURCES="tags")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(app_module, "STARTUP_TIMEOUT_S", 2.0)
    assert main(["sync"]) == 1
    err = capfd.readouterr().err
    errors = _error_lines(err)
    assert len(errors) == 1, err
    assert "Kafka" in errors[0]
    assert address in errors[0]
    assert "KAFKA_BOOTSTRAP_SERVERS" in errors[0]  # what to check
    assert "Traceback" not in err
    assert "|FAIL|" not in err  # no raw librdkafka lines on stderr


def test_an_unreachable_registry_is_one_error_line_naming_its_url(
    make_env: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    env = make_env(SCHEMA_REGISTRY_URL=url, RESOURCES="tags")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["sync"]) == 1
    err = capfd.readouterr().err
    errors = _error_lines(err)
    assert len(errors) == 1, err
    assert "schema registry" in errors[0]
    assert url in errors[0]
    assert "SCHEMA_REGISTRY_URL" in errors[0]
    assert "Traceback" not in err


def test_a_bad_checkpoint_topic_is_one_error_line_naming_it(
    make_env: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    env = make_env(RESOURCES="tags")
    settings = load_settings(env)
    admin = AdminClient(settings.kafka_config())
    ensure_topics(admin, [TopicSpec(settings.checkpoint_topic, 1, 1, {"cleanup.policy": "delete"})])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["sync"]) == 1
    err = capfd.readouterr().err
    errors = _error_lines(err)
    assert len(errors) == 1, err
    assert settings.checkpoint_topic in errors[0]
    assert "cleanup.policy" in errors[0]
    assert "Traceback" not in err


def test_checkpoint_json_written_by_a_reset_round_trips(
    make_env: Callable[..., dict[str, str]], sim: Simulator
) -> None:
    env = make_env(RESOURCES="tags")
    result = cli(env, "reset", "--resource", "tags", "--to", "2021-05-05T00:00:00Z")
    assert result.returncode == 0, result.stderr
    shown = cli(env, "checkpoints", "--json")
    body = json.loads(shown.stdout)["tags"]
    assert Checkpoint.from_json(json.dumps(body)).resets[0].to == "2021-05-05T00:00:00Z"
    assert body["resets"][0]["from"] is None


def test_a_reset_landing_between_a_runs_check_and_its_write_is_not_overwritten(
    make_env: Callable[..., dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17, failure 9: the compare-and-set was check-then-write; a reset from another
    process between the two was overwritten. The topic's order decides now."""
    settings = load_settings(make_env(RESOURCES="tags"))
    runner = open_checkpoint_store(settings)  # the `run` process
    runner.commit(Checkpoint("tags", "2026-01-01T00:00:00Z", run_id="run-1"))
    started_from = runner.current("tags")
    assert started_from is not None
    # the run has done its check, then the operator's reset lands before its write
    monkeypatch.setattr(runner, "check_unchanged", lambda *_a, **_k: None)
    operator = open_checkpoint_store(settings)
    reset = Checkpoint("tags", "2020-01-01T00:00:00Z", reset_by="ops@host")
    operator.commit(reset)
    with pytest.raises(CheckpointConflictError, match="lost"):
        runner.commit(
            Checkpoint("tags", "2026-02-01T00:00:00Z", run_id="run-2"), based_on=started_from
        )
    monkeypatch.undo()
    for reader in (open_checkpoint_store(settings), runner, operator):
        stored = reader.current("tags")
        assert stored is not None
        assert (stored.updated_at, stored.reset_by) == ("2020-01-01T00:00:00Z", "ops@host")
    # the next run, from the reset, commits as usual
    runner.commit(
        Checkpoint("tags", "2020-06-01T00:00:00Z", run_id="run-3"), based_on=runner.current("tags")
    )
    assert open_checkpoint_store(settings).get("tags").updated_at == "2020-06-01T00:00:00Z"


def test_reconciliations_last_listing_is_kept_whole_beside_the_checkpoints(
    make_env: Callable[..., dict[str, str]],
) -> None:
    """The listing that lets reconciliation find deletes whose change-topic history expired
    (producer/kafka/listings.py): chunked, read back whole, never taken for a checkpoint."""
    settings = load_settings(make_env(RESOURCES="users"))
    store = open_checkpoint_store(settings)  # creates the topic
    producer = new_producer(settings.kafka_config())
    listings = ListingStore(
        settings.kafka_config(), settings.checkpoint_topic, settings.producer_id, producer
    )
    assert listings.load("users") is None
    many = {f"usr_{i:06d}" for i in range(30_000)}  # several chunks
    listings.save("users", many, 1_000)
    loaded = listings.load("users")
    assert loaded is not None
    assert (loaded.ids, loaded.listed_at_us) == (many, 1_000)
    listings.save("users", {"usr_000001"}, 2_000)
    again = listings.load("users")
    assert again is not None
    assert again.ids == {"usr_000001"}
    store.load()
    assert store.corrupt_records == 0
    assert store.all() == {}


# ------------------------------------------------------------------ a boundary of any size


def raw_checkpoint_records(env: dict[str, str]) -> list[tuple[str, bytes | None]]:
    """(key, value) of every record on the checkpoint topic, read_committed, in each
    partition's order."""
    from producer.kafka.reader import scan_to_end

    settings = load_settings(env)
    return [
        ((m.key() or b"").decode(), m.value())
        for m in scan_to_end(settings.kafka_config(), settings.checkpoint_topic)
    ]


@pytest.mark.parametrize("delivery", ["exactly-once", "at-least-once"])
def test_a_checkpoint_of_30000_boundary_ids_survives_a_restart_whole(
    delivery: str,
    make_env: Callable[..., dict[str, str]],
    make_app: Callable[..., App],
) -> None:
    """Issue 17, failure 8a: the boundary is written as chunk records (in the checkpoint's
    transaction in exactly-once mode), each under the topic's limit, and a fresh store reads
    it whole; the chunks of the checkpoint it replaces get tombstones."""
    env = make_env(RESOURCES="contacts", DELIVERY=delivery)
    settings = load_settings(env)
    # three partitions: chunks and their main record need not share one
    ensure_topics(
        AdminClient(settings.kafka_config()),
        [TopicSpec(settings.checkpoint_topic, 3, -1, {"cleanup.policy": "compact"})],
    )
    app = make_app(**env)
    at = "2026-03-02T00:00:00Z"
    ids = frozenset(f"cnt_{i:026d}" for i in range(30_000))
    first = Checkpoint("contacts", at, boundary_ids=ids, run_id="run-1", record_count=30_000)
    run = app.sink.begin("contacts", "run-1")
    run.commit(first, based_on=None)

    fresh = open_checkpoint_store(settings, create=False)
    got = fresh.get("contacts")
    assert got is not None
    assert got.boundary_complete
    assert got.boundary_ids == ids
    assert fresh.corrupt_keys == {}
    records = raw_checkpoint_records(env)
    # no record grows with the boundary (one record of it all is about 1 MB)
    assert max(len(v or b"") for _, v in records) < 300_000
    assert sum("/chunks/" in k for k, _ in records) > 1

    # a progress mark of as many ids rides the same way
    mark = Checkpoint("contacts", at, boundary_ids=ids | {"cnt_x"}, run_id="run-2")
    progress = Progress("contacts", mark, False, "run-1", "run-2", 7, "now")
    second_run = app.sink.begin("contacts", "run-2")
    second_run.mark_progress(progress)
    assert open_checkpoint_store(settings, create=False).progress("contacts") == progress

    # the run completes: its checkpoint replaces the first, whose chunks get tombstones
    second = Checkpoint("contacts", at, boundary_ids=ids | {"cnt_y"}, run_id="run-2")
    second_run.commit(second, based_on=app.store.get("contacts"))
    after = open_checkpoint_store(settings, create=False)
    got = after.get("contacts")
    assert got is not None
    assert got.boundary_ids == second.boundary_ids
    assert after.progress("contacts") is None

    def live_chunk_tokens() -> set[str]:
        latest: dict[str, bytes | None] = {}
        for key, value in raw_checkpoint_records(env):
            latest[key] = value
        return {k.split("/")[-2] for k, v in latest.items() if v is not None and "/chunks/" in k}

    # A transaction's commit markers can land a moment after its commit returns: the sweep
    # waits until it reads the new checkpoint, and the next sweep does what one could not.
    deadline = time.monotonic() + 20
    while live_chunk_tokens() != {got.token} and time.monotonic() < deadline:
        app.store.sweep_chunks()
        time.sleep(0.5)
    assert live_chunk_tokens() == {got.token}, "chunks of replaced records stay"
