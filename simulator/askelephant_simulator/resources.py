"""The API's resource names and the Svix webhook signature, kept here rather than imported.

The simulator stands in for the real API, so it does not import the product it is used to
test: a shared constant or a shared signing routine would let a product bug agree with
itself.  Both are tiny and fixed by the API notes (docs/askelephant-api.md §2 and §5); a unit
test checks that they still match the product's own (tests/unit/test_simulator_parts.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

RESOURCES: Final[tuple[str, ...]] = ("contacts", "companies", "users", "tags", "engagements")
"""The listable resources of the API v2 (§2), in the product's order."""

WEBHOOK_OBJECTS: Final[dict[str, str]] = {
    "contacts": "contact",
    "companies": "company",
    "engagements": "engagement",
    "tags": "tag",
}
"""Resource -> the object name of its `v1.<object>.<action>` webhooks; users have none (§5)."""

_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the prefix of every Svix secret, not one)


def svix_sign(secret: str, delivery_id: str, timestamp_s: float, body: bytes) -> dict[str, str]:
    """The `svix-id` / `svix-timestamp` / `svix-signature` headers of one delivery.

    Svix signs ``<id>.<timestamp>.<body>`` with HMAC-SHA256 under the base64 key that follows
    ``whsec_`` and sends ``v1,<base64 digest>``.
    """
    key = base64.b64decode(secret.removeprefix(_SECRET_PREFIX))
    stamp = str(int(timestamp_s))
    signed = f"{delivery_id}.{stamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"svix-id": delivery_id, "svix-timestamp": stamp, "svix-signature": f"v1,{digest}"}
