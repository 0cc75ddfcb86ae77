"""A small HTTP/1.1 server in a daemon thread: the shape both the observability endpoints and
the webhook receiver need (bind on start so the port is known, IPv6 when the host is one,
idempotent stop, context manager), hardened for a port that an Ingress may publish.

Connections are read by an asyncio loop and parsed with h11, so an idle or slow client costs a
socket and a buffer, never a thread; only a complete request reaches the bounded pool of handler
threads (handlers may block, e.g. until Kafka acknowledges). Per connection (`Limits`):

* each request, head and body, must arrive within `request_timeout_s` of the connection opening
  or of the previous answer, else the connection is closed: idle clients, clients that trickle a
  request byte by byte and idle keep-alive connections are all let go after that long;
* at most `max_requests_per_connection` requests, the last one answered `Connection: close`;
* a declared body over `max_body_bytes` is answered 413 from its Content-Length before any of
  it is read, a chunked one as soon as it grows past the limit; a head over `max_header_bytes`
  is answered 431;
* beyond `max_connections` open connections a new one is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Final, Self
from urllib.parse import urlsplit

import h11

log = logging.getLogger(__name__)

_READ_CHUNK: Final = 64 * 1024
_REFUSAL_LOG_EVERY_S: Final = 10.0
_LINGER_S: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024
"""After an early answer (413, 404 before the body), the client may still be sending: reading a
little of it before closing keeps the kernel from resetting the connection, which could discard
the answer before the client read it."""


@dataclass(frozen=True)
class Limits:
    request_timeout_s: float = 10.0
    """Time for one whole request; an honest client (Svix, Prometheus) needs milliseconds."""
    max_connections: int = 256
    max_requests_per_connection: int = 100
    max_body_bytes: int = 0
    max_header_bytes: int = 16 * 1024
    workers: int = 4
    """Handler threads: requests being handled at once (the rest wait for one, unread bytes)."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: Mapping[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    client: str
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False


class _AnswerEarlyError(Exception):
    """An answer given before the whole request was read."""

    def __init__(self, response: Response, head: Request | None = None) -> None:
        super().__init__(response.status)
        self.response = response
        self.head = head


class BackgroundHttpServer:
    """Subclasses answer in `respond` (a handler thread) and may refuse a request from its head
    in `screen` (the loop thread, before the body is read)."""

    thread_name = "http"
    path = ""
    """Appended to `url`."""

    def __init__(self, *, host: str, port: int, limits: Limits | None = None) -> None:
        self.host = host
        self.limits = limits or Limits()
        self._requested_port = port
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._open = 0
        self._failed: BaseException | None = None
        self._refusal_logged = -_REFUSAL_LOG_EVERY_S

    # -- for subclasses ----------------------------------------------------------------

    def screen(self, request: Request) -> Response | None:
        """An answer from the request line and headers alone (`request.body` is empty), or
        None to read the body and call `respond`."""
        return None

    def respond(self, request: Request) -> Response:
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> Response:
        """The answer to a request refused by the server itself (400, 413, 431, 500, 503)."""
        return Response(status, f"{message}\n".encode())

    # -- life cycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after `start`), else the configured one."""
        if self._bound_port is not None:
            return self._bound_port
        return self._requested_port

    @property
    def url(self) -> str:
        """e.g. ``http://127.0.0.1:9108`` (wildcard hosts shown as loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.path}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} server already started")
        # Bound here, in the caller's thread, so a taken port fails `start` itself. Not
        # socket.create_server: it makes an IPv6 socket IPv6-only, and "::" should also
        # accept IPv4 where the host allows it.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(min(self.limits.max_connections, socket.SOMAXCONN))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._bound_port = int(sock.getsockname()[1])
        self._pool = ThreadPoolExecutor(
            self.limits.workers, thread_name_prefix=f"{self.thread_name}-handler"
        )
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(loop, sock, ready), name=self.thread_name, daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or self._failed is not None:
            self.stop()
            raise RuntimeError(f"{self.thread_name} server did not start: {self._failed!r}")
        log.info("%s listening", self.thread_name, extra={"url": self.url})

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket (idempotent)."""
        thread, loop, pool = self._thread, self._loop, self._pool
        self._thread = self._loop = self._pool = None
        if thread is None or loop is None:
            return
        stopping = self._stopping
        if stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout_s)
        if pool is not None:
            # A handler still waiting (for Kafka) finishes on its own; nobody waits for it.
            pool.shutdown(wait=False, cancel_futures=True)
        self._bound_port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ready: threading.Event
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sock, ready))
        except BaseException as exc:  # start() reports it; a daemon thread would lose it
            self._failed = exc
            ready.set()
        finally:
            sock.close()
            loop.close()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                # Cancelled by stop(). Ending normally: Python 3.11's stream callback asks a
                # cancelled task for its exception and logs the CancelledError as an error.
                pass
            finally:
                connections.discard(task)

        server = await asyncio.start_server(accepted, sock=sock, limit=_READ_CHUNK)
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(connections):
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()

    # -- one connection ----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "-"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self._open += 1
        try:
            if self._open > self.limits.max_connections:
                now = time.monotonic()
                if now - self._refusal_logged >= _REFUSAL_LOG_EVERY_S:  # a flood: one line
                    self._refusal_logged = now
                    log.warning(
                        "%s: over %d connections, refusing new ones (e.g. from %s)",
                        self.thread_name,
                        self.limits.max_connections,
                        client,
                    )
                busy = self.error_response(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
                await self._send(conn, writer, busy, method="GET", close=True)
                return
            await self._requests(conn, reader, writer, client)
        except (ConnectionError, TimeoutError, h11.LocalProtocolError) as exc:
            log.debug("%s: connection from %s ended: %r", self.thread_name, client, exc)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_LINGER_S):
                    await writer.wait_closed()

    async def _requests(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> None:
        limits = self.limits
        loop = asyncio.get_running_loop()
        for served in range(1, limits.max_requests_per_connection + 1):
            try:
                async with asyncio.timeout(limits.request_timeout_s):
                    request = await self._receive(conn, reader, writer, client)
            except TimeoutError:
                log.debug("%s: no whole request from %s in time", self.thread_name, client)
                return
            except _AnswerEarlyError as early:
                answer, request = early.response, early.head
            else:
                if request is None:  # closed by the client between requests
                    return
                assert self._pool is not None
                answer = await loop.run_in_executor(self._pool, self._respond, request)
            method = request.method if request else "GET"
            unread = conn.their_state is not h11.DONE
            close = answer.close or unread or served == limits.max_requests_per_connection
            async with asyncio.timeout(limits.request_timeout_s):
                await self._send(conn, writer, answer, method=method, close=close)
            log.debug(
                "%s %s %s -> %d",
                client,
                method,
                request.target if request else "-",
                answer.status,
                extra={"server": self.thread_name},
            )
            if unread:
                await self._linger(reader, writer)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _receive(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> Request | None:
        """The next whole request; None when the client closed before starting one; raises
        `_AnswerEarlyError` with the answer to give before the rest is read."""
        head: Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if reader.at_eof():  # gone in the middle of a request: nobody to answer
                    return None
                raise _AnswerEarlyError(
                    self.error_response(exc.error_status_hint, "malformed request")
                ) from exc
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:  # curl waits a second without it
                    writer.write(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                    )
                conn.receive_data(await reader.read(_READ_CHUNK))
            elif isinstance(event, h11.Request):
                head = Request(
                    method=event.method.decode("ascii"),
                    target=event.target.decode("latin-1"),
                    headers={k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers},
                    client=client,
                )
                self._screen(head)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    raise _AnswerEarlyError(self._too_large(), head)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return replace(head, body=bytes(body))
            else:  # ConnectionClosed
                return None

    def _screen(self, head: Request) -> None:
        # h11 bounds only a head still incomplete; one that came whole in a single read is
        # measured here.
        size = len(head.target) + sum(len(k) + len(v) + 4 for k, v in head.headers.items())
        if size > self.limits.max_header_bytes:
            raise _AnswerEarlyError(
                self.error_response(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"
                ),
                head,
            )
        answer = self.screen(head)
        if answer is not None:
            raise _AnswerEarlyError(answer, head)
        try:
            declared = int(head.headers.get("content-length", "0"))
        except ValueError:  # h11 accepts only digits; kept for safety
            declared = self.limits.max_body_bytes + 1
        if declared > self.limits.max_body_bytes:
            raise _AnswerEarlyError(self._too_large(), head)

    def _too_large(self) -> Response:
        return self.error_response(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {self.limits.max_body_bytes} bytes"
        )

    def _respond(self, request: Request) -> Response:
        try:
            return self.respond(request)
        except Exception:
            log.exception("%s: %s %s failed", self.thread_name, request.method, request.path)
            return self.error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        answer: Response,
        *,
        method: str,
        close: bool,
    ) -> None:
        headers = [
            ("server", "askelephant-kafka"),
            ("content-type", answer.content_type),
            ("content-length", str(len(answer.body))),
            *answer.headers.items(),
        ]
        if close:
            headers.append(("connection", "close"))
        status = HTTPStatus(answer.status)
        events: list[h11.Response | h11.Data | h11.EndOfMessage] = [
            h11.Response(status_code=status, headers=headers, reason=status.phrase.encode())
        ]
        if answer.body and method != "HEAD":
            events.append(h11.Data(data=answer.body))
        events.append(h11.EndOfMessage())
        writer.write(b"".join(conn.send(event) or b"" for event in events))
        await writer.drain()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                left = _LINGER_BYTES
                while left > 0 and (chunk := await reader.read(min(left, _READ_CHUNK))):
                    left -= len(chunk)
