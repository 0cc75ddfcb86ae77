"""Launchers for a real Kafka broker and schema registry (tests, demo, benchmarks).

Use :class:`LocalStack` (a context manager) or :func:`start_local_stack`; both raise
:class:`StackUnavailable` when neither an existing cluster, Docker nor Java can provide one.
"""

from devstack._common import HOW_TO_GET_A_BROKER, StackUnavailable
from devstack.stack import LocalStack, start_local_stack

__all__ = ["HOW_TO_GET_A_BROKER", "LocalStack", "StackUnavailable", "start_local_stack"]
