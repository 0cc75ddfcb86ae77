"""A small in-memory server for the Confluent Schema Registry REST API (Avro schemas).

The devstack falls back to it when no real Confluent registry (``SCHEMA_REGISTRY_URL`` or a
``confluentinc/cp-schema-registry`` container) can be had: neither Confluent's registry nor
Apicurio/Karapace can be installed from the package registries this project may use.

It implements the part of the API that confluent-kafka's ``SchemaRegistryClient``,
``AvroSerializer`` and ``AvroDeserializer`` use, with the same status and error codes:
subjects and versions (register, lookup, get, list, soft/permanent delete), schemas by id
and guid, global and per-subject compatibility config, compatibility checks with the real
Avro resolution rules (``producer.devstack.avro_compat``), schema references, and optional
HTTP basic auth. State lives in memory for the life of the process.

Run: ``python -m producer.devstack.schema_registry_server --port 0 --port-file PATH``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import fastavro

from producer.devstack import avro_compat

log = logging.getLogger("producer.devstack.schema_registry_server")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = frozenset(
    {
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    }
)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _subject_not_found(subject: str) -> ApiError:
    return ApiError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: object) -> ApiError:
    return ApiError(404, 40402, f"Version {version} not found for subject '{subject}'.")


@dataclass
class StoredSchema:
    id: int
    guid: str
    text: str
    schema_type: str
    references: list[dict[str, Any]]
    parsed: avro_compat.Node

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": self.text}
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = self.references
        return out


@dataclass
class Version:
    version: int
    schema_id: int
    deleted: bool = False


@dataclass
class Subject:
    versions: list[Version] = field(default_factory=list)

    def live(self) -> list[Version]:
        return [v for v in self.versions if not v.deleted]


class Registry:
    """The registry state; every public method takes the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.schemas: dict[int, StoredSchema] = {}
        self.by_key: dict[str, int] = {}
        self.by_guid: dict[str, int] = {}
        self.subjects: dict[str, Subject] = {}
        self.global_level = "BACKWARD"
        self.subject_levels: dict[str, str] = {}
        self.mode = "READWRITE"

    # -- helpers

    def _subject(self, name: str, *, deleted: bool = False) -> Subject:
        subject = self.subjects.get(name)
        if subject is None or not (subject.versions if deleted else subject.live()):
            raise _subject_not_found(name)
        return subject

    def _version(self, name: str, version: str, *, deleted: bool = False) -> Version:
        subject = self._subject(name, deleted=deleted)
        candidates = subject.versions if deleted else subject.live()
        if version in {"latest", "-1"}:
            return candidates[-1]
        try:
            number = int(version)
        except ValueError:
            number = 0
        if number < 1:
            raise ApiError(
                422,
                42202,
                f"The specified version '{version}' is not a valid version id. Allowed values "
                'are between [1, 2^31-1] and the string "latest"',
            )
        for v in candidates:
            if v.version == number:
                return v
        raise _version_not_found(name, version)

    def level_for(self, subject: str) -> str:
        return self.subject_levels.get(subject, self.global_level)

    def _parse(self, body: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]], Any]:
        text = body.get("schema")
        schema_type = str(body.get("schemaType") or "AVRO").upper()
        references = list(body.get("references") or [])
        if not isinstance(text, str):
            raise ApiError(422, 42201, "Either the input schema or one its references is invalid")
        if schema_type != "AVRO":
            raise ApiError(422, 42201, f"Schema type {schema_type} is not supported (AVRO only)")
        ref_texts: list[str] = []
        for ref in references:
            try:
                version = self._version(str(ref["subject"]), str(ref["version"]))
            except (KeyError, ApiError) as exc:
                raise ApiError(422, 42201, f"Invalid schema reference {ref!r}: {exc}") from None
            ref_texts.append(self.schemas[version.schema_id].text)
        try:
            named: dict[str, Any] = {}
            for ref_text in ref_texts:
                fastavro.parse_schema(json.loads(ref_text), named_schemas=named)
            obj = avro_compat._loads(text)
            fastavro.parse_schema(obj, named_schemas=named)
            parsed = avro_compat.parse(text, ref_texts)
        except Exception as exc:
            raise ApiError(422, 42201, f"Invalid schema: {exc}") from None
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        key = json.dumps([schema_type, canonical, references], sort_keys=True)
        return text, key, references, parsed

    # -- API operations

    def register(self, subject_name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if self.mode == "READONLY":
                raise ApiError(422, 42205, "Subject is in read-only mode")
            text, key, references, parsed = self._parse(body)
            subject = self.subjects.setdefault(subject_name, Subject())
            existing_id = self.by_key.get(key)
            for v in subject.live():
                if v.schema_id == existing_id:
                    stored = self.schemas[v.schema_id]
                    return {"id": v.schema_id, "version": v.version, "guid": stored.guid}
            live = [self.schemas[v.schema_id].parsed for v in subject.live()]
            problems = avro_compat.check_level(self.level_for(subject_name), parsed, live)
            if problems:
                raise ApiError(
                    409,
                    409,
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f'"{subject_name}", details: {problems}',
                )
            if existing_id is None:
                existing_id = max(self.schemas, default=0) + 1
                guid = str(uuid.uuid4())
                self.schemas[existing_id] = StoredSchema(
                    existing_id, guid, text, "AVRO", references, parsed
                )
                self.by_key[key] = existing_id
                self.by_guid[guid] = existing_id
            number = max((v.version for v in subject.versions), default=0) + 1
            subject.versions.append(Version(number, existing_id))
            log.info("registered %s version %d as schema id %d", subject_name, number, existing_id)
            return {"id": existing_id, "version": number, "guid": self.schemas[existing_id].guid}

    def lookup(self, subject_name: str, body: dict[str, Any], deleted: bool) -> dict[str, Any]:
        with self.lock:
            subject = self._subject(subject_name, deleted=deleted)
            _, key, _, _ = self._parse(body)
            schema_id = self.by_key.get(key)
            for v in reversed(subject.versions if deleted else subject.live()):
                if v.schema_id == schema_id:
                    return self.version_payload(subject_name, v)
            raise ApiError(404, 40403, "Schema not found")

    def version_payload(self, subject_name: str, v: Version) -> dict[str, Any]:
        stored = self.schemas[v.schema_id]
        return {
            "subject": subject_name,
            "version": v.version,
            "id": v.schema_id,
            "guid": stored.guid,
            **stored.payload(),
        }

    def schema_by_id(self, schema_id: str) -> StoredSchema:
        try:
            return self.schemas[int(schema_id)]
        except (KeyError, ValueError):
            raise ApiError(404, 40403, f"Schema {schema_id} not found") from None

    def delete_subject(self, subject_name: str, permanent: bool) -> list[int]:
        with self.lock:
            subject = self.subjects.get(subject_name)
            if subject is None or not subject.versions:
                raise _subject_not_found(subject_name)
            if permanent:
                if subject.live():
                    raise ApiError(
                        404,
                        40405,
                        f"Subject '{subject_name}' was not deleted first before being "
                        "permanently deleted",
                    )
                del self.subjects[subject_name]
                self.subject_levels.pop(subject_name, None)
                return [v.version for v in subject.versions]
            if not subject.live():
                raise ApiError(404, 40404, f"Subject '{subject_name}' was soft deleted.")
            versions = [v.version for v in subject.live()]
            for v in subject.versions:
                v.deleted = True
            return versions

    def delete_version(self, subject_name: str, version: str, permanent: bool) -> int:
        with self.lock:
            v = self._version(subject_name, version, deleted=True)
            subject = self.subjects[subject_name]
            if permanent:
                if not v.deleted:
                    raise ApiError(
                        404,
                        40407,
                        f"Subject '{subject_name}' Version {v.version} was not deleted first "
                        "before being permanently deleted",
                    )
                subject.versions.remove(v)
                if not subject.versions:
                    del self.subjects[subject_name]
                return v.version
            if v.deleted:
                raise ApiError(
                    404, 40406, f"Subject '{subject_name}' Version {v.version} was soft deleted."
                )
            v.deleted = True
            return v.version

    def compatibility(
        self, subject_name: str, version: str | None, body: dict[str, Any], verbose: bool
    ) -> dict[str, Any]:
        with self.lock:
            _, _, _, parsed = self._parse(body)
            subject = self.subjects.get(subject_name)
            level = self.level_for(subject_name)
            if subject is None or not subject.live():
                if version is not None and version not in {"latest", "-1"}:
                    raise _subject_not_found(subject_name)
                problems: list[str] = []
            elif version is None:  # against all versions, as the level says
                live = [self.schemas[v.schema_id].parsed for v in subject.live()]
                problems = avro_compat.check_level(level, parsed, live)
            else:
                old = self.schemas[self._version(subject_name, version).schema_id].parsed
                base = level.removesuffix("_TRANSITIVE")
                problems = avro_compat.check_level(base, parsed, [old])
            result: dict[str, Any] = {"is_compatible": not problems}
            if verbose:
                result["messages"] = problems
            return result


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms stalls
    server_version = "devstack-schema-registry/1"
    registry: Registry
    basic_auth: str | None = None

    # -- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any, content_type: str = CONTENT_TYPE) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(400, 400, "Unrecognized request body: not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, 422, "Request body must be a JSON object")
        return body

    def _authorized(self) -> bool:
        if not self.basic_auth:
            return True
        expected = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
        return self.headers.get("Authorization") == expected

    def _dispatch(self, method: str) -> None:
        try:
            body = self._body() if method in {"POST", "PUT"} else {}
            if not self._authorized():
                raise ApiError(401, 401, "Unauthorized")
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, payload = self._route(method, parts, query, body)
            self._send(status, payload)
        except ApiError as exc:
            self._send(exc.status, {"error_code": exc.code, "message": exc.message})
        except Exception as exc:  # a bug: answer 500 and keep serving
            log.exception("internal error on %s %s", method, self.path)
            self._send(500, {"error_code": 50001, "message": f"Error in the backend: {exc}"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routes

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        reg = self.registry
        deleted = query.get("deleted", "false").lower() == "true"
        permanent = query.get("permanent", "false").lower() == "true"
        verbose = query.get("verbose", "false").lower() == "true"
        n = len(parts)
        with reg.lock:
            if n == 0 and method == "GET":
                return 200, {}
            head = parts[0] if parts else ""
            if head == "subjects":
                if n == 1 and method == "GET":
                    prefix = query.get("subjectPrefix", "")
                    names = [
                        name
                        for name, s in sorted(reg.subjects.items())
                        if (s.versions if deleted else s.live()) and name.startswith(prefix)
                    ]
                    return 200, names
                subject = parts[1] if n > 1 else ""
                if n == 2 and method == "POST":
                    return 200, reg.lookup(subject, body, deleted)
                if n == 2 and method == "DELETE":
                    return 200, reg.delete_subject(subject, permanent)
                if n == 3 and parts[2] == "versions":
                    if method == "GET":
                        s = reg._subject(subject, deleted=deleted)
                        return 200, [v.version for v in (s.versions if deleted else s.live())]
                    if method == "POST":
                        return 200, reg.register(subject, body)
                if n >= 4 and parts[2] == "versions":
                    if n == 4 and method == "GET":
                        v = reg._version(subject, parts[3], deleted=deleted)
                        return 200, reg.version_payload(subject, v)
                    if n == 4 and method == "DELETE":
                        return 200, reg.delete_version(subject, parts[3], permanent)
                    if n == 5 and parts[4] == "schema" and method == "GET":
                        v = reg._version(subject, parts[3], deleted=deleted)
                        return 200, json.loads(reg.schemas[v.schema_id].text)
                    if n == 5 and parts[4] == "referencedby" and method == "GET":
                        reg._version(subject, parts[3], deleted=deleted)
                        return 200, []
            if head == "schemas" and method == "GET":
                if n == 1:
                    return 200, [
                        {"subject": name, **reg.version_payload(name, s.live()[-1])}
                        for name, s in sorted(reg.subjects.items())
                        if s.live()
                    ]
                if n == 2 and parts[1] == "types":
                    return 200, ["AVRO"]
                if n >= 3 and parts[1] == "guids":
                    schema_id = reg.by_guid.get(parts[2])
                    if schema_id is None:
                        raise ApiError(404, 40403, f"Schema {parts[2]} not found")
                    stored = reg.schemas[schema_id]
                    return 200, {**stored.payload(), "id": schema_id, "guid": stored.guid}
                if n >= 3 and parts[1] == "ids":
                    stored = reg.schema_by_id(parts[2])
                    pairs = [
                        (name, v.version)
                        for name, s in sorted(reg.subjects.items())
                        for v in (s.versions if deleted else s.live())
                        if v.schema_id == stored.id
                    ]
                    if n == 3:
                        return 200, {**stored.payload(), "guid": stored.guid}
                    if n == 4 and parts[3] == "schema":
                        return 200, json.loads(stored.text)
                    if n == 4 and parts[3] == "subjects":
                        return 200, sorted({name for name, _ in pairs})
                    if n == 4 and parts[3] == "versions":
                        return 200, [{"subject": s, "version": v} for s, v in pairs]
            if head == "config":
                if n == 1 and method == "GET":
                    return 200, {"compatibilityLevel": reg.global_level}
                if n == 1 and method == "PUT":
                    reg.global_level = _level(body)
                    return 200, {"compatibility": reg.global_level}
                if n == 2 and method == "GET":
                    level = reg.subject_levels.get(parts[1])
                    if level is None:
                        if query.get("defaultToGlobal", "false").lower() != "true":
                            raise ApiError(
                                404,
                                40408,
                                f"Subject '{parts[1]}' does not have subject-level "
                                "compatibility configured",
                            )
                        level = reg.global_level
                    return 200, {"compatibilityLevel": level}
                if n == 2 and method == "PUT":
                    reg.subject_levels[parts[1]] = _level(body)
                    return 200, {"compatibility": reg.subject_levels[parts[1]]}
                if n == 2 and method == "DELETE":
                    previous = reg.subject_levels.pop(parts[1], None)
                    if previous is None:
                        raise _subject_not_found(parts[1])
                    return 200, {"compatibilityLevel": previous}
            if head == "compatibility" and method == "POST" and n >= 4 and parts[1] == "subjects":
                version = parts[4] if n == 5 else None
                return 200, reg.compatibility(parts[2], version, body, verbose)
            if head == "mode":
                if method == "GET":
                    return 200, {"mode": reg.mode}
                if method == "PUT" and n == 1:
                    mode = str(body.get("mode", "")).upper()
                    if mode not in {"READWRITE", "READONLY", "IMPORT"}:
                        raise ApiError(422, 42204, f"Invalid mode {mode!r}")
                    reg.mode = mode
                    return 200, {"mode": mode}
            if head == "contexts" and method == "GET":
                return 200, ["."]
        raise ApiError(404, 404, "HTTP 404 Not Found")


def _level(body: dict[str, Any]) -> str:
    level = str(body.get("compatibility") or body.get("compatibilityLevel") or "").upper()
    if level not in LEVELS:
        raise ApiError(422, 42203, f"Invalid compatibility level {level!r}")
    return level


def make_server(
    host: str = "127.0.0.1", port: int = 0, basic_auth: str | None = None
) -> ThreadingHTTPServer:
    """A ready-to-serve server (call serve_forever); port 0 picks a free port."""
    handler = type(
        "Handler", (_Handler,), {"registry": Registry(), "basic_auth": basic_auth or None}
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument(
        "--basic-auth",
        default=os.environ.get("DEVSTACK_REGISTRY_BASIC_AUTH"),
        help="require HTTP basic auth user:password",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    server = make_server(args.host, args.port, args.basic_auth)
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(str(port))
        os.replace(tmp, args.port_file)
    log.info("schema registry listening on http://%s:%d", args.host, port)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    raise SystemExit(main())
