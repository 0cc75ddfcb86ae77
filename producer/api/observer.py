"""Observability hooks of the API client (producer.observability.metrics implements them)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["ApiObserver", "NoopObserver"]


class ApiObserver(Protocol):
    """Receives per-attempt measurements; producer.metrics can implement it.

    `status_class` is "2xx", "3xx", "4xx", "5xx" or "error" (no response: transport error).
    `reason` for a retry is the HTTP status ("429", "503") or the httpx exception name
    ("ConnectError", "ReadTimeout"). Called synchronously; keep it cheap.
    """

    def on_request(self, resource: str, status_class: str, duration_s: float) -> None: ...

    def on_retry(self, resource: str, reason: str, wait_s: float, is_rate_limit: bool) -> None: ...


class NoopObserver:
    """The default observer: ignores everything."""

    def on_request(self, resource: str, status_class: str, duration_s: float) -> None:
        return None

    def on_retry(self, resource: str, reason: str, wait_s: float, is_rate_limit: bool) -> None:
        return None
