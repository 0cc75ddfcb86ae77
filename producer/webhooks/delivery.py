"""PURE: Svix signature checks and the AskElephant webhook envelope (docs/askelephant-api.md §5).

Envelope: `{id, type, api_version, created_at, workspace_id, data: {object, previous_attributes}}`;
headers `svix-id`, `svix-timestamp`, `svix-signature`. Verification is the `svix` library's
(HMAC of `svix-id.svix-timestamp.body`, timestamps older or newer than 5 minutes refused);
several secrets are tried in turn, so a rotation can run with the old and new one configured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from svix.webhooks import Webhook, WebhookVerificationError

from producer.sync.timestamps import InvalidTimestampError, Micros, instant_micros

OBJECT_RESOURCES: Final = {
    "contact": "contacts",
    "company": "companies",
    "engagement": "engagements",
    "tag": "tags",
}
"""Webhook object names -> resources. Users have no webhooks (§5): reconciliation covers them."""
ACTIONS: Final = ("created", "updated", "deleted")


class BadSignatureError(ValueError):
    """Missing Svix headers, no configured secret matches, or a stale timestamp."""


class MalformedDeliveryError(ValueError):
    """A verified body that is not an AskElephant webhook envelope."""


class Verifier:
    """Svix verification against one or more endpoint secrets (`whsec_...`)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._hooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the delivery's `svix-id` when one secret verifies it; raise otherwise."""
        lower = {k.lower(): v for k, v in headers.items()}
        missing = [h for h in ("svix-id", "svix-timestamp", "svix-signature") if not lower.get(h)]
        if missing:
            raise BadSignatureError(f"missing header(s): {', '.join(missing)}")
        last = "no secret matched"
        for hook in self._hooks:
            try:
                hook.verify(body, lower)
            except WebhookVerificationError as exc:
                last = str(exc)  # never the secret: the library names only what failed
                continue
            return lower["svix-id"]
        raise BadSignatureError(last)


@dataclass(frozen=True)
class Delivery:
    """One verified webhook delivery."""

    delivery_id: str
    """`svix-id`: the same for every retry of one message."""
    event_type: str
    resource: str | None
    """None for an event type that carries no resource we sync (ignored)."""
    action: str | None
    created_at_us: Micros
    api_version: str | None
    object: Mapping[str, Any]


def parse_delivery(delivery_id: str, body: bytes) -> Delivery:
    """Read the envelope of a verified body; raise `MalformedDeliveryError` if it is not one."""
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedDeliveryError(f"body is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MalformedDeliveryError("body is not a JSON object")
    event_type, created_at, data = (
        envelope.get("type"),
        envelope.get("created_at"),
        envelope.get("data"),
    )
    if not isinstance(event_type, str) or not event_type:
        raise MalformedDeliveryError("no string `type`")
    if not isinstance(created_at, str):
        raise MalformedDeliveryError("no string `created_at`")
    try:
        created_at_us = instant_micros(created_at)
    except InvalidTimestampError as exc:
        raise MalformedDeliveryError(f"unparseable `created_at`: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise MalformedDeliveryError("no `data.object` object")
    obj = data["object"]
    parts = event_type.split(".")
    resource = action = None
    if len(parts) == 3 and parts[0] == "v1" and parts[2] in ACTIONS:
        resource, action = OBJECT_RESOURCES.get(parts[1]), parts[2]
    if resource is not None:
        record_id = obj.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise MalformedDeliveryError("`data.object` has no string `id`")
    api_version = envelope.get("api_version")
    return Delivery(
        delivery_id=delivery_id,
        event_type=event_type,
        resource=resource,
        action=action if resource is not None else None,
        created_at_us=created_at_us,
        api_version=api_version if isinstance(api_version, str) else None,
        object=obj,
    )


def sign(secret: str, delivery_id: str, timestamp_s: float, body: bytes) -> dict[str, str]:
    """The Svix headers of `body` (the simulator's webhook sender and the tests use this)."""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(int(timestamp_s), UTC)
    signature = Webhook(secret).sign(delivery_id, moment, body.decode())
    return {
        "svix-id": delivery_id,
        "svix-timestamp": str(int(timestamp_s)),
        "svix-signature": signature,
    }
