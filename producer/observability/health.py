"""Liveness and readiness state served on ``/healthz`` and ``/readyz``.

* Liveness: the main loop calls :meth:`HealthState.tick` on every iteration; the process
  is live while the last tick is at most ``liveness_timeout_s`` old. Each sync worker (one
  thread per resource) reports its own progress with :meth:`HealthState.progress` (per
  page, per run, and while it waits for its next run); a worker silent for more than
  ``stall_timeout_s`` (``LIVENESS_STALL_SECONDS``) fails liveness with a check named after
  it, e.g. a thread blocked for good in a socket read. Construction counts as the first
  tick, and a worker's registration as its first progress, so start-up gets grace.
* Readiness: named checks, each a callable returning ``(ok, detail)`` (e.g. "kafka",
  "schema_registry", "checkpoints_loaded"). A result is cached for ``cache_ttl_s`` so a
  scrape storm does not hammer Kafka, and concurrent callers share one evaluation. A
  check runs in a daemon thread and is reported failed ("timed out") when it takes
  longer than ``check_timeout_s``; a hung check is never started twice at once. A check
  that raises is failed with the (redacted) exception as detail. No checks = ready.

Report bodies: ``{"status": "ok"|"fail", "checks": {name: {"ok": bool, "detail": str}}}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from producer.observability.logging import redact

log = logging.getLogger(__name__)

__all__ = ["Check", "CheckResult", "HealthReport", "HealthState", "default_liveness_timeout"]

Check = Callable[[], tuple[bool, str]]

MIN_LIVENESS_TIMEOUT_S: Final = 120.0
WARN_EVERY_S: Final = 30.0
DEFAULT_STALL_TIMEOUT_S: Final = 900.0
"""Clears one page's worst case with the default settings (10 attempts of a 30 s
HTTP_TIMEOUT_SECONDS plus 300 s of MAX_RETRY_WAIT_SECONDS = 600 s) with room for the Kafka
wait of a batch's end: a worker that is only retrying is never reported stalled."""
ERRORS_IN_A_ROW_UNHEALTHY: Final = 5
"""A worker whose runs raised this many unexpected errors in a row fails liveness: it
cannot make progress, and a restart is the remedy left."""


def default_liveness_timeout(poll_interval_s: float) -> float:
    """``max(3 x poll interval, 120 s)``."""
    return max(3.0 * poll_interval_s, MIN_LIVENESS_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class HealthReport:
    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "fail",
            "checks": {name: c.to_json() for name, c in self.checks.items()},
        }


class _Evaluation:
    """One run of a check in a daemon thread; several callers may wait on it."""

    def __init__(self, name: str, check: Check) -> None:
        self.done = threading.Event()
        self.result = CheckResult(False, "not evaluated")
        self._check = check
        threading.Thread(target=self._run, name=f"readiness-{name}", daemon=True).start()

    def _run(self) -> None:
        try:
            ok, detail = self._check()
            self.result = CheckResult(bool(ok), redact(str(detail)))
        except Exception as exc:
            self.result = CheckResult(False, redact(f"{type(exc).__name__}: {exc}"))
        finally:
            self.done.set()


class _CheckSlot:
    def __init__(self, check: Check | None, result: CheckResult | None = None) -> None:
        self.check = check
        self.result = result  # cached (or static, when check is None)
        self.evaluated_at = float("-inf")
        self.inflight: _Evaluation | None = None


class HealthState:
    """Thread-safe liveness/readiness state.

    ``clock`` must be monotonic (default ``time.monotonic``); tests inject a fake one.
    """

    def __init__(
        self,
        *,
        liveness_timeout_s: float = MIN_LIVENESS_TIMEOUT_S,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        cache_ttl_s: float = 5.0,
        check_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if liveness_timeout_s <= 0:
            raise ValueError("liveness_timeout_s must be > 0")
        if stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be > 0")
        self.liveness_timeout_s = liveness_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._workers: dict[str, float] = {}
        self._worker_errors: dict[str, tuple[str, int]] = {}
        self.cache_ttl_s = cache_ttl_s
        self.check_timeout_s = check_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_tick = clock()
        self._ticks = 0
        self._slots: dict[str, _CheckSlot] = {}
        self._warned: dict[str, float] = {}

    # -- liveness ------------------------------------------------------------------

    def tick(self) -> None:
        """The polling loop is making progress."""
        now = self._clock()
        with self._lock:
            self._last_tick = now
            self._ticks += 1

    def progress(self, worker: str) -> None:
        """Worker `worker` is making progress (registers it on the first call)."""
        now = self._clock()
        with self._lock:
            self._workers[worker] = now

    def worker_done(self, worker: str) -> None:
        """The worker ended on purpose (shutdown): it is no longer watched."""
        with self._lock:
            self._workers.pop(worker, None)
            self._worker_errors.pop(worker, None)

    def failing(self, worker: str, error: str, in_a_row: int) -> None:
        """The worker's last run raised `error` (`in_a_row` times running); it retries."""
        with self._lock:
            self._worker_errors[worker] = (redact(error), in_a_row)

    def recovered(self, worker: str) -> None:
        with self._lock:
            self._worker_errors.pop(worker, None)

    def seconds_since_tick(self) -> float:
        with self._lock:
            last = self._last_tick
        return max(0.0, self._clock() - last)

    def liveness(self) -> HealthReport:
        """One check, ``"loop"``: last tick within ``liveness_timeout_s``."""
        age = self.seconds_since_tick()
        ok = age <= self.liveness_timeout_s
        with self._lock:
            ticks = self._ticks
        detail = (
            f"last tick {age:.1f}s ago (timeout {self.liveness_timeout_s:g}s, {ticks} ticks)"
            if ticks
            else f"no tick yet, started {age:.1f}s ago (timeout {self.liveness_timeout_s:g}s)"
        )
        if not ok:
            detail = "polling loop stuck: " + detail
        checks = {"loop": CheckResult(ok, detail)}
        now = self._clock()
        with self._lock:
            workers = sorted(self._workers.items())
            errors = dict(self._worker_errors)
        for worker, last in workers:
            silent = max(0.0, now - last)
            fine = silent <= self.stall_timeout_s
            text = (
                f"last progress {silent:.1f}s ago (LIVENESS_STALL_SECONDS {self.stall_timeout_s:g})"
            )
            if not fine:
                text = "stalled: " + text
            if worker in errors:
                error, in_a_row = errors[worker]
                fine = fine and in_a_row < ERRORS_IN_A_ROW_UNHEALTHY
                text = f"{text}; retrying after {in_a_row} unexpected error(s) in a row: {error}"
            checks[f"worker:{worker}"] = CheckResult(fine, text)
        return HealthReport(checks)

    # -- readiness -----------------------------------------------------------------

    def add_check(self, name: str, check: Check) -> None:
        """Register (or replace) a readiness check returning ``(ok, detail)``."""
        with self._lock:
            self._slots[name] = _CheckSlot(check)

    def set_check_result(self, name: str, ok: bool, detail: str = "") -> None:
        """Set a static readiness result (e.g. ``"checkpoints_loaded"``), replacing any
        check of that name; reported as is, without caching or threads."""
        with self._lock:
            self._slots[name] = _CheckSlot(None, CheckResult(ok, redact(detail)))

    def remove_check(self, name: str) -> None:
        with self._lock:
            self._slots.pop(name, None)

    def readiness(self) -> HealthReport:
        """Evaluate (or reuse cached results of) every readiness check."""
        with self._lock:
            names = list(self._slots)
        results: dict[str, CheckResult] = {}
        pending: dict[str, tuple[_CheckSlot, _Evaluation]] = {}
        for name in names:
            with self._lock:
                slot = self._slots.get(name)
                if slot is None:
                    continue
                now = self._clock()
                if slot.check is None or (
                    slot.result is not None and now - slot.evaluated_at < self.cache_ttl_s
                ):
                    results[name] = slot.result or CheckResult(False, "no result")
                    continue
                if slot.inflight is None:
                    slot.inflight = _Evaluation(name, slot.check)
                pending[name] = (slot, slot.inflight)
        deadline = time.monotonic() + self.check_timeout_s
        for name, (slot, evaluation) in pending.items():
            finished = evaluation.done.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                if finished:
                    if slot.inflight is evaluation:
                        slot.inflight = None
                    result = evaluation.result
                else:
                    result = CheckResult(False, f"check timed out after {self.check_timeout_s:g}s")
                slot.result = result
                slot.evaluated_at = self._clock()
            results[name] = result
            self._warn_if_failing(name, result)
        return HealthReport({name: results[name] for name in names if name in results})

    def _warn_if_failing(self, name: str, result: CheckResult) -> None:
        """A failing or hanging dependency (a broker or registry stall) is a WARNING while
        it lasts, at most once per `WARN_EVERY_S` per check, and an INFO when it recovers."""
        now = self._clock()
        with self._lock:
            last = self._warned.get(name)
            if result.ok:
                self._warned.pop(name, None)
            elif last is None or now - last >= WARN_EVERY_S:
                self._warned[name] = now
        if result.ok and last is not None:
            log.info("%s is healthy again: %s", name, result.detail, extra={"check": name})
        elif not result.ok and (last is None or now - last >= WARN_EVERY_S):
            log.warning("%s check failing: %s", name, result.detail, extra={"check": name})
