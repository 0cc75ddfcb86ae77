"""Run the simulator in the foreground until SIGTERM/SIGINT (CLI / docker-compose)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import FrameType
from typing import Any

from askelephant_simulator.clock import PRECISIONS, Precision, from_us, parse_ts
from askelephant_simulator.server import DEFAULT_API_KEY, DEFAULT_API_VERSION, Simulator

logger = logging.getLogger("askelephant_simulator")


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8765,
    seed: int = 42,
    records: int = 500,
    *,
    api_key: str = DEFAULT_API_KEY,
    access_token: str | None = None,
    timestamp_precision: Precision = "ms",
    api_version: str = DEFAULT_API_VERSION,
    now: datetime | None = None,
    extra_fields: Mapping[str, Any] | None = None,
    churn_per_minute: float = 0.0,
    stop_event: threading.Event | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or until ``stop_event`` is set); returns exit code 0.

    Prints one line ``simulator listening on <base_url>`` to stdout once it accepts requests
    (handy with ``--port 0``).  Signal handlers are only installed in the main thread.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received signal %s, stopping the simulator", signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        with Simulator(
            seed=seed,
            records_per_resource=records,
            host=host,
            port=port,
            api_key=api_key,
            access_token=access_token,
            timestamp_precision=timestamp_precision,
            api_version=api_version,
            now=now,
            extra_fields=extra_fields,
            churn_per_minute=churn_per_minute,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        ) as sim:
            print(f"simulator listening on {sim.base_url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def build_parser(
    parser: argparse.ArgumentParser | None = None, *, prog: str = "askelephant-simulator"
) -> argparse.ArgumentParser:
    """Add the simulator options to ``parser`` (or a new one named ``prog``)."""
    p = (
        parser
        if parser is not None
        else argparse.ArgumentParser(
            prog=prog,
            description="AskElephant API v2 simulator (the askelephant-simulator package; "
            "also runs as `askelephant-kafka simulator`)",
        )
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--records", type=int, default=500, help="records per resource")
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--access-token", default=None, help="also accept 'Bearer <token>'")
    p.add_argument("--timestamp-precision", choices=PRECISIONS, default="ms")
    p.add_argument("--api-version", default=DEFAULT_API_VERSION)
    p.add_argument("--now", default=None, help="freeze the clock at this ISO-8601 instant")
    p.add_argument(
        "--extra-fields", default=None, help="JSON object added to every record (unknown fields)"
    )
    p.add_argument(
        "--churn-per-minute",
        type=float,
        default=0.0,
        help="background record changes per minute (demo); 0 = static data",
    )
    p.add_argument(
        "--webhook-url",
        default=os.environ.get("SIMULATOR_WEBHOOK_URL") or None,
        help="send a signed webhook for every change to this URL, e.g. "
        "http://localhost:8090/webhooks/askelephant (env SIMULATOR_WEBHOOK_URL)",
    )
    p.add_argument(
        "--webhook-secret",
        default=os.environ.get("SIMULATOR_WEBHOOK_SECRET") or None,
        help="whsec_... signing secret of the webhooks (env SIMULATOR_WEBHOOK_SECRET, "
        "preferred: a flag shows in the process list)",
    )
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "askelephant-simulator") -> int:
    """The ``askelephant-simulator`` command; ``prog`` names the command in ``--help``
    (``askelephant-kafka simulator`` delegates here)."""
    args = build_parser(prog=prog).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    extra = json.loads(args.extra_fields) if args.extra_fields else None
    if extra is not None and not isinstance(extra, dict):
        print("--extra-fields must be a JSON object", file=sys.stderr)
        return 2
    return run_simulator(
        args.host,
        args.port,
        args.seed,
        args.records,
        api_key=args.api_key,
        access_token=args.access_token,
        timestamp_precision=args.timestamp_precision,
        api_version=args.api_version,
        now=from_us(parse_ts(args.now)) if args.now else None,
        extra_fields=extra,
        churn_per_minute=args.churn_per_minute,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
    )
