"""A lock per resource, so that what one resource waits for never blocks another
(issue 17, failure 8b: a delete of contacts flushing its lane must not stop the users poller).

`holding(resource)` takes that resource's lock. The locks are re-entrant. A thread that
holds a resource's lock must not take another resource's lock (two threads doing so in
opposite orders would wait for each other); no caller does.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any


class ResourceLocks:
    def __init__(self) -> None:
        self._locks: dict[str, threading.RLock] = {}
        self._registry = threading.Lock()  # guards the making of a resource's lock

    def holding(self, resource: str) -> AbstractContextManager[Any]:
        return self._lock_of(resource)

    def _lock_of(self, resource: str) -> threading.RLock:
        lock = self._locks.get(resource)  # taken once per published record: no registry lock
        if lock is not None:
            return lock
        with self._registry:
            return self._locks.setdefault(resource, threading.RLock())
