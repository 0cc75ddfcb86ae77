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
from typing import TextIO

from producer import __version__
from producer.config import ConfigError, Settings, add_flags, load_settings
from producer.observability.logging import configure_logging
from producer.service import RunReport
from producer.sync.checkpoint import Checkpoint, reset_checkpoint
from producer.sync.run import RunStats
from producer.sync.timestamps import InvalidTimestampError, parse_instant

log = logging.getLogger("producer")
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="askelephant-kafka",
        description="Turns the AskElephant API v2 into Avro change streams on Apache Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_flags(sub)
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
    commands.add_parser("simulator", help="run the AskElephant API simulator", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulator":
        from producer.simulator.runner import main as simulator_main

        return simulator_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(flags=args)
        configure_logging(settings.log_level, settings.log_format)  # type: ignore[arg-type]
        if args.command == "run":
            return cmd_run(settings)
        if args.command == "sync":
            return cmd_sync(settings, args.resource)
        if args.command == "checkpoints":
            return cmd_checkpoints(settings, as_json=args.json)
        return cmd_reset(settings, args.resource, args.to)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_run(settings: Settings) -> int:
    from producer.app import build_app, new_health
    from producer.observability.metrics import ProducerMetrics
    from producer.observability.server import ObservabilityServer

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
        log.info(
            "polling %s every %gs", ",".join(settings.resources), settings.poll_interval_seconds
        )
        app.service.run_forever()
        left = app.close(flush_timeout_s=1.5)
        log.info("stopped (%d message(s) left undelivered)", left)
    finally:
        if server is not None:
            server.stop()
    return 0


def cmd_sync(settings: Settings, only: list[str] | None) -> int:
    from producer.app import build_app

    resources = only or list(settings.resources)
    unknown = sorted(set(resources) - set(settings.resources))
    if unknown:
        raise ConfigError(f"--resource {unknown} is not in RESOURCES ({settings.resources})")
    app = build_app(settings)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    reports: list[RunReport] = []
    try:
        for resource in resources:
            report = app.service.sync_once(resource, progress=progress)
            if progress is not None:
                progress.done(report)
            reports.append(report)
    finally:
        app.close()
    print(render_summary(reports))
    return 0 if all(r.outcome == "success" for r in reports) else 1


class _Progress:
    """A live line per resource on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, resource: str, stats: RunStats, acked: int) -> None:
        rate = stats.fetched / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r\033[K{resource:<12} pages {stats.pages:>5}  fetched {stats.fetched:>7}  "
            f"acked {acked:>7}  skipped {stats.deduplicated:>5}  {rate:,.0f} rec/s"
        )
        self.stream.flush()

    def done(self, report: RunReport) -> None:
        self.stream.write(f"\r\033[K{report.resource:<12} {report.outcome}\n")
        self.started = time.monotonic()


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

    checkpoints = open_checkpoint_store(settings).all()
    if as_json:
        print(
            json.dumps(
                {r: json.loads(c.to_json()) for r, c in sorted(checkpoints.items())}, indent=2
            )
        )
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
    header = ("resource", "updated_at", "boundary", "records", "completed_at", "reset_by")
    print(_table(header, rows) if rows else "no checkpoints yet")
    return 0


def cmd_reset(settings: Settings, resource: str, to: str | None) -> int:
    from producer.app import open_checkpoint_store

    if resource not in settings.resources:
        raise ConfigError(f"--resource {resource!r} is not in RESOURCES ({settings.resources})")
    if to is not None:
        try:
            parse_instant(to)
        except InvalidTimestampError as exc:
            raise ConfigError(f"--to: {exc}") from None
    store = open_checkpoint_store(settings)
    previous: Checkpoint | None = store.get(resource)
    checkpoint = reset_checkpoint(
        resource,
        to,
        previous=previous,
        reset_by=f"{getpass.getuser()}@{socket.gethostname()}",
        completed_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        run_id=f"reset-{uuid.uuid4()}",
    )
    store.commit(checkpoint)
    before = previous.updated_at if previous else "none"
    print(f"{resource}: checkpoint reset from {before} to {to or 'a full export'}")
    return 0
