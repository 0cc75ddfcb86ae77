"""The `askelephant-kafka` console script (also `python -m producer`)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import IO, TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from producer import __version__
from producer.config import ConfigError, Settings, add_flags, load_settings
from producer.observability.logging import configure_logging, redact
from producer.service import RunReport
from producer.sync.checkpoint import Checkpoint, reset_checkpoint
from producer.sync.run import RunStats
from producer.sync.timestamps import InvalidTimestampError, parse_instant

if TYPE_CHECKING:
    from producer.app import App
    from producer.webhooks.server import WebhookServer

log = logging.getLogger("producer")
EXIT_CONFIG = 2
SHUTDOWN_JOIN_S = 5.0
"""How long `run` waits for the sync workers after SIGTERM/SIGINT."""
SHUTDOWN_BUDGET_S = 8.5
"""Signal to exit, flush included: under the README's 10 s, with room for the interpreter."""
EXIT_STARTUP = 1
EXIT_FENCED = 3
"""Exactly-once: another instance with the same PRODUCER_ID took over."""
SIMULATOR_COMMAND = "askelephant-simulator"
SIMULATOR_MISSING = (
    "the API simulator is not installed: it ships separately as askelephant-simulator; "
    "from a source checkout run `pip install ./simulator`, then `askelephant-kafka simulator` "
    f"or `{SIMULATOR_COMMAND}`"
)


_LOGGING = frozenset({"LOG_LEVEL", "LOG_FORMAT"})
_CHECKPOINTS = _LOGGING | {"KAFKA_BOOTSTRAP_SERVERS", "CHECKPOINT_TOPIC", "PRODUCER_ID"}
COMMAND_SETTINGS: dict[str, frozenset[str]] = {
    "checkpoints": _CHECKPOINTS,
    # creates the checkpoint topic when it is missing
    "reset": _CHECKPOINTS | {"RESOURCES", "TOPIC_REPLICATION_FACTOR"},
    "dead-letters": _LOGGING
    | {"KAFKA_BOOTSTRAP_SERVERS", "DEAD_LETTER_TOPIC", "TOPIC_PREFIX", "PRODUCER_ID"},
}
"""The settings a command reads, where it is not all of them: its --help shows only these
flags (`run`, `sync` and `redrive` build the whole pipeline and take every one)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="askelephant-kafka",
        description="Turns the AskElephant API v2 into Avro change streams on Apache Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_flags(sub, COMMAND_SETTINGS.get(name))
        return sub

    command("run", "poll every resource on its schedule until SIGTERM/SIGINT")
    sync = command("sync", "one run per resource, then exit (0 only if all succeeded)")
    sync.add_argument("--resource", action="append", help="only this resource (repeatable)")
    show = command("checkpoints", "show the committed checkpoints")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    reset = command("reset", "write a new checkpoint for one resource")
    reset.add_argument("--resource", required=True)
    reset.add_argument(
        "--to", default=None, help="replay from this ISO-8601 instant (default: full export)"
    )
    letters = command("dead-letters", "count the dead letters by resource and reason")
    letters.add_argument("--json", action="store_true", help="print JSON instead of a table")
    letter_actions = letters.add_subparsers(dest="action")
    redrive = letter_actions.add_parser(
        "redrive",
        help="publish the dead-lettered records that now convert (after a fix or an upgrade)",
        description="publish the dead-lettered records that now convert; never a version "
        "older than, or equal to, the one already on the change topic",
    )
    add_flags(redrive)
    redrive.add_argument("--resource", action="append", help="only this resource (repeatable)")
    redrive.add_argument("--reason", action="append", help="only this reason (repeatable)")
    reset.add_argument(
        "--force",
        action="store_true",
        help="accept a --to in the future (no change before it will ever be published)",
    )
    commands.add_parser(
        "simulator",
        help=f"run the AskElephant API simulator (the separate {SIMULATOR_COMMAND} command, "
        "when the simulator is installed)",
        add_help=False,
    )
    return parser


def run_simulator_command(argv: Sequence[str]) -> int:
    """`askelephant-kafka simulator ...`: the simulator's own CLI, which ships separately."""
    try:
        from askelephant_simulator.runner import main as simulator_main
    except ImportError:
        # The product wheel does not carry the simulator (a test kit, not the product).
        print(SIMULATOR_MISSING, file=sys.stderr)
        return EXIT_CONFIG
    return simulator_main(argv, prog="askelephant-kafka simulator")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulator":
        return run_simulator_command(argv[1:])
    args = build_parser().parse_args(argv)
    from producer.app import StartupError

    settings: Settings | None = None
    try:
        settings = load_settings(flags=args)
        configure_logging(settings.log_level, settings.log_format)  # type: ignore[arg-type]
        settings.warn_ignored()
        if args.command == "run":
            return cmd_run(settings)
        if args.command == "sync":
            return cmd_sync(settings, args.resource)
        if args.command == "checkpoints":
            return cmd_checkpoints(settings, as_json=args.json)
        if args.command == "dead-letters" and args.action == "redrive":
            return cmd_redrive(settings, args.resource, args.reason)
        if args.command == "dead-letters":
            return cmd_dead_letters(settings, as_json=args.json)
        return cmd_reset(settings, args.resource, args.to, force=args.force)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KafkaException as exc:
        # librdkafka refuses to create a client whose settings it cannot apply (a CA file
        # that is no certificate, a key that does not fit its certificate): a configuration
        # error, one line, rather than a traceback.
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() != KafkaError._INVALID_ARG:
            raise
        print(f"configuration error: KAFKA_* settings: {redact(error.str())}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        # One line that says what to check; the traceback only helps at DEBUG.
        log.error(
            "start-up failed: %s",
            exc,
            exc_info=settings is not None and settings.log_level == "DEBUG",
            extra={"event": "startup_failed", "component": exc.component, "address": exc.address},
        )
        return EXIT_STARTUP


def cmd_run(settings: Settings) -> int:
    from producer.app import build_app, new_health
    from producer.observability.metrics import ProducerMetrics
    from producer.observability.server import ObservabilityServer

    stop = threading.Event()
    stop_requested = stop_on_signals(stop)
    # Serve /healthz and /metrics first, so probes answer while Kafka is still being reached.
    metrics = ProducerMetrics(settings.resources)
    health = new_health(settings)
    health.set_check_result("startup", False, "connecting to Kafka and the schema registry")
    server = None
    if settings.metrics_port:
        server = ObservabilityServer(metrics.registry, health, port=settings.metrics_port)
        server.start()
        log.info("serving /metrics, /healthz and /readyz on port %d", server.port)
    try:
        app = build_app(settings, stop=stop, metrics=metrics, health=health)
        health.set_check_result("startup", True, "connected")
        webhooks = start_deletes(app)
        log.info(
            "polling %s every %gs", ",".join(settings.resources), settings.poll_interval_seconds
        )
        busy = app.service.run_forever(join_timeout_s=SHUTDOWN_JOIN_S)
        if webhooks is not None:
            webhooks.stop(timeout_s=1.0)
        fenced = app.service.fenced
        left = app.close(flush_timeout_s=flush_budget(stop_requested))
        log.info(
            "stopped: %d message(s) left unacknowledged by Kafka%s; unfinished runs "
            "committed no checkpoint",
            left,
            f", still busy: {', '.join(busy)}" if busy else "",
            extra={"event": "stopped", "unacknowledged": left, "busy_workers": busy},
        )
    finally:
        if server is not None:
            server.stop()
    if fenced is not None:
        log.error("stopped: %s", fenced, extra={"event": "fenced", "component": "kafka"})
        return EXIT_FENCED
    return 0


def stop_on_signals(stop: threading.Event) -> list[float]:
    """SIGTERM and SIGINT set `stop`; the returned list gets the instant of the first one."""
    requested: list[float] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        requested.append(time.monotonic())
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return requested


def flush_budget(stop_requested: Sequence[float], default_s: float = SHUTDOWN_BUDGET_S) -> float:
    """One budget from the signal on: what the workers did not use, the flush may."""
    if not stop_requested:
        return default_s
    return max(0.5, SHUTDOWN_BUDGET_S - (time.monotonic() - stop_requested[0]))


def start_deletes(app: App) -> WebhookServer | None:
    """The webhook receiver (WEBHOOK_PORT) and one reconciliation thread per resource whose
    RECONCILE_INTERVAL_SECONDS is set; they stop with the service."""
    from producer.webhooks.server import WebhookServer

    if app.reconciler is not None:
        for resource in app.settings.resources:
            interval = app.settings.reconcile_interval.for_resource(resource)
            if interval > 0:
                threading.Thread(
                    target=app.reconciler.run_forever,
                    args=(resource, interval, app.stop),
                    name=f"reconcile-{resource}",
                    daemon=True,
                ).start()
                log.info("reconciling %s every %gs", resource, interval)
    if app.receiver is None:
        return None
    server = WebhookServer(app.receiver, port=app.settings.webhook_port)
    server.start()
    log.info("receiving webhooks on port %d at /webhooks/askelephant", server.port)
    return server


def cmd_sync(settings: Settings, only: list[str] | None) -> int:
    from producer.app import build_app

    resources = only or list(settings.resources)
    unknown = sorted(set(resources) - set(settings.resources))
    if unknown:
        raise ConfigError(f"--resource {unknown} is not in RESOURCES ({settings.resources})")
    stop = threading.Event()
    stop_requested = stop_on_signals(stop)
    app = build_app(settings, stop=stop)
    progress: _Progress | None = None
    if sys.stderr.isatty():  # elsewhere (a pipe, a log collector) no progress output at all
        progress = _Progress(Console(file=sys.stderr), resources)
        progress.start()
    done: dict[str, RunReport] = {}

    def sync(resource: str) -> None:
        done[resource] = app.service.sync_once(resource, progress)
        if progress is not None:  # its line stops at once, not when the slowest run ends
            progress.done(done[resource])

    # Resources run side by side, as in `run`: one slow or failing resource does not hold the
    # others back (each has its own API client and its own Kafka acknowledgements). Daemon
    # threads, as in `run`: after a signal, one stuck in a request must not hold the exit.
    workers = [
        threading.Thread(target=sync, args=(r,), name=f"sync-{r}", daemon=True) for r in resources
    ]
    try:
        for worker in workers:
            worker.start()
        while any(w.is_alive() for w in workers) and not stop.wait(0.2):
            pass
        deadline = time.monotonic() + SHUTDOWN_JOIN_S
        for worker in workers:  # one deadline for all, as in `run`
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
    except BaseException:
        if progress is not None:  # give the terminal back (cursor, log stream) first
            progress.close()
        raise
    finally:
        left = app.close(flush_timeout_s=flush_budget(stop_requested, 5.0))
    reports = [done.get(r) or _unfinished(r) for r in resources]
    if stop_requested:
        log.info(
            "stopped: %d message(s) left unacknowledged by Kafka; unfinished runs committed "
            "no checkpoint",
            left,
            extra={"event": "stopped", "unacknowledged": left},
        )
    if progress is not None:
        progress.finish(reports)
    print(render_summary(reports))
    if app.service.fenced is not None:
        log.error("stopped: %s", app.service.fenced, extra={"event": "fenced"})
        return EXIT_FENCED
    return 0 if all(r.outcome == "success" for r in reports) else 1


def _unfinished(resource: str) -> RunReport:
    """The report of a run still busy at shutdown (a request in flight): it commits nothing."""
    report = RunReport(resource, "-", "interrupted", RunStats(), 0, None, None, 0.0)
    report.error = "still busy when stopped; checkpoint unchanged"
    return report


class _Progress:
    """The live progress area of `sync` on a terminal: one line per resource, redrawn in
    place by rich; log lines are printed above it instead of tearing through it.

    Thread-safe: each resource's worker reports from its own thread (rich locks its
    console)."""

    def __init__(self, console: Console, resources: Sequence[str]) -> None:
        self.console = console
        self.started = time.monotonic()
        self.progress = Progress(
            SpinnerColumn(finished_text="-"),
            # markup off: a resource name or an outcome is shown as it is, never as markup.
            TextColumn("{task.description:<12}", markup=False),
            TextColumn("{task.fields[detail]}", markup=False),
            TimeElapsedColumn(),
            console=console,
            # Anything written to sys.stderr while live (a warning, a library's print)
            # goes above the area too.
            redirect_stderr=True,
            redirect_stdout=False,
        )
        self.tasks = {
            r: self.progress.add_task(r, total=None, detail="starting") for r in resources
        }
        self._handlers: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []
        self._live = False

    def start(self) -> None:
        self.progress.start()
        self._live = True
        # The log handler holds the terminal's stream itself, so the redirection of
        # sys.stderr does not reach it: point it at rich's proxy while the area is live.
        terminal, proxy = self.console.file, sys.stderr
        if proxy is terminal:  # not redirected (rich does so only on a terminal)
            return
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is terminal:
                self._handlers.append((handler, handler.stream))
                handler.setStream(proxy)

    def __call__(self, resource: str, stats: RunStats, acked: int) -> None:
        self.progress.update(self.tasks[resource], detail=self._counts(stats, acked))

    def _counts(self, stats: RunStats, acked: int, seconds: float | None = None) -> str:
        elapsed = time.monotonic() - self.started if seconds is None else seconds
        rate = stats.fetched / max(elapsed, 1e-6)
        return (
            f"pages {stats.pages:>5}  fetched {stats.fetched:>8}  acked {acked:>8}  "
            f"skipped {stats.deduplicated:>6}  {rate:>9,.0f} rec/s"
        )

    def done(self, report: RunReport) -> None:
        """A run has ended: its line shows the outcome and final counts, its clock stops."""
        counts = self._counts(report.stats, report.published, report.duration_s)
        detail = f"{report.outcome:<11}  {counts}"
        self.progress.update(self.tasks[report.resource], detail=detail, total=1, completed=1)

    def finish(self, reports: Sequence[RunReport]) -> None:
        """Show every run's outcome, draw the area a last time and leave it on the screen."""
        for report in reports:
            self.done(report)
        self.close()

    def close(self) -> None:
        """Stop redrawing and give the log handlers their stream back (idempotent)."""
        if not self._live:
            return
        self._live = False
        self.progress.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()


def render_summary(reports: Sequence[RunReport]) -> str:
    header = (
        "resource",
        "outcome",
        "fetched",
        "published",
        "dedup",
        "checkpoint before",
        "checkpoint after",
        "seconds",
    )
    rows = [
        (
            r.resource,
            r.outcome,
            str(r.stats.fetched),
            str(r.published),
            str(r.stats.deduplicated),
            r.checkpoint_before or "-",
            r.checkpoint_after or "-",
            f"{r.duration_s:.2f}",
        )
        for r in reports
    ]
    table = _table(header, rows)
    errors = [f"{r.resource}: {r.error}" for r in reports if r.error]
    return "\n".join([table, *errors])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_checkpoints(settings: Settings, *, as_json: bool) -> int:
    from producer.app import open_checkpoint_store

    # Read-only: a missing checkpoint topic is "no checkpoints yet"; nothing is created.
    store = open_checkpoint_store(settings, create=False)
    checkpoints = store.all()
    if as_json:
        body: dict[str, object] = {
            r: json.loads(c.to_json()) for r, c in sorted(checkpoints.items())
        }
        for resource, bad in sorted(store.corrupt_keys.items()):
            body[resource] = {"unreadable": bad.where, "error": bad.reason}
        for resource, mark in sorted(store.all_progress().items()):
            entry = body.setdefault(resource, {})
            assert isinstance(entry, dict)
            entry["progress"] = json.loads(mark.to_json())
        print(json.dumps(body, indent=2))
        return 0
    rows = [
        (
            resource,
            c.updated_at or "(full export)",
            str(len(c.boundary_ids) + len(c.ahead)) if c.boundary_complete else "overflow",
            str(c.record_count),
            c.completed_at,
            c.reset_by or "",
        )
        for resource, c in sorted(checkpoints.items())
    ]
    rows += [
        (resource, f"UNREADABLE at {bad.where}", "-", "-", "-", "-")
        for resource, bad in sorted(store.corrupt_keys.items())
    ]
    header = ("resource", "updated_at", "boundary", "records", "completed_at", "reset_by")
    print(_table(header, rows) if rows else "no checkpoints yet")
    for resource, bad in sorted(store.corrupt_keys.items()):
        print(f"{resource}: {bad.error()}")
    for resource, mark in sorted(store.all_progress().items()):
        done = sum(w.done for w in mark.windows)
        where = (
            f"{done} of {len(mark.windows)} windows done"
            if mark.mark is None
            else mark.mark.updated_at
        )
        print(
            f"{resource}: run {mark.run_id} in progress (or interrupted) at "
            f"{where} after {mark.pages} page(s), written {mark.written_at}; "
            "the next run resumes there"
            + ("" if mark.applies_to(checkpoints.get(resource)) else " (stale: ignored)")
        )
    return 0


def cmd_reset(settings: Settings, resource: str, to: str | None, *, force: bool = False) -> int:
    from producer.app import open_checkpoint_store

    if resource not in settings.resources:
        raise ConfigError(f"--resource {resource!r} is not in RESOURCES ({settings.resources})")
    now = datetime.now(UTC)
    if to is not None:
        try:
            instant = parse_instant(to)
        except InvalidTimestampError as exc:
            raise ConfigError(f"--to: {exc}") from None
        if instant > now and not force:
            # Replaying from the future skips every change until then: almost surely a typo.
            raise ConfigError(
                f"--to {to} is in the future (now {_iso(now)}); no change made before it would "
                "ever be published. Add --force if that is what you want."
            )
    store = open_checkpoint_store(settings)
    bad = store.corrupt_keys.get(resource)
    previous: Checkpoint | None = None if bad is not None else store.get(resource)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    checkpoint = reset_checkpoint(
        resource,
        to,
        previous=previous,
        reset_by=who,
        completed_at=_iso(now),
        run_id=f"reset-{uuid.uuid4()}",
        previous_note=f"unreadable checkpoint at {bad.where}" if bad is not None else None,
    )
    store.commit(checkpoint)
    store.clear_progress(resource)  # an interrupted run's mark belongs to the old start
    before = (
        f"an unreadable checkpoint at {bad.where}"
        if bad is not None
        else (previous.updated_at or "a full export")
        if previous is not None
        else "none"
    )
    log.warning(
        "checkpoint of %s reset by %s from %s to %s",
        resource,
        who,
        before,
        to or "a full export",
        extra={
            "event": "checkpoint_reset",
            "resource": resource,
            "reset_by": who,
            "reset_from": before,
            "reset_to": to,
            "forced": force,
        },
    )
    print(f"{resource}: checkpoint reset from {before} to {to or 'a full export'}")
    return 0


def cmd_dead_letters(settings: Settings, *, as_json: bool) -> int:
    from confluent_kafka.admin import AdminClient

    from producer.app import check_kafka
    from producer.redrive import count_by_resource_and_reason, read_dead_letters

    # Reading alone would wait out its timeouts on a refused login: fail first, named.
    check_kafka(settings, AdminClient(settings.kafka_config()))
    letters = [
        letter
        for letter in read_dead_letters(settings.kafka_config(), settings.dead_letter_topic)
        if letter.producer_id == settings.producer_id
    ]
    counts = count_by_resource_and_reason(letters)
    if as_json:
        rows = [{"resource": r, "reason": x, "count": n} for (r, x), n in counts.items()]
        print(json.dumps({"topic": settings.dead_letter_topic, "dead_letters": rows}, indent=2))
        return 0
    if not counts:
        print(f"no dead letters on {settings.dead_letter_topic}")
        return 0
    table = [(r, x, str(n)) for (r, x), n in counts.items()]
    print(_table(("resource", "reason", "count"), table))
    return 0


def cmd_redrive(settings: Settings, resources: list[str] | None, reasons: list[str] | None) -> int:
    from confluent_kafka.admin import AdminClient

    from producer.app import DirectSink, open_sink
    from producer.observability.metrics import ProducerMetrics
    from producer.redrive import load_deletes, newest_versions, read_dead_letters, redrive

    chosen = resources or list(settings.resources)
    unknown = sorted(set(chosen) - set(settings.resources))
    if unknown:
        raise ConfigError(f"--resource {unknown} is not in RESOURCES ({settings.resources})")
    letters = [
        letter
        for letter in read_dead_letters(settings.kafka_config(), settings.dead_letter_topic)
        if letter.producer_id == settings.producer_id
        and letter.resource in chosen
        and (not reasons or letter.reason in reasons)
    ]
    # No exactly-once lanes: initialising a lane's transactional id would fence the running
    # `run` that owns it (issue 17, failure 3). Redrive writes through the shared idempotent
    # producer (`DirectSink`) and touches no checkpoint or progress mark.
    sink, _store = open_sink(
        settings,
        AdminClient(settings.kafka_config()),
        ProducerMetrics(settings.resources),
        lanes=False,
    )
    try:
        # every redrive consults the deletes topic, whatever this invocation's webhook and
        # reconcile settings: a deleted record's dead letter must not bring it back
        deletes = load_deletes(settings, sink.producer)
        keys: dict[str, set[str]] = {}
        for letter in letters:
            if letter.record_id:
                keys.setdefault(letter.resource, set()).add(letter.record_id)
        newest = {
            resource: newest_versions(
                settings.kafka_config(), sink.registry, settings.topic_for(resource), ids
            )
            for resource, ids in keys.items()
        }
        report = redrive(
            letters,
            sink=DirectSink(sink),
            deletes=deletes,
            topic_for={r: settings.topic_for(r) for r in chosen},
            producer_id=settings.producer_id,
            newest_on_topic=newest,
            now_ms=int(time.time() * 1000),
        )
    finally:
        sink.close(10.0)
    rows = [
        (r, str(report.published[r]), str(report.skipped[r]))
        for r in sorted(set(report.published) | set(report.skipped))
    ]
    print(_table(("resource", "published", "skipped (already there or newer)"), rows))
    for (resource, reason), n in sorted(report.still_failing.items()):
        print(f"{resource}: {n} record(s) still cannot be published ({reason})")
    log.info(
        "redrive: %d published, %d skipped, %d still failing",
        sum(report.published.values()),
        sum(report.skipped.values()),
        sum(report.still_failing.values()),
        extra={"event": "redrive"},
    )
    return 0


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
