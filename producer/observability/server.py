"""The one observability HTTP port: ``/metrics``, ``/healthz``, ``/readyz``.

* ``GET /metrics``: the registry in Prometheus text format, or OpenMetrics when the
  ``Accept`` header asks for it (``prometheus_client.exposition.choose_encoder``);
  gzip-compressed when ``Accept-Encoding`` allows it.
* ``GET /healthz``: liveness, 200 or 503, JSON body (see :mod:`.health`).
* ``GET /readyz``: readiness, 200 or 503, JSON body.
* anything else: 404; methods other than GET/HEAD: 405.

A stdlib ``ThreadingHTTPServer`` in a daemon thread; request logs go to the
``producer.observability.server`` logger at DEBUG.
"""

from __future__ import annotations

import gzip
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from producer.background_http import BackgroundHttpServer, BackgroundServer
from producer.observability.health import HealthReport, HealthState

__all__ = ["DEFAULT_PORT", "ObservabilityServer"]

DEFAULT_PORT: Final = 9108

log = logging.getLogger(__name__)


class _Server(BackgroundServer):
    registry: CollectorRegistry
    health: HealthState


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "askelephant-kafka"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_POST(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def do_OPTIONS(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        body = b"method not allowed\n"
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _dispatch(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                self._metrics(send_body)
            elif path == "/healthz":
                self._report(self.server.health.liveness(), send_body)
            elif path == "/readyz":
                self._report(self.server.health.readiness(), send_body)
            else:
                self._send(
                    HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", send_body
                )
        except Exception:
            log.exception("observability endpoint %s failed", path)
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                b"internal error\n",
                "text/plain; charset=utf-8",
                send_body,
            )

    def _metrics(self, send_body: bool) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(self.server.registry)
        headers = {}
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self._send(HTTPStatus.OK, body, content_type, send_body, headers)

    def _report(self, report: HealthReport, send_body: bool) -> None:
        body = json.dumps(report.to_json(), sort_keys=True).encode() + b"\n"
        status = HTTPStatus.OK if report.ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, body, "application/json", send_body)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        send_body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Unsupported methods etc.: keep the default behaviour but close the connection.
        self.close_connection = True
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)


class ObservabilityServer(BackgroundHttpServer):
    """Serves ``registry`` and ``health`` on ``host:port`` (port 0 = any free port).

    ``start()`` binds and serves in a daemon thread (returns once the socket is
    bound, so :attr:`port` is known); ``stop()`` shuts down and closes the socket.
    Also usable as a context manager.
    """

    handler = _Handler
    server_class = _Server
    thread_name = "observability-http"

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthState,
        *,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
    ) -> None:
        super().__init__(host=host, port=port)
        self.registry = registry
        self.health = health

    def _configure(self, server: BackgroundServer) -> None:
        assert isinstance(server, _Server)
        server.registry = self.registry
        server.health = self.health
