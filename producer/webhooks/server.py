"""The webhook HTTP endpoint: `POST /webhooks/askelephant` on WEBHOOK_PORT.

A stdlib `ThreadingHTTPServer` in a daemon thread, like the observability server. It reads
the raw body (the signature covers the bytes exactly as sent) and hands it with the headers to
`WebhookReceiver`; the JSON answer names the outcome. Request lines go to this module's logger
at DEBUG; bodies and headers are never logged (they carry signatures).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

from producer.webhooks.receiver import Answer, WebhookReceiver

log = logging.getLogger(__name__)

PATH: Final = "/webhooks/askelephant"
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
"""Larger bodies get 413 without being read (an engagement with a long description fits)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: WebhookReceiver


class _Server6(_Server):
    address_family = socket.AF_INET6


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


class WebhookServer:
    """Serves `receiver` on `host:port` (port 0: any free port) until `stop()`."""

    def __init__(self, receiver: WebhookReceiver, *, host: str = "0.0.0.0", port: int) -> None:
        self.receiver = receiver
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def url(self) -> str:
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{PATH}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("webhook server already started")
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self._requested_port), _Handler)
        server.receiver = self.receiver
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="webhook-http",
            daemon=True,
        )
        self._thread.start()
        log.info("webhook receiver listening", extra={"url": self.url})

    def stop(self, timeout_s: float = 5.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)

    def __enter__(self) -> WebhookServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
