"""The simulator's HTTP layer: a threaded ``http.server`` in front of
:class:`~askelephant_simulator.app.SimulatorApp`, and :class:`Simulator`, which owns both and
runs them on a background thread (what tests, the demo and ``askelephant-kafka simulator``
use).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from askelephant_simulator.app import (
    DEFAULT_API_KEY,
    DEFAULT_API_VERSION,
    DEFAULT_BASE_PATH,
    SimulatorApp,
)
from askelephant_simulator.changes import Operation, ScheduledMutation
from askelephant_simulator.clock import PRECISIONS, Precision, SimClock
from askelephant_simulator.control import CONTROL_PREFIX
from askelephant_simulator.dataset import Dataset
from askelephant_simulator.faults import FaultInjector
from askelephant_simulator.listing import new_request_id
from askelephant_simulator.problems import ProblemError
from askelephant_simulator.responses import RequestHook, RequestInfo, problem_response
from askelephant_simulator.webhooks import WebhookSender

logger = logging.getLogger("askelephant_simulator")

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_VERSION", "Simulator"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: SimulatorApp) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response (a killed producer) is routine here.
        logger.debug("connection from %s ended early", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API behind a load balancer
    server_version = "AskElephantSimulator/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def date_time_string(self, timestamp: float | None = None) -> str:
        # the Date header follows the simulator clock (producers use it to correct lag)
        if timestamp is None:
            timestamp = self.server.app.dataset.clock.now_us() / 1_000_000
        return email.utils.formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "invalid Content-Length")
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            resp = self.server.app.handle(self.command, self.path, headers, body)
        except Exception:  # a bug in the simulator: answer 500 rather than hang the client
            logger.exception("simulator error on %s %s", self.command, self.path)
            rid = new_request_id()
            exc = ProblemError(500, "internal_error", "Simulator failure.")
            resp = problem_response(exc, rid)
        if resp.delay_ms > 0:
            time.sleep(resp.delay_ms / 1000)
        if resp.action == "drop":
            self._abort()
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in resp.headers:
            self.send_header(name, value)
        self.end_headers()
        if resp.action == "truncate":
            self.wfile.write(resp.body[: len(resp.body) // 2])
            self._abort()
            return
        self.wfile.write(resp.body)


class Simulator:
    """The AskElephant API v2 simulator, served from a background thread.

    >>> with Simulator(seed=1, records_per_resource=200, port=0) as sim:  # doctest: +SKIP
    ...     sim.base_url  # "http://127.0.0.1:PORT/api"
    """

    def __init__(
        self,
        *,
        seed: int = 42,
        records_per_resource: int = 200,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        access_token: str | None = None,
        timestamp_precision: Precision = "ms",
        api_version: str = DEFAULT_API_VERSION,
        base_path: str = DEFAULT_BASE_PATH,
        now: datetime | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        churn_per_minute: float = 0.0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        """`webhook_url` + `webhook_secret` (`whsec_...`): send a signed webhook for every
        change of a resource that has webhooks (simulator/askelephant_simulator/webhooks.py)."""
        if timestamp_precision not in PRECISIONS:
            raise ValueError(f"timestamp_precision must be one of {PRECISIONS}")
        self.host = host
        self._requested_port = port
        self.clock = SimClock(now)
        self.dataset = Dataset(
            seed,
            records_per_resource,
            clock=self.clock,
            precision=timestamp_precision,
            extra_fields=extra_fields,
        )
        self.faults = FaultInjector(seed)
        self.app = SimulatorApp(
            self.dataset,
            self.faults,
            api_key=api_key,
            access_token=access_token,
            api_version=api_version,
            base_path=base_path,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._churn_per_minute = churn_per_minute
        self.webhooks: WebhookSender | None = None
        if webhook_url:
            if not webhook_secret:
                raise ValueError("webhook_url needs webhook_secret")
            self.webhooks = WebhookSender(webhook_url, webhook_secret)
            self.dataset.add_listener(self.webhooks)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Simulator:
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), self.app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"askelephant-simulator-{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        if self._churn_per_minute > 0:
            self.app.churn.set_rate(self._churn_per_minute)
        logger.info("API simulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self.app.churn.stop()
        if self.webhooks is not None:
            self.webhooks.close()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/api`` (lists at ``/v2/<resource>``)."""
        return self.root_url + self.app.base_path

    @property
    def control_url(self) -> str:
        return self.root_url + CONTROL_PREFIX

    # ------------------------------------------------------------------ settings
    @property
    def api_key(self) -> str:
        return self.app.api_key

    @property
    def access_token(self) -> str | None:
        return self.app.access_token

    @property
    def api_version(self) -> str:
        return self.app.api_version

    # ------------------------------------------------------------------ test helpers
    def schedule_mutation(
        self,
        *,
        after_requests: int,
        resource: str,
        count: int = 1,
        ids: list[str] | None = None,
        same_timestamp: bool = False,
        operation: Operation = "update",
    ) -> ScheduledMutation:
        """Apply a change after ``after_requests`` more API requests to ``resource``.

        ``operation``: ``update`` (``ids`` or ``count`` random records), ``create``
        (``count`` new records) or ``delete`` (soft delete of ``ids`` or ``count`` random).
        """
        return self.app.schedule(
            ScheduledMutation(
                operation=operation,
                resource=resource,
                after_requests=after_requests,
                count=count,
                ids=ids,
                same_timestamp=same_timestamp,
            )
        )

    def add_request_hook(self, hook: RequestHook) -> Callable[[], None]:
        """Call ``hook(info)`` after each API request is handled and before the response is
        written (so a change made by the hook is invisible to that response but visible to
        the next one).  Returns a function removing the hook."""
        return self.app.add_hook(hook)

    def requests(self) -> list[RequestInfo]:
        """The last (up to 10 000) API requests served."""
        return self.app.requests()

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def reset(self, *, seed: int | None = None, records_per_resource: int | None = None) -> None:
        self.app.reset(seed, records_per_resource)
