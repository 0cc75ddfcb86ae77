"""The webhook HTTP endpoint: `POST /webhooks/askelephant` on WEBHOOK_PORT.

Served by `BackgroundHttpServer` (a daemon thread; idle and slow clients time out, a body over
`MAX_BODY_BYTES` is refused before it is read), like the observability server. The raw body (the
signature covers the bytes exactly as sent) goes with the headers to `WebhookReceiver`; the JSON
answer names the outcome. Request lines go to the server's logger at DEBUG; bodies and headers
are never logged (they carry signatures).
"""

from __future__ import annotations

import json
from typing import Final

from producer.background_http import BackgroundHttpServer, Limits, Request, Response
from producer.webhooks.receiver import Answer, WebhookReceiver

PATH: Final = "/webhooks/askelephant"
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
"""Larger bodies get 413 without being read (an engagement with a long description fits)."""
LIMITS: Final = Limits(max_body_bytes=MAX_BODY_BYTES, workers=8)
"""Eight deliveries waiting for Kafka at once; Svix sends few in parallel to one endpoint."""


def _json(
    answer: Answer, *, close: bool = False, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps({"outcome": answer.outcome, "message": answer.message}).encode()
    return Response(answer.status, body, "application/json", headers or {}, close=close)


class WebhookServer(BackgroundHttpServer):
    """Serves `receiver` on `host:port` (port 0: any free port) until `stop()`."""

    thread_name = "webhook-http"
    path = PATH

    def __init__(
        self,
        receiver: WebhookReceiver,
        *,
        host: str = "0.0.0.0",
        port: int,
        limits: Limits = LIMITS,
    ) -> None:
        super().__init__(host=host, port=port, limits=limits)
        self.receiver = receiver

    def screen(self, request: Request) -> Response | None:
        if request.path != PATH:
            return _json(Answer(404, "not_found", f"POST {PATH}"))
        if request.method != "POST":
            return _json(Answer(405, "not_allowed", f"POST {PATH}"), headers={"Allow": "POST"})
        if "content-length" not in request.headers and "transfer-encoding" not in request.headers:
            return _json(Answer(411, "malformed", "Content-Length required"))
        return None

    def respond(self, request: Request) -> Response:
        return _json(self.receiver.handle(request.body, request.headers))

    def error_response(self, status: int, message: str) -> Response:
        return _json(Answer(status, "malformed", message), close=True)
