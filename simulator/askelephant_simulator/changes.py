"""Changes to the simulated data over time: mutations scheduled after N requests, and the
background churn of demos."""

from __future__ import annotations

import random
import threading
from typing import Any, Literal

from askelephant_simulator.dataset import Dataset
from askelephant_simulator.resources import RESOURCES

Operation = Literal["update", "create", "delete"]


class ScheduledMutation:
    """A change applied after ``after_requests`` more API requests to ``resource``.

    It runs after the N-th response has been computed and before it is written, so that
    response still shows the old state and every later request sees the change.
    """

    def __init__(
        self,
        *,
        operation: Operation,
        resource: str,
        after_requests: int,
        count: int,
        ids: list[str] | None,
        same_timestamp: bool,
    ) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        if operation not in ("update", "create", "delete"):
            raise ValueError("operation must be update, create or delete")
        if after_requests < 0:
            raise ValueError("after_requests must be >= 0")
        self.operation: Operation = operation
        self.resource = resource
        self.remaining = after_requests
        self.count = count
        self.ids = ids
        self.same_timestamp = same_timestamp
        self.done = threading.Event()
        self.result_ids: list[str] = []
        self.error: str | None = None

    def apply(self, dataset: Dataset) -> None:
        if self.operation == "create":
            out = dataset.create(self.resource, self.count, same_timestamp=self.same_timestamp)
        elif self.operation == "delete":
            out = (
                dataset.soft_delete(self.resource, self.ids)
                if self.ids is not None
                else dataset.delete_random(self.resource, self.count)
            )
        elif self.ids is not None:
            out = dataset.update(self.resource, self.ids, same_timestamp=self.same_timestamp)
        else:
            out = dataset.mutate(self.resource, self.count, same_timestamp=self.same_timestamp)
        self.result_ids = out
        self.done.set()

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "resource": self.resource,
            "remaining_requests": self.remaining,
            "count": self.count,
            "ids": self.ids,
            "same_timestamp": self.same_timestamp,
            "done": self.done.is_set(),
            "result_ids": self.result_ids,
            "error": self.error,
        }


class Churn:
    """Background changes for demos: about ``changes_per_minute`` record changes per minute,
    spread over the five collections (80 % updates of random records, 20 % new records)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self._dataset = dataset
        self._rng = random.Random(seed + 1)
        self._lock = threading.Lock()
        self._rate = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.changes = 0

    @property
    def changes_per_minute(self) -> float:
        with self._lock:
            return self._rate

    def set_rate(self, changes_per_minute: float) -> None:
        if changes_per_minute < 0:
            raise ValueError("changes_per_minute must be >= 0")
        with self._lock:
            self._rate = float(changes_per_minute)
            if self._rate > 0 and self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="askelephant-simulator-churn", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=5)

    def tick(self, seconds: float) -> int:
        """Apply the changes due for ``seconds`` of elapsed time; returns how many were made."""
        with self._lock:
            due = self._rate * seconds / 60.0
        n = int(due) + (1 if self._rng.random() < due - int(due) else 0)
        for _ in range(n):
            resource = self._rng.choice(RESOURCES)
            if self._rng.random() < 0.8 and self._dataset.count(resource):
                self._dataset.mutate(resource, 1)
            else:
                self._dataset.create(resource, 1)
        self.changes += n
        return n

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if self.changes_per_minute > 0:
                self.tick(1.0)
