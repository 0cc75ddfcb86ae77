"""A lock per resource, so that what one resource waits for never blocks another
(issue 17, failure 8b: a delete of contacts flushing its lane must not stop the users poller).

`holding(resource)` takes that resource's lock. `holding()` without a resource takes every
one, resources whose lock does not exist yet included: a caller that does not name its
resource is excluded from all of them, as it was under the one process-wide lock.

The locks are re-entrant. A thread that holds a resource's lock must not take another
resource's lock, nor all of them (two threads doing so in opposite orders would wait for
each other); no caller does.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any


class ResourceLocks:
    def __init__(self) -> None:
        self._locks: dict[str, threading.RLock] = {}
        # Guards `_locks`; held throughout by a caller of all the locks, so that no lock of
        # a new resource is made (and taken) while it thinks it holds them all.
        self._registry = threading.RLock()

    def holding(self, resource: str | None = None) -> AbstractContextManager[Any]:
        if resource is None:
            return _Every(self)
        return self._lock_of(resource)

    def _lock_of(self, resource: str) -> threading.RLock:
        lock = self._locks.get(resource)  # taken once per published record: no registry lock
        if lock is not None:
            return lock
        with self._registry:
            return self._locks.setdefault(resource, threading.RLock())


class _Every:
    """Every resource's lock, taken in one order (the resources' names)."""

    def __init__(self, locks: ResourceLocks) -> None:
        self._owner = locks
        self._held: list[threading.RLock] = []

    def __enter__(self) -> None:
        registry = self._owner._registry
        registry.acquire()
        try:
            for _, lock in sorted(self._owner._locks.items()):
                lock.acquire()
                self._held.append(lock)
        except BaseException:
            self._release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        for lock in reversed(self._held):
            lock.release()
        self._held.clear()
        self._owner._registry.release()
