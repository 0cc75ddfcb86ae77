"""What the simulator's request handling produces: a :class:`Response` (written by the HTTP
layer) and a :class:`RequestInfo` (one served request, for statistics and hooks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from askelephant_simulator.listing import json_body
from askelephant_simulator.problems import ProblemError

PROBLEM_JSON: Final = "application/problem+json"  # docs/askelephant-api.md §3.1
JSON: Final = "application/json"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: Literal["send", "drop", "truncate"] = "send"
    delay_ms: int = 0


@dataclass(frozen=True)
class RequestInfo:
    """One API request as served (``status`` 0 = connection dropped without a response)."""

    seq: int
    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    resource: str | None
    status: int
    fault: str | None
    request_id: str
    record_count: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["params"] = [list(p) for p in self.params]
        return out


RequestHook = Callable[[RequestInfo], None]


def problem_response(exc: ProblemError, request_id: str) -> Response:
    """An ``application/problem+json`` response for ``exc``."""
    return Response(exc.status, json_body(exc.body(request_id)), PROBLEM_JSON, list(exc.headers))
