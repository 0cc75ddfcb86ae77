"""The simulator's request handling: :class:`SimulatorApp` turns one HTTP request into a
:class:`~askelephant_simulator.responses.Response`, with no sockets involved.

API routes (base path ``/api`` by default, docs/askelephant-api.md §0):
    GET {base}/v2/{contacts|companies|users|tags|engagements}  list (docs/askelephant-api.md §2)
    GET {base}/v2/{resource}/{id}                      one record (docs/askelephant-api.md §4.2)
Control routes (no auth; simulator only): ``/_simulator/...`` in
:mod:`askelephant_simulator.control`.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from askelephant_simulator.changes import Churn, ScheduledMutation
from askelephant_simulator.clock import format_ts
from askelephant_simulator.control import CONTROL_PREFIX, handle_control
from askelephant_simulator.dataset import ID_PREFIX, Dataset
from askelephant_simulator.engagement_query import parse_expand
from askelephant_simulator.faults import FaultDecision, FaultInjector
from askelephant_simulator.listing import (
    CursorCodec,
    envelope,
    json_body,
    new_request_id,
    parse_list_query,
)
from askelephant_simulator.problems import ProblemError, bad_parameter
from askelephant_simulator.resources import RESOURCES
from askelephant_simulator.responses import RequestHook, RequestInfo, Response, problem_response

logger = logging.getLogger("askelephant_simulator")

# CONTRACTS.md: default accepted API key of the simulator
DEFAULT_API_KEY: Final = "sk-apik_simulator.localdevsecret"
# docs/askelephant-api.md §4.2: X-Api-Version exists, its value format is undocumented -> simulator
# choice
DEFAULT_API_VERSION: Final = "2026-03-01"
DEFAULT_BASE_PATH: Final = "/api"

# docs/askelephant-api.md §3.2 lists 500 only; slugs are simulator choices
_SERVER_ERROR_SLUGS: Final = {
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def _secret_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


class SimulatorApp:
    """Turns one HTTP request into a :class:`Response`; no sockets involved."""

    def __init__(
        self,
        dataset: Dataset,
        faults: FaultInjector,
        *,
        api_key: str = DEFAULT_API_KEY,
        access_token: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        base_path: str = DEFAULT_BASE_PATH,
    ) -> None:
        self.dataset = dataset
        self.faults = faults
        self.api_key = api_key
        self.access_token = access_token
        self.api_version = api_version
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self._lock = threading.Lock()
        self._codec = CursorCodec(self._cursor_secret())
        self._seq = 0
        self._by_resource: dict[str, Counter[str]] = {}
        self._control_requests = 0
        self._log: deque[RequestInfo] = deque(maxlen=10_000)
        self._scheduled: list[ScheduledMutation] = []
        self._hooks: list[RequestHook] = []
        self.churn = Churn(dataset, dataset.seed)

    def _cursor_secret(self) -> bytes:
        return hashlib.sha256(f"askelephant-simulator:{self.dataset.seed}".encode()).digest()

    # ---------------------------------------------------------------- hooks / schedules
    def schedule(self, mutation: ScheduledMutation) -> ScheduledMutation:
        if mutation.remaining == 0:
            mutation.apply(self.dataset)
            return mutation
        with self._lock:
            self._scheduled.append(mutation)
        return mutation

    def add_hook(self, hook: RequestHook) -> Callable[[], None]:
        with self._lock:
            self._hooks.append(hook)

        def remove() -> None:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return remove

    def pending(self) -> list[ScheduledMutation]:
        with self._lock:
            return list(self._scheduled)

    def reset(self, seed: int | None = None, records_per_resource: int | None = None) -> None:
        """Regenerate the data, drop faults, schedules and statistics (hooks are kept)."""
        self.dataset.reset(seed, records_per_resource)
        self.faults.reset()
        with self._lock:
            self._codec = CursorCodec(self._cursor_secret())
            self._seq = 0
            self._by_resource.clear()
            self._control_requests = 0
            self._log.clear()
            self._scheduled.clear()

    def requests(self) -> list[RequestInfo]:
        with self._lock:
            return list(self._log)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_resource = {
                name: {"requests": sum(c.values()), "by_status": dict(sorted(c.items()))}
                for name, c in sorted(self._by_resource.items())
            }
            total = self._seq
            control = self._control_requests
            pending = len(self._scheduled)
        return {
            "requests_total": total,
            "by_resource": by_resource,
            "control_requests": control,
            "faults_fired": self.faults.fired_total,
            "scheduled_pending": pending,
            "records": {
                r: {
                    "active": self.dataset.count(r),
                    "deleted": self.dataset.count(r, include_deleted=True) - self.dataset.count(r),
                }
                for r in RESOURCES
            },
        }

    # ---------------------------------------------------------------- entry point
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """``headers`` keys must be lower-case."""
        split = urlsplit(target)
        path = split.path
        request_id = new_request_id()
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            with self._lock:
                self._control_requests += 1
            resp = handle_control(self, method, path, split.query, body, request_id)
            resp.headers.append(("X-Request-Id", request_id))
            return resp

        params = parse_qsl(split.query, keep_blank_values=True)
        resource, record_id = self._route(path)
        fault: str | None = None
        count = 0
        if resource is None:
            resp = problem_response(
                ProblemError(404, "not_found", f"No route for {path}.", title="Not Found"),
                request_id,
            )
        else:
            resp, fault, count = self._api(method, resource, record_id, params, headers, request_id)
            # docs/askelephant-api.md §2.3 / §4.2
            resp.headers.append(("X-Api-Version", self.api_version))
        # simulator choice (docs/askelephant-api.md §3.1 body)
        resp.headers.append(("X-Request-Id", request_id))
        info = self._record(method, path, params, resource, resp, fault, request_id, count)
        self._after_request(info)
        return resp

    # ---------------------------------------------------------------- API
    def _route(self, path: str) -> tuple[str | None, str | None]:
        prefix = self.base_path + "/v2/"
        if not path.startswith(prefix):
            return None, None
        parts = path[len(prefix) :].strip("/").split("/")
        if parts[0] not in ID_PREFIX or len(parts) > 2:
            return None, None
        return parts[0], (parts[1] if len(parts) == 2 else None)

    def _authenticate(self, authorization: str | None) -> None:
        """docs/askelephant-api.md §1.1: API key = raw Authorization value (no Bearer); OAuth =
        Bearer <token>."""
        if authorization is not None:
            if _secret_equal(authorization, self.api_key):
                return
            if self.access_token is not None and _secret_equal(
                authorization, f"Bearer {self.access_token}"
            ):
                return
        if authorization is None or not authorization.strip():
            # simulator choice: a missing credential also gets the Bearer challenge (RFC 6750)
            raise ProblemError(
                401,
                "unauthorized",
                "Missing Authorization header.",
                title="Unauthorized",
                headers=[("WWW-Authenticate", 'Bearer realm="askelephant"')],
            )
        if authorization[:7].lower() == "bearer ":
            # docs/askelephant-api.md §1.2: bearer failures get 401 plus a WWW-Authenticate
            # challenge
            detail = "Invalid or expired bearer token."
            if authorization[7:].strip().startswith("sk-apik_"):
                detail += " API keys are sent as the raw Authorization value, without 'Bearer'."
            raise ProblemError(
                401,
                "unauthorized",
                detail,
                title="Unauthorized",
                headers=[("WWW-Authenticate", 'Bearer realm="askelephant", error="invalid_token"')],
            )
        raise ProblemError(401, "unauthorized", "Invalid API key.", title="Unauthorized")

    def _api(
        self,
        method: str,
        resource: str,
        record_id: str | None,
        params: list[tuple[str, str]],
        headers: Mapping[str, str],
        request_id: str,
    ) -> tuple[Response, str | None, int]:
        if method != "GET":
            exc = ProblemError(
                405,
                "method_not_allowed",
                "The simulator only serves the read side (GET).",
                headers=[("Allow", "GET")],
            )
            return problem_response(exc, request_id), None, 0
        try:
            self._authenticate(headers.get("authorization"))
        except ProblemError as exc:
            return problem_response(exc, request_id), None, 0

        decision = self.faults.decide(resource)
        if decision.kind == "status":
            resp = self._fault_response(decision.status, decision.retry_after, decision, request_id)
            resp.delay_ms = decision.delay_ms
            return resp, f"status:{decision.status}", 0
        if decision.kind == "drop":
            return Response(0, action="drop", delay_ms=decision.delay_ms), "drop", 0

        try:
            if record_id is None:
                resp, count = self._list(resource, params)
            else:
                resp, count = self._get(resource, record_id, params)
        except ProblemError as exc:
            resp, count = problem_response(exc, request_id), 0
        resp.delay_ms = decision.delay_ms
        fault = "delay" if decision.delay_ms else None
        if decision.kind == "truncate":
            resp.action = "truncate"
            fault = "truncate"
        return resp, fault, count

    def _fault_response(
        self, status: int, retry_after: int | None, decision: FaultDecision, request_id: str
    ) -> Response:
        if status == 429:
            # docs/askelephant-api.md §3.3: 429 "Too many requests.", retry only after Retry-After
            exc = ProblemError(429, "rate_limited", "Too many requests.", title="Too Many Requests")
        elif status >= 500:
            exc = ProblemError(
                status,
                _SERVER_ERROR_SLUGS.get(status, "server_error"),
                "Injected server error (API simulator).",
            )
        else:
            exc = ProblemError(status, "injected_error", "Injected client error (API simulator).")
        if retry_after is not None:
            if decision.retry_after_format == "http-date":
                now = self.dataset.clock.now_us()
                at = -(-(now + retry_after * 1_000_000) // 1_000_000)  # ceil to a whole second
                value = email.utils.formatdate(at, usegmt=True)
            else:
                value = str(retry_after)
            exc.headers.append(("Retry-After", value))
        return problem_response(exc, request_id)

    def _list(self, resource: str, params: list[tuple[str, str]]) -> tuple[Response, int]:
        req = parse_list_query(resource, params, self._codec)
        query = req.shape.engagement
        page = self.dataset.page(
            resource,
            order=req.shape.order,
            filters=req.shape.filter_map,
            after=req.after,
            limit=req.limit,
            where=query.matches if query.filters_anything else None,
            expand=query.expand,
        )
        cursor = (
            self._codec.encode(req.shape, page.last_key)
            if page.has_more and page.last_key is not None
            else None
        )
        # docs/askelephant-api.md §2.3: next_cursor is null together with has_more false
        body = envelope(page.records, page.has_more, cursor)
        return Response(200, json_body(body)), len(page.records)

    def _get(
        self, resource: str, record_id: str, params: list[tuple[str, str]]
    ) -> tuple[Response, int]:
        # docs/askelephant-api.md §2.4: get-by-id takes `expand` on engagements (all eight
        # values); other parameters of a get are ignored, as before.
        expand = [v for k, v in params if k == "expand"]
        if expand and resource != "engagements":
            raise bad_parameter(
                "expand", "unsupported_by_simulator", "expand is only simulated on engagements."
            )
        record = self.dataset.get(
            resource, record_id, expand=parse_expand(expand[-1]) if expand else ()
        )
        if record is None:
            # docs/askelephant-api.md §4.1: [INFERRED] a soft-deleted record's GET returns 404
            raise ProblemError(
                404, "not_found", f"No {resource[:-1]} {record_id}.", title="Not Found"
            )
        body = json_body(record)
        # docs/askelephant-api.md §4.2: single-resource GETs carry an ETag (format undocumented)
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        return Response(200, body, headers=[("ETag", etag)]), 1

    def _record(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        resource: str | None,
        resp: Response,
        fault: str | None,
        request_id: str,
        count: int,
    ) -> RequestInfo:
        status = 0 if resp.action == "drop" else resp.status
        with self._lock:
            self._seq += 1
            info = RequestInfo(
                self._seq, method, path, tuple(params), resource, status, fault, request_id, count
            )
            key = "dropped" if status == 0 else str(status)
            self._by_resource.setdefault(resource or "other", Counter())[key] += 1
            self._log.append(info)
        return info

    def _after_request(self, info: RequestInfo) -> None:
        due: list[ScheduledMutation] = []
        with self._lock:
            for sched in list(self._scheduled):
                if sched.resource == info.resource:
                    sched.remaining -= 1
                    if sched.remaining <= 0:
                        self._scheduled.remove(sched)
                        due.append(sched)
            hooks = list(self._hooks)
        for sched in due:
            try:
                sched.apply(self.dataset)
            except (KeyError, ValueError) as exc:  # e.g. ids deleted meanwhile: keep serving
                sched.error = str(exc)
                sched.done.set()
                logger.warning(
                    "scheduled %s on %s failed: %s", sched.operation, sched.resource, exc
                )
            else:
                logger.info(
                    "applied scheduled %s on %s: %s",
                    sched.operation,
                    sched.resource,
                    sched.result_ids,
                )
        for hook in hooks:
            hook(info)

    def config(self) -> dict[str, Any]:
        return {
            "seed": self.dataset.seed,
            "records_per_resource": self.dataset.records_per_resource,
            "timestamp_precision": self.dataset.precision,
            "api_version": self.api_version,
            "base_path": self.base_path,
            "resources": list(RESOURCES),
            "now": format_ts(self.dataset.clock.now_us(), "us"),
            "clock_frozen": self.dataset.clock.frozen,
            "churn_per_minute": self.churn.changes_per_minute,
        }
