"""AskElephant API v2 simulator: a real HTTP server for the demo, the tests and benchmarks.

Every behaviour is traced to the API notes (``# docs/askelephant-api.md §x.y`` comments);
undocumented points are marked as simulator choices.  See ``docs/simulator.md``.
"""

from askelephant_simulator.app import (
    DEFAULT_API_KEY,
    DEFAULT_API_VERSION,
    DEFAULT_BASE_PATH,
    SimulatorApp,
)
from askelephant_simulator.changes import Churn, ScheduledMutation
from askelephant_simulator.clock import Precision, SimClock, format_ts, parse_ts
from askelephant_simulator.control import CONTROL_PREFIX
from askelephant_simulator.dataset import (
    FIELD_ORDER,
    ID_PREFIX,
    OBJECT_TYPE,
    USER_ROLES,
    Dataset,
    Page,
)
from askelephant_simulator.engagement_query import (
    ENGAGEMENT_TYPES,
    EXPAND_VALUES,
    PROCESSING_STATUSES,
    EngagementQuery,
)
from askelephant_simulator.faults import FaultDecision, FaultInjector, FaultRule
from askelephant_simulator.listing import DEFAULT_LIMIT, MAX_LIMIT, CursorCodec
from askelephant_simulator.problems import ProblemError
from askelephant_simulator.resources import RESOURCES
from askelephant_simulator.responses import RequestInfo
from askelephant_simulator.runner import build_parser, main, run_simulator
from askelephant_simulator.server import Simulator

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_API_KEY",
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_PATH",
    "DEFAULT_LIMIT",
    "ENGAGEMENT_TYPES",
    "EXPAND_VALUES",
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
    "EngagementQuery",
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
