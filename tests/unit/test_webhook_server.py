"""The webhook port over real sockets, as an Ingress exposes it: slow and idle clients do not hold
up a signed delivery and are let go, oversized bodies are refused unread, connections and
keep-alive are bounded."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from producer.background_http import Limits
from producer.webhooks.delivery import sign
from producer.webhooks.server import LIMITS, MAX_BODY_BYTES, PATH, WebhookServer
from tests.unit.test_deletes import SECRET as WEBHOOK_SECRET
from tests.unit.test_deletes import envelope, receiver

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

TIMEOUT_S = 3.0
"""Short, so the test waits little; the slack below is for a loaded machine."""
SLACK_S = 4.0


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    hook, *_ = receiver()
    limits = Limits(
        request_timeout_s=TIMEOUT_S,
        max_body_bytes=MAX_BODY_BYTES,
        max_connections=LIMITS.max_connections,
        max_requests_per_connection=3,
        workers=LIMITS.workers,
    )
    with WebhookServer(hook, host="127.0.0.1", port=0, limits=limits) as srv:
        yield srv


def signed(delivery_id: str) -> tuple[bytes, dict[str, str]]:
    body = envelope()
    return body, sign(WEBHOOK_SECRET, delivery_id, time.time(), body)


def connect(server: WebhookServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setblocking(False)
    return sock


def read_answer(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.setblocking(True)
    sock.settimeout(timeout_s)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def close_times(socks: list[socket.socket], deadline: float) -> dict[socket.socket, float]:
    """When each socket saw the server close it (EOF or reset), until `deadline`."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if sock.recv(4096):
                        continue
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    pass
                closed[sock] = time.monotonic()
                sel.unregister(sock)
    return closed


def test_a_delivery_is_answered_at_once_while_200_slow_clients_hang_and_they_are_let_go(
    server: WebhookServer,
) -> None:
    opened = time.monotonic()
    idle = [connect(server) for _ in range(100)]
    trickling = [connect(server) for _ in range(100)]
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n"
    ).encode()
    stop = threading.Event()

    def trickle() -> None:
        # half a request, then a byte every 0.2 s: each byte would reset a socket timeout
        for sock in trickling:
            sock.send(head[:20])
        position = 20  # 15 more bytes before the timeout: the head is never complete
        while not stop.wait(0.2):
            for sock in trickling:
                with contextlib.suppress(OSError):  # closed by the server: what is awaited
                    sock.send(head[position : position + 1])
            position += 1

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(0.5)  # let every slow connection be accepted and start its request
        body, headers = signed("msg_while_slow")
        started = time.monotonic()
        answer = httpx.post(server.url, content=body, headers=headers, timeout=10)
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "published"
        assert took < 2.0

        everyone = idle + trickling
        closed = close_times(everyone, deadline=opened + TIMEOUT_S + SLACK_S)
        assert len(closed) == len(everyone), f"{len(everyone) - len(closed)} still open"
        assert max(closed.values()) - opened <= TIMEOUT_S + SLACK_S
        assert min(closed.values()) - opened >= TIMEOUT_S - 0.5  # by the timeout, not an error
    finally:
        stop.set()
        trickler.join(5)
        for sock in idle + trickling:
            sock.close()


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_sent(
    server: WebhookServer,
) -> None:
    for expect in ("", "Expect: 100-continue\r\n"):
        sock = connect(server)
        # only the head: a server that waited for the body would time out instead of answering
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n"
            f"{expect}\r\n".encode()
        )
        started = time.monotonic()
        answer = read_answer(sock)
        sock.close()
        assert time.monotonic() - started < TIMEOUT_S
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
        assert b"100 Continue" not in answer
        assert b"connection: close" in answer.lower()
        assert b'"outcome": "malformed"' in answer


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    hook, *_ = receiver()
    limits = Limits(request_timeout_s=TIMEOUT_S, max_body_bytes=1000)
    with WebhookServer(hook, host="127.0.0.1", port=0, limits=limits) as srv:
        sock = connect(srv)
        sock.setblocking(True)
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(3):  # 1200 bytes so far, and no end of the body
            sock.sendall(b"190\r\n" + b"x" * 400 + b"\r\n")
        answer = read_answer(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
        # under the limit, chunked is fine: the receiver judges the (unsigned) body
        answer = httpx.post(srv.url, content=iter([b"{}"]), timeout=5)
        assert answer.status_code == 401
        assert answer.json()["outcome"] == "bad_signature"


def test_keep_alive_is_bounded_and_other_paths_and_methods_are_refused(
    server: WebhookServer,
) -> None:
    with httpx.Client(timeout=5) as client:
        answers = []
        for n in range(3):
            body, headers = signed(f"msg_keep_{n}")
            answers.append(client.post(server.url, content=body, headers=headers))
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers.get("connection") for a in answers] == [None, None, "close"]
        assert client.post(server.url + "x", content=b"{}").status_code == 404
        wrong = client.get(server.url)
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
    sock = connect(server)
    sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert read_answer(sock).startswith(b"HTTP/1.1 411 ")
    sock.close()


def test_connections_over_the_bound_get_503_and_are_closed() -> None:
    hook, *_ = receiver()
    limits = Limits(request_timeout_s=TIMEOUT_S, max_body_bytes=1000, max_connections=5)
    with WebhookServer(hook, host="127.0.0.1", port=0, limits=limits) as srv:
        held = [connect(srv) for _ in range(5)]
        time.sleep(0.3)  # all five accepted
        extra = connect(srv)
        answer = read_answer(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while True:  # the freed places are given again
            body, headers = signed("msg_after")
            try:
                status = httpx.post(srv.url, content=body, headers=headers, timeout=5).status_code
            except httpx.TransportError:
                status = 0
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200


def test_malformed_heads_get_400_or_431_and_stopping_with_open_connections_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook, *_ = receiver()
    with caplog.at_level("WARNING"):
        with WebhookServer(hook, host="127.0.0.1", port=0, limits=LIMITS) as srv:
            big = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20_000}\r\n\r\n"
            for request, status in ((b"GARBAGE\r\n\r\n", 400), (big.encode(), 431)):
                sock = connect(srv)
                sock.setblocking(True)
                sock.sendall(request)  # a head over the limit in one piece, too
                assert read_answer(sock).startswith(f"HTTP/1.1 {status} ".encode())
                sock.close()
            hanging = [connect(srv) for _ in range(3)]
            hanging[0].send(f"POST {PATH} HTTP/1.1\r\n".encode())
            time.sleep(0.3)
        for sock in hanging:
            sock.close()
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
