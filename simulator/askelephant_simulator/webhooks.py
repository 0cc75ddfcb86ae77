"""Signed webhooks for the simulator's changes, as AskElephant sends them through Svix
(docs/askelephant-api.md §5): `v1.<object>.created|updated|deleted` with the envelope
`{id, type, api_version, created_at, workspace_id, data: {object, previous_attributes}}` and
the `svix-id` / `svix-timestamp` / `svix-signature` headers (Svix's signature scheme, see
`resources.svix_sign`).

Users have no webhooks (§5): their changes send nothing. Deliveries go out from one background
thread, in order, each retried with backoff until a 2xx (at-least-once, like Svix), so the demo
can show a delete reaching Kafka through the producer's receiver.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from typing import Any, Final

import httpx

from askelephant_simulator.clock import format_ts
from askelephant_simulator.resources import WEBHOOK_OBJECTS, svix_sign

logger = logging.getLogger("askelephant_simulator.webhooks")

RETRY_DELAYS_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits between attempts of one delivery (Svix retries for longer; the demo needs less)."""


class WebhookSender:
    """Queues, signs and POSTs one delivery per change of a resource that has webhooks."""

    def __init__(self, url: str, secret: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self._secret = secret
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._client = httpx.Client(timeout=timeout_s)
        self._stop = threading.Event()
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="simulator-webhooks", daemon=True)
        self._thread.start()

    def __call__(self, resource: str, action: str, record: dict[str, Any], instant_us: int) -> None:
        """A `Dataset` listener: queue the delivery of one change."""
        name = WEBHOOK_OBJECTS.get(resource)
        if name is None:
            return  # users: no webhooks
        body = {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": f"v1.{name}.{action}",
            "api_version": "v1",
            "created_at": format_ts(instant_us, "ms"),
            "workspace_id": "wrks_simulator",
            "data": {"object": record, "previous_attributes": {}},
        }
        self._queue.put((f"msg_{uuid.uuid4().hex}", json.dumps(body).encode()))

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued for at most `timeout_s`, then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._stop.set()
        self._thread.join(1.0)
        self._client.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver(*item)

    def _deliver(self, delivery_id: str, body: bytes) -> None:
        for delay in (0.0, *RETRY_DELAYS_S):
            if delay and self._stop.wait(delay):
                break
            try:
                headers = svix_sign(self._secret, delivery_id, time.time(), body)
                answer = self._client.post(
                    self.url, content=body, headers={**headers, "content-type": "application/json"}
                )
            except httpx.HTTPError as exc:
                logger.info("webhook %s to %s: %s (will retry)", delivery_id, self.url, exc)
                continue
            if answer.is_success:
                self.delivered += 1
                return
            logger.info("webhook %s answered %d (will retry)", delivery_id, answer.status_code)
        self.failed += 1
        logger.warning("webhook %s not delivered to %s; giving up", delivery_id, self.url)
