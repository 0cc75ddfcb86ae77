"""Fault injection: rate limits, server errors, slow responses, dropped connections.

Rules fire on API requests (``/api/v2/...``) only, never on ``/_simulator`` control calls.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from askelephant_simulator.resources import RESOURCES

FaultKind = Literal["status", "delay", "drop", "truncate"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("status", "delay", "drop", "truncate")
RetryAfterFormat = Literal["seconds", "http-date"]


@dataclass
class FaultRule:
    """One rule.

    - ``kind="status"``: answer ``status`` (problem+json) instead of the real response; for 429
      a ``Retry-After`` header is sent when ``retry_after`` is not ``None``.
    - ``kind="delay"``: wait ``delay_ms`` before answering (combines with other rules).
    - ``kind="drop"``: close the connection without any response.
    - ``kind="truncate"``: send the headers and half of the body, then close.

    ``count``: how many more times it fires (``None``: unlimited).  ``probability``: chance to
    fire on each matching request (``None``: always).  ``resource``: only requests to that
    collection (``None``: all).
    """

    id: int
    kind: FaultKind
    status: int = 503
    count: int | None = 1
    probability: float | None = None
    resource: str | None = None
    retry_after: int | None = None
    retry_after_format: RetryAfterFormat = "seconds"
    delay_ms: int = 0
    fired: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request: an optional delay, and at most one terminal fault."""

    delay_ms: int = 0
    kind: FaultKind | None = None  # "status" | "drop" | "truncate" | None
    status: int = 0
    retry_after: int | None = None
    retry_after_format: RetryAfterFormat = "seconds"
    rule_id: int | None = None


class FaultInjector:
    """Thread-safe rule set.  Probabilities use a RNG seeded with ``seed`` (reproducible)."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._fired_total = 0

    # ---------------------------------------------------------------- building rules
    def add(
        self,
        kind: FaultKind,
        *,
        status: int = 503,
        count: int | None = 1,
        probability: float | None = None,
        resource: str | None = None,
        retry_after: int | None = None,
        retry_after_format: RetryAfterFormat = "seconds",
        delay_ms: int = 0,
    ) -> int:
        """Add a rule; returns its id.  See :class:`FaultRule` for the meaning of the fields."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, got {kind!r}")
        if kind == "status" and not 400 <= status <= 599:
            raise ValueError("status must be a 4xx or 5xx code")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 (or None for unlimited)")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        if resource is not None and resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if kind == "delay" and delay_ms == 0:
            raise ValueError("a delay rule needs delay_ms > 0")
        with self._lock:
            rule = FaultRule(
                id=self._next_id,
                kind=kind,
                status=status,
                count=count,
                probability=probability,
                resource=resource,
                retry_after=retry_after,
                retry_after_format=retry_after_format,
                delay_ms=delay_ms,
            )
            self._next_id += 1
            self._rules.append(rule)
            return rule.id

    def add_from_dict(self, spec: Mapping[str, Any]) -> int:
        """``add`` from a JSON object (the ``POST /_simulator/faults`` body)."""
        allowed = {
            "kind",
            "status",
            "count",
            "probability",
            "resource",
            "retry_after",
            "retry_after_format",
            "delay_ms",
        }
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        kwargs = dict(spec)
        kind = kwargs.pop("kind", "status")
        return self.add(kind, **kwargs)

    def rate_limit(
        self,
        count: int | None = 1,
        *,
        retry_after: int | None = 1,
        http_date: bool = False,
        resource: str | None = None,
        probability: float | None = None,
    ) -> int:
        """429 with ``Retry-After`` (docs/askelephant-api.md §3.3) in seconds, or as an
        HTTP-date."""
        return self.add(
            "status",
            status=429,
            count=count,
            probability=probability,
            resource=resource,
            retry_after=retry_after,
            retry_after_format="http-date" if http_date else "seconds",
        )

    def server_error(
        self,
        status: int = 500,
        count: int | None = 1,
        *,
        resource: str | None = None,
        probability: float | None = None,
        retry_after: int | None = None,
    ) -> int:
        """A 5xx problem+json (500, 502, 503, ...); ``retry_after`` adds the header (e.g. 503)."""
        if not 500 <= status <= 599:
            raise ValueError("server_error needs a 5xx status")
        return self.add(
            "status",
            status=status,
            count=count,
            probability=probability,
            resource=resource,
            retry_after=retry_after,
        )

    def slow(
        self,
        delay_ms: int,
        count: int | None = None,
        *,
        resource: str | None = None,
        probability: float | None = None,
    ) -> int:
        """Delay matching responses by ``delay_ms`` (default: every request until removed)."""
        return self.add(
            "delay", delay_ms=delay_ms, count=count, resource=resource, probability=probability
        )

    def drop_connection(
        self,
        count: int | None = 1,
        *,
        resource: str | None = None,
        probability: float | None = None,
    ) -> int:
        """Close the connection without answering."""
        return self.add("drop", count=count, resource=resource, probability=probability)

    def truncate_body(
        self,
        count: int | None = 1,
        *,
        resource: str | None = None,
        probability: float | None = None,
    ) -> int:
        """Send the headers and half of the body, then close the connection."""
        return self.add("truncate", count=count, resource=resource, probability=probability)

    # ---------------------------------------------------------------- managing
    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset(self, seed: int | None = None) -> None:
        """Remove every rule and zero the counters (and reseed the RNG if given)."""
        with self._lock:
            self._rules.clear()
            self._fired_total = 0
            if seed is not None:
                self._rng = random.Random(seed)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_dict() for r in self._rules]

    @property
    def fired_total(self) -> int:
        with self._lock:
            return self._fired_total

    # ---------------------------------------------------------------- evaluation
    def decide(self, resource: str | None) -> FaultDecision:
        """Evaluate the rules, in insertion order, for one API request."""
        delay = 0
        terminal: FaultRule | None = None
        with self._lock:
            for rule in list(self._rules):
                if rule.resource is not None and rule.resource != resource:
                    continue
                if rule.kind != "delay" and terminal is not None:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                self._fired_total += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                if rule.kind == "delay":
                    delay += rule.delay_ms
                else:
                    terminal = rule
        if terminal is None:
            return FaultDecision(delay_ms=delay)
        return FaultDecision(
            delay_ms=delay,
            kind=terminal.kind,
            status=terminal.status,
            retry_after=terminal.retry_after,
            retry_after_format=terminal.retry_after_format,
            rule_id=terminal.id,
        )
