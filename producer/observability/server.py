"""The one observability HTTP port: ``/metrics``, ``/healthz``, ``/readyz``.

* ``GET /metrics``: the registry in Prometheus text format, or OpenMetrics when the
  ``Accept`` header asks for it (``prometheus_client.exposition.choose_encoder``);
  gzip-compressed when ``Accept-Encoding`` allows it.
* ``GET /healthz``: liveness, 200 or 503, JSON body (see :mod:`.health`).
* ``GET /readyz``: readiness, 200 or 503, JSON body.
* anything else: 404; methods other than GET/HEAD: 405; a request body: 413.

Served by :class:`~producer.background_http.BackgroundHttpServer` in a daemon thread (timeouts
and connection bounds there); request logs go to its logger at DEBUG.
"""

from __future__ import annotations

import gzip
import json
from http import HTTPStatus
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from producer.background_http import BackgroundHttpServer, Limits, Request, Response
from producer.observability.health import HealthReport, HealthState

__all__ = ["DEFAULT_PORT", "ObservabilityServer"]

DEFAULT_PORT: Final = 9108
LIMITS: Final = Limits(max_connections=64, workers=2)
"""Scrapers and kubelet probes: a handful of connections, answers in milliseconds."""

_TEXT: Final = "text/plain; charset=utf-8"


class ObservabilityServer(BackgroundHttpServer):
    """Serves ``registry`` and ``health`` on ``host:port`` (port 0 = any free port).

    ``start()`` binds and serves in a daemon thread (returns once the socket is
    bound, so :attr:`port` is known); ``stop()`` shuts down and closes the socket.
    Also usable as a context manager.
    """

    thread_name = "observability-http"

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthState,
        *,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        limits: Limits = LIMITS,
    ) -> None:
        super().__init__(host=host, port=port, limits=limits)
        self.registry = registry
        self.health = health

    def screen(self, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                headers={"Allow": "GET, HEAD"},
            )
        return None

    def respond(self, request: Request) -> Response:
        path = request.path
        if path == "/metrics":
            return self._metrics(request)
        if path == "/healthz":
            return self._report(self.health.liveness())
        if path == "/readyz":
            return self._report(self.health.readiness())
        return Response(HTTPStatus.NOT_FOUND, b"not found\n")

    def _metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = encoder(self.registry)
        headers = {"Cache-Control": "no-store"}
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Response(HTTPStatus.OK, body, content_type, headers)

    def _report(self, report: HealthReport) -> Response:
        body = json.dumps(report.to_json(), sort_keys=True).encode() + b"\n"
        status = HTTPStatus.OK if report.ok else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(status, body, "application/json", {"Cache-Control": "no-store"})
