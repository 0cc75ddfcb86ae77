"""The simulator's control plane: ``/_simulator/...`` routes that steer the data, faults,
clock and schedules from a test or by hand (see docs/simulator.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from askelephant_simulator.changes import ScheduledMutation
from askelephant_simulator.clock import format_ts, from_us, parse_ts
from askelephant_simulator.listing import json_body
from askelephant_simulator.problems import ProblemError
from askelephant_simulator.resources import RESOURCES
from askelephant_simulator.responses import Response, problem_response

if TYPE_CHECKING:
    from askelephant_simulator.app import SimulatorApp

CONTROL_PREFIX: Final = "/_simulator"


def handle_control(
    app: SimulatorApp, method: str, path: str, query: str, body: bytes, request_id: str
) -> Response:
    """Serve one ``/_simulator/...`` request (no auth: the control plane is a test aid)."""
    parts = path[len(CONTROL_PREFIX) :].strip("/").split("/")
    name = parts[0]
    try:
        data = _json_object(body) if method in ("POST", "PUT", "PATCH") else {}
        result = _dispatch(app, method, name, parts[1:], query, data)
    except ProblemError as exc:
        return problem_response(exc, request_id)
    except (ValueError, KeyError, TypeError) as exc:
        msg = str(exc.args[0]) if exc.args else type(exc).__name__
        return problem_response(
            ProblemError(400, "simulator_control", msg, title="Bad Request"), request_id
        )
    if result is None:
        exc2 = ProblemError(404, "not_found", f"No control route {method} {path}.")
        return problem_response(exc2, request_id)
    return Response(200, json_body(result))


def _dispatch(
    app: SimulatorApp, method: str, name: str, rest: list[str], query: str, data: dict[str, Any]
) -> dict[str, Any] | None:
    ds = app.dataset
    if name == "churn" and method == "POST":
        _only(data, {"changes_per_minute"})
        app.churn.set_rate(float(data.get("changes_per_minute", 0)))
        return {"changes_per_minute": app.churn.changes_per_minute}
    if name == "health" and method == "GET":
        return {"status": "ok"}
    if name == "stats" and method == "GET":
        return app.stats()
    if name == "config":
        if method == "POST":
            _only(data, {"timestamp_precision", "api_version"})
            if "timestamp_precision" in data:
                ds.set_precision(str(data["timestamp_precision"]))
            if "api_version" in data:
                app.api_version = str(data["api_version"])
        elif method != "GET":
            return None
        return app.config()
    if name == "reset" and method == "POST":
        _only(data, {"seed", "records"})
        app.reset(_opt_int(data, "seed"), _opt_int(data, "records"))
        return {"reset": True, **app.config()}
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
            return {"pending": [s.to_dict() for s in app.pending()]}
        if method != "POST":
            return None
        _only(data, {"operation", "resource", "after_requests", "count", "same_timestamp", "ids"})
        sched = app.schedule(
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
            return {"rules": app.faults.rules(), "fired_total": app.faults.fired_total}
        if method == "POST" and not rest:
            return {"id": app.faults.add_from_dict(data), "rules": app.faults.rules()}
        if method == "DELETE" and not rest:
            app.faults.clear()
            return {"rules": []}
        if method == "DELETE" and len(rest) == 1:
            return {"removed": app.faults.remove(int(rest[0])), "rules": app.faults.rules()}
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
        return {"requests": [r.to_dict() for r in app.requests()[-limit:]]}
    return None


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
