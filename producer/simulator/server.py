"""The simulator's HTTP layer: request handling (``SimulatorApp``) and the threaded server.

API routes (base path ``/api`` by default, api.md §0):
    GET {base}/v2/{contacts|companies|users|tags|engagements}        list (api.md §2)
    GET {base}/v2/{resource}/{id}                                    one record (api.md §4.2)
Control routes (no auth; simulator only): ``/_simulator/...`` (see ``docs/simulator.md``).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from producer.simulator.clock import PRECISIONS, Precision, SimClock, format_ts, from_us, parse_ts
from producer.simulator.dataset import ID_PREFIX, RESOURCES, Dataset
from producer.simulator.faults import FaultDecision, FaultInjector
from producer.simulator.listing import (
    CursorCodec,
    ProblemError,
    envelope,
    json_body,
    new_request_id,
    parse_list_query,
)

logger = logging.getLogger("producer.simulator")

# CONTRACTS.md: default accepted API key of the simulator
DEFAULT_API_KEY: Final = "sk-apik_simulator.localdevsecret"
# api.md §4.2: X-Api-Version exists, its value format is undocumented -> simulator choice
DEFAULT_API_VERSION: Final = "2026-03-01"
DEFAULT_BASE_PATH: Final = "/api"
CONTROL_PREFIX: Final = "/_simulator"

# api.md §3.2 lists 500 only; slugs are simulator choices
_SERVER_ERROR_SLUGS: Final = {
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

PROBLEM_JSON: Final = "application/problem+json"  # api.md §3.1
JSON: Final = "application/json"

Operation = Literal["update", "create", "delete"]


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


def _problem(exc: ProblemError, request_id: str) -> Response:
    return Response(exc.status, json_body(exc.body(request_id)), PROBLEM_JSON, list(exc.headers))


def _secret_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


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
            resp = self._control(method, path, split.query, body, request_id)
            resp.headers.append(("X-Request-Id", request_id))
            return resp

        params = parse_qsl(split.query, keep_blank_values=True)
        resource, record_id = self._route(path)
        fault: str | None = None
        count = 0
        if resource is None:
            resp = _problem(
                ProblemError(404, "not_found", f"No route for {path}.", title="Not Found"),
                request_id,
            )
        else:
            resp, fault, count = self._api(method, resource, record_id, params, headers, request_id)
            resp.headers.append(("X-Api-Version", self.api_version))  # api.md §2.3 / §4.2
        resp.headers.append(("X-Request-Id", request_id))  # simulator choice (api.md §3.1 body)
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
        """api.md §1.1: API key = raw Authorization value (no Bearer); OAuth = Bearer <token>."""
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
            # api.md §1.2: bearer failures get 401 plus a WWW-Authenticate challenge
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
            return _problem(exc, request_id), None, 0
        try:
            self._authenticate(headers.get("authorization"))
        except ProblemError as exc:
            return _problem(exc, request_id), None, 0

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
                resp, count = self._get(resource, record_id)
        except ProblemError as exc:
            resp, count = _problem(exc, request_id), 0
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
            # api.md §3.3: 429 "Too many requests.", retry only after Retry-After
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
        return _problem(exc, request_id)

    def _list(self, resource: str, params: list[tuple[str, str]]) -> tuple[Response, int]:
        req = parse_list_query(resource, params, self._codec)
        page = self.dataset.page(
            resource,
            order=req.shape.order,
            filters=req.shape.filter_map,
            after=req.after,
            limit=req.limit,
        )
        cursor = (
            self._codec.encode(req.shape, page.last_key)
            if page.has_more and page.last_key is not None
            else None
        )
        # api.md §2.3: next_cursor is null together with has_more false
        body = envelope(page.records, page.has_more, cursor)
        return Response(200, json_body(body)), len(page.records)

    def _get(self, resource: str, record_id: str) -> tuple[Response, int]:
        record = self.dataset.get(resource, record_id)
        if record is None:
            # api.md §4.1: [INFERRED] a soft-deleted record's GET returns 404
            raise ProblemError(
                404, "not_found", f"No {resource[:-1]} {record_id}.", title="Not Found"
            )
        body = json_body(record)
        # api.md §4.2: single-resource GETs carry an ETag (format undocumented)
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

    # ---------------------------------------------------------------- control plane
    def _control(
        self, method: str, path: str, query: str, body: bytes, request_id: str
    ) -> Response:
        parts = path[len(CONTROL_PREFIX) :].strip("/").split("/")
        name = parts[0]
        try:
            data = _json_object(body) if method in ("POST", "PUT", "PATCH") else {}
            result = self._control_dispatch(method, name, parts[1:], query, data)
        except ProblemError as exc:
            return _problem(exc, request_id)
        except (ValueError, KeyError, TypeError) as exc:
            msg = str(exc.args[0]) if exc.args else type(exc).__name__
            return _problem(
                ProblemError(400, "simulator_control", msg, title="Bad Request"), request_id
            )
        if result is None:
            exc2 = ProblemError(404, "not_found", f"No control route {method} {path}.")
            return _problem(exc2, request_id)
        return Response(200, json_body(result))

    def _control_dispatch(
        self, method: str, name: str, rest: list[str], query: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        ds = self.dataset
        if name == "churn" and method == "POST":
            _only(data, {"changes_per_minute"})
            self.churn.set_rate(float(data.get("changes_per_minute", 0)))
            return {"changes_per_minute": self.churn.changes_per_minute}
        if name == "health" and method == "GET":
            return {"status": "ok"}
        if name == "stats" and method == "GET":
            return self.stats()
        if name == "config":
            if method == "POST":
                _only(data, {"timestamp_precision", "api_version"})
                if "timestamp_precision" in data:
                    ds.set_precision(str(data["timestamp_precision"]))
                if "api_version" in data:
                    self.api_version = str(data["api_version"])
            elif method != "GET":
                return None
            return self.config()
        if name == "reset" and method == "POST":
            _only(data, {"seed", "records"})
            self.reset(_opt_int(data, "seed"), _opt_int(data, "records"))
            return {"reset": True, **self.config()}
        if name in ("mutate", "create", "delete") and method == "POST":
            _only(data, {"resource", "count", "same_timestamp", "ids"})
            resource = _resource(data)
            count = int(data.get("count", 1))
            same = bool(data.get("same_timestamp", False))
            ids = _opt_ids(data)
            if name == "create":
                out = ds.create(resource, count, same_timestamp=same)
            elif name == "delete":
                out = (
                    ds.soft_delete(resource, ids)
                    if ids is not None
                    else ds.delete_random(resource, count)
                )
                return {"resource": resource, "ids": out}
            elif ids is not None:
                out = ds.update(resource, ids, same_timestamp=same)
            else:
                out = ds.mutate(resource, count, same_timestamp=same)
            return {
                "resource": resource,
                "ids": out,
                "updated_at": [format_ts(ds.updated_at_us(resource, i), "us") for i in out],
            }
        if name == "schedule":
            if method == "GET":
                return {"pending": [s.to_dict() for s in self.pending()]}
            if method != "POST":
                return None
            _only(
                data, {"operation", "resource", "after_requests", "count", "same_timestamp", "ids"}
            )
            sched = self.schedule(
                ScheduledMutation(
                    operation=data.get("operation", "update"),
                    resource=_resource(data),
                    after_requests=int(data.get("after_requests", 1)),
                    count=int(data.get("count", 1)),
                    ids=_opt_ids(data),
                    same_timestamp=bool(data.get("same_timestamp", False)),
                )
            )
            return sched.to_dict()
        if name == "faults":
            if method == "GET" and not rest:
                return {"rules": self.faults.rules(), "fired_total": self.faults.fired_total}
            if method == "POST" and not rest:
                return {"id": self.faults.add_from_dict(data), "rules": self.faults.rules()}
            if method == "DELETE" and not rest:
                self.faults.clear()
                return {"rules": []}
            if method == "DELETE" and len(rest) == 1:
                return {"removed": self.faults.remove(int(rest[0])), "rules": self.faults.rules()}
            return None
        if name == "clock":
            clock = ds.clock
            if method == "POST":
                _only(data, {"now", "advance_seconds", "unfreeze"})
                if data.get("unfreeze"):
                    clock.unfreeze()
                if "now" in data:
                    clock.set(from_us(parse_ts(str(data["now"]))))
                if "advance_seconds" in data:
                    clock.advance(float(data["advance_seconds"]))
            elif method != "GET":
                return None
            return {"now": format_ts(clock.now_us(), "us"), "frozen": clock.frozen}
        if name == "extra_fields" and method == "POST":
            _only(data, {"fields", "resource"})
            fields = data.get("fields")
            if fields is not None and not isinstance(fields, dict):
                raise ValueError("fields must be an object or null")
            res = data.get("resource")
            ds.set_extra_fields(fields, None if res is None else str(res))
            return {"extra_fields": {str(k): v for k, v in ds.extra_fields().items()}}
        if name == "records" and method == "GET" and len(rest) == 1:
            resource = rest[0]
            if resource not in RESOURCES:
                raise ValueError(f"unknown resource {resource!r}")
            return {
                "resource": resource,
                "data": ds.records(resource),
                "deleted_ids": ds.deleted_ids(resource),
            }
        if name == "requests" and method == "GET":
            q = dict(parse_qsl(query))
            limit = int(q.get("limit", "1000"))
            return {"requests": [r.to_dict() for r in self.requests()[-limit:]]}
        return None

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


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object")
    return value


def _only(data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")


def _resource(data: Mapping[str, Any]) -> str:
    resource = data.get("resource")
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {', '.join(RESOURCES)}")
    return str(resource)


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return None if value is None else int(value)


def _opt_ids(data: Mapping[str, Any]) -> list[str] | None:
    ids = data.get("ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("ids must be a list of strings")
    return list(ids)


# ==================================================================== HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: SimulatorApp) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response (a killed producer) is routine here.
        logger.debug("connection from %s ended early", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API behind a load balancer
    server_version = "AskElephantSimulator/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def date_time_string(self, timestamp: float | None = None) -> str:
        # the Date header follows the simulator clock (producers use it to correct lag)
        if timestamp is None:
            timestamp = self.server.app.dataset.clock.now_us() / 1_000_000
        return email.utils.formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "invalid Content-Length")
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            resp = self.server.app.handle(self.command, self.path, headers, body)
        except Exception:  # a bug in the simulator: answer 500 rather than hang the client
            logger.exception("simulator error on %s %s", self.command, self.path)
            rid = new_request_id()
            exc = ProblemError(500, "internal_error", "Simulator failure.")
            resp = _problem(exc, rid)
        if resp.delay_ms > 0:
            time.sleep(resp.delay_ms / 1000)
        if resp.action == "drop":
            self._abort()
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in resp.headers:
            self.send_header(name, value)
        self.end_headers()
        if resp.action == "truncate":
            self.wfile.write(resp.body[: len(resp.body) // 2])
            self._abort()
            return
        self.wfile.write(resp.body)


class Simulator:
    """The AskElephant API v2 simulator, served from a background thread.

    >>> with Simulator(seed=1, records_per_resource=200, port=0) as sim:  # doctest: +SKIP
    ...     sim.base_url  # "http://127.0.0.1:PORT/api"
    """

    def __init__(
        self,
        *,
        seed: int = 42,
        records_per_resource: int = 200,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        access_token: str | None = None,
        timestamp_precision: Precision = "ms",
        api_version: str = DEFAULT_API_VERSION,
        base_path: str = DEFAULT_BASE_PATH,
        now: datetime | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        churn_per_minute: float = 0.0,
    ) -> None:
        if timestamp_precision not in PRECISIONS:
            raise ValueError(f"timestamp_precision must be one of {PRECISIONS}")
        self.host = host
        self._requested_port = port
        self.clock = SimClock(now)
        self.dataset = Dataset(
            seed,
            records_per_resource,
            clock=self.clock,
            precision=timestamp_precision,
            extra_fields=extra_fields,
        )
        self.faults = FaultInjector(seed)
        self.app = SimulatorApp(
            self.dataset,
            self.faults,
            api_key=api_key,
            access_token=access_token,
            api_version=api_version,
            base_path=base_path,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._churn_per_minute = churn_per_minute

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Simulator:
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), self.app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"askelephant-simulator-{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        if self._churn_per_minute > 0:
            self.app.churn.set_rate(self._churn_per_minute)
        logger.info("API simulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self.app.churn.stop()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/api`` (lists at ``/v2/<resource>``)."""
        return self.root_url + self.app.base_path

    @property
    def control_url(self) -> str:
        return self.root_url + CONTROL_PREFIX

    # ------------------------------------------------------------------ settings
    @property
    def api_key(self) -> str:
        return self.app.api_key

    @property
    def access_token(self) -> str | None:
        return self.app.access_token

    @property
    def api_version(self) -> str:
        return self.app.api_version

    # ------------------------------------------------------------------ test helpers
    def schedule_mutation(
        self,
        *,
        after_requests: int,
        resource: str,
        count: int = 1,
        ids: list[str] | None = None,
        same_timestamp: bool = False,
        operation: Operation = "update",
    ) -> ScheduledMutation:
        """Apply a change after ``after_requests`` more API requests to ``resource``.

        ``operation``: ``update`` (``ids`` or ``count`` random records), ``create``
        (``count`` new records) or ``delete`` (soft delete of ``ids`` or ``count`` random).
        """
        return self.app.schedule(
            ScheduledMutation(
                operation=operation,
                resource=resource,
                after_requests=after_requests,
                count=count,
                ids=ids,
                same_timestamp=same_timestamp,
            )
        )

    def add_request_hook(self, hook: RequestHook) -> Callable[[], None]:
        """Call ``hook(info)`` after each API request is handled and before the response is
        written (so a change made by the hook is invisible to that response but visible to
        the next one).  Returns a function removing the hook."""
        return self.app.add_hook(hook)

    def requests(self) -> list[RequestInfo]:
        """The last (up to 10 000) API requests served."""
        return self.app.requests()

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def reset(self, *, seed: int | None = None, records_per_resource: int | None = None) -> None:
        self.app.reset(seed, records_per_resource)
