"""AskElephant API v2 simulator: a real HTTP server for the demo, the tests and benchmarks.

Every behaviour is traced to /work/shared/askelephant-api.md (``# api.md §x.y`` comments);
undocumented points are marked as simulator choices.  See ``docs/simulator.md``.
"""

from producer.simulator.clock import Precision, SimClock, format_ts, parse_ts
from producer.simulator.dataset import (
    ENGAGEMENT_TYPES,
    FIELD_ORDER,
    ID_PREFIX,
    OBJECT_TYPE,
    PROCESSING_STATUSES,
    RESOURCES,
    USER_ROLES,
    Dataset,
    Page,
)
from producer.simulator.faults import FaultDecision, FaultInjector, FaultRule
from producer.simulator.listing import DEFAULT_LIMIT, MAX_LIMIT, CursorCodec, ProblemError
from producer.simulator.runner import build_parser, main, run_simulator
from producer.simulator.server import (
    CONTROL_PREFIX,
    DEFAULT_API_KEY,
    DEFAULT_API_VERSION,
    DEFAULT_BASE_PATH,
    Churn,
    RequestInfo,
    ScheduledMutation,
    Simulator,
    SimulatorApp,
)

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_API_KEY",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_PATH",
    "DEFAULT_LIMIT",
    "ENGAGEMENT_TYPES",
    "FIELD_ORDER",
    "ID_PREFIX",
    "MAX_LIMIT",
    "OBJECT_TYPE",
    "PROCESSING_STATUSES",
    "RESOURCES",
    "USER_ROLES",
    "Churn",
    "CursorCodec",
    "Dataset",
    "FaultDecision",
    "FaultInjector",
    "FaultRule",
    "Page",
    "Precision",
    "ProblemError",
    "RequestInfo",
    "ScheduledMutation",
    "SimClock",
    "Simulator",
    "SimulatorApp",
    "build_parser",
    "format_ts",
    "main",
    "parse_ts",
    "run_simulator",
]
