"""Thin Kafka adapters: topics, the sink (events, dead letters) and the checkpoint store."""

from typing import Final

TIMEOUT_S: Final = 30.0
"""How long a Kafka admin or metadata request, or a topic read, may take before it fails."""
