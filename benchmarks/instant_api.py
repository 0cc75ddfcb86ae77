"""A near-zero-cost AskElephant API: every page rendered to bytes before the first request.

    python -m benchmarks.instant_api --records 100000 --resources contacts,engagements

prints ``READY <port>`` once it serves, then serves until killed. The records are the
simulator's (``askelephant_simulator.dataset.Dataset``: realistic shapes and sizes), repeated
under new ids with strictly ascending ``updated_at``, as one bulk export (no filter, cursors
``p<n>``). ``--delay-ms`` holds every response that long (an API with latency). It answers any
credentials: only the producer's cost is being measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from askelephant_simulator.dataset import Dataset

BASE_PATH = "/api/v2/"
TEMPLATES = 1_000
"""Distinct simulator records per resource that the pages cycle through."""
START = datetime(2025, 1, 1, tzinfo=UTC)


def render_pages(resource: str, records: int, page_size: int, seed: int = 11) -> list[bytes]:
    """The bodies of one traversal of `records` records of `resource`, page by page."""
    templates = Dataset(seed, min(TEMPLATES, max(records, 1))).records(resource)
    prefix = str(templates[0]["id"]).split("_", 1)[0]
    pages: list[bytes] = []
    count = (records + page_size - 1) // page_size
    for number in range(count):
        data: list[dict[str, Any]] = []
        for index in range(number * page_size, min(records, (number + 1) * page_size)):
            record = dict(templates[index % len(templates)])
            moment = START + timedelta(milliseconds=index)
            record["id"] = f"{prefix}_{index:026d}"
            record["updated_at"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            data.append(record)
        more = number < count - 1
        body = {
            "object": "list",
            "data": data,
            "has_more": more,
            "next_cursor": f"p{number + 1}" if more else None,
        }
        pages.append(json.dumps(body, separators=(",", ":")).encode())
    if not pages:
        empty = {"object": "list", "data": [], "has_more": False, "next_cursor": None}
        pages.append(json.dumps(empty).encode())
    return pages


def serve(pages: dict[str, list[bytes]], delay_s: float, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real API
        disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms stall

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            resource = url.path.removeprefix(BASE_PATH)
            cursor = parse_qs(url.query).get("cursor", ["p0"])[0]
            served = pages.get(resource)
            if served is None or not cursor.startswith("p") or not cursor[1:].isdigit():
                self.send_error(404)
                return
            number = int(cursor[1:])
            if number >= len(served):
                self.send_error(400)
                return
            if delay_s:
                time.sleep(delay_s)
            body = served[number]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Api-Version", "bench")
            self.send_header("X-Request-Id", f"{resource}-{number}")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instant_api")
    parser.add_argument("--records", type=int, default=10_000, help="records per resource")
    parser.add_argument("--resources", default="contacts,engagements")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    pages = {
        r: render_pages(r, args.records, args.page_size) for r in args.resources.split(",") if r
    }
    server = serve(pages, args.delay_ms / 1000)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
