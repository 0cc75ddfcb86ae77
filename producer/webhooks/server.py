"""The webhook HTTP endpoint: `POST /webhooks/askelephant` on WEBHOOK_PORT.

A stdlib `ThreadingHTTPServer` in a daemon thread, like the observability server. It reads
the raw body (the signature covers the bytes exactly as sent) and hands it with the headers to
`WebhookReceiver`; the JSON answer names the outcome. Request lines go to this module's logger
at DEBUG; bodies and headers are never logged (they carry signatures).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Final
from urllib.parse import urlsplit

from producer.background_http import BackgroundHttpServer, BackgroundServer
from producer.webhooks.receiver import Answer, WebhookReceiver

log = logging.getLogger(__name__)

PATH: Final = "/webhooks/askelephant"
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
"""Larger bodies get 413 without being read (an engagement with a long description fits)."""


class _Server(BackgroundServer):
    receiver: WebhookReceiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "askelephant-kafka"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if urlsplit(self.path).path != PATH:
            self._reply(Answer(404, "not_found", f"POST {PATH}"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(Answer(411, "malformed", "Content-Length required"), close=True)
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._reply(Answer(413, "malformed", f"body over {MAX_BODY_BYTES} bytes"), close=True)
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            answer = self.server.receiver.handle(body, headers)
        except Exception:
            log.exception("webhook handling failed")
            answer = Answer(500, "error", "internal error")
        self._reply(answer)

    def do_GET(self) -> None:
        self._reply(Answer(405, "not_allowed", f"POST {PATH}"), close=True)

    def _reply(self, answer: Answer, *, close: bool = False) -> None:
        body = json.dumps({"outcome": answer.outcome, "message": answer.message}).encode()
        self.send_response(HTTPStatus(answer.status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)


class WebhookServer(BackgroundHttpServer):
    """Serves `receiver` on `host:port` (port 0: any free port) until `stop()`."""

    handler = _Handler
    server_class = _Server
    thread_name = "webhook-http"
    path = PATH

    def __init__(self, receiver: WebhookReceiver, *, host: str = "0.0.0.0", port: int) -> None:
        super().__init__(host=host, port=port)
        self.receiver = receiver

    def _configure(self, server: BackgroundServer) -> None:
        assert isinstance(server, _Server)
        server.receiver = self.receiver
