"""A stdlib ThreadingHTTPServer served from a daemon thread: the shape both the observability
endpoints and the webhook receiver need (bind on start so the port is known, IPv6 when the
host is one, idempotent stop, context manager)."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

log = logging.getLogger(__name__)


class BackgroundServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class BackgroundHttpServer:
    """Subclasses name the handler and attach what it needs in `_configure`."""

    handler: type[BaseHTTPRequestHandler]
    server_class: type[BackgroundServer] = BackgroundServer
    thread_name = "http"
    path = ""
    """Appended to `url`."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self._requested_port = port
        self._server: BackgroundServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start`), else the configured one."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def url(self) -> str:
        """e.g. ``http://127.0.0.1:9108`` (wildcard hosts shown as loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.path}"

    def _configure(self, server: BackgroundServer) -> None:
        """Attach what the handler reads from `self.server`."""

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.thread_name} server already started")
        server_class = self.server_class
        if ":" in self.host:
            server_class = type(f"{server_class.__name__}6", (server_class,), {})
            server_class.address_family = socket.AF_INET6
        server = server_class((self.host, self._requested_port), self.handler)
        self._configure(server)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        log.info("%s listening", self.thread_name, extra={"url": self.url})

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
