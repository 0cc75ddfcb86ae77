"""One measurement in a fresh process (its own CPU time and peak RSS), printed as one JSON line.

    python -m benchmarks.measure producer   --api URL --key KEY --resources contacts,engagements
    python -m benchmarks.measure sequential --api URL --resources contacts,engagements
    python -m benchmarks.measure ceiling    --api URL --resources contacts,engagements --count N

Kafka and the registry come from KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL.

* producer: the real thing (`build_app`, `SyncService.sync_once` of every resource side by
  side, as `askelephant-kafka sync` runs them): records/s, CPU, pages, peak RSS.
* sequential: a straightforward loop on the same API: fetch a page, `json.loads` it, produce
  each record as JSON through the same idempotent producer, next page; one resource after
  the other. No schema, no dedup, no checkpoint: what a first version would do.
* ceiling: the raw confluent-kafka producer alone, on the Avro payloads of the same records
  (the first pages, serialised once, produced `count` times in a cycle): what Kafka allows.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

RESULT_PREFIX = "RESULT "


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, the high-water mark of its own memory map. Not
    `ru_maxrss`: Linux carries that over from the parent through fork and exec, so a
    measurement started by a process holding the API simulator's data reported the
    simulator's size (171 MB for a run that peaked at 89 MB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(run: Callable[[], tuple[int, int]]) -> dict[str, float]:
    cpu, wall = _cpu(), time.perf_counter()
    records, pages = run()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {
        "records": records,
        "pages": pages,
        "seconds": wall,
        "records_per_s": records / wall if wall else 0.0,
        "cpu_us_per_record": cpu / records * 1e6 if records else 0.0,
        "pages_per_s": pages / wall if wall else 0.0,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _kafka_env() -> tuple[str, str]:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ.get("SCHEMA_REGISTRY_URL", "")


def producer(args: argparse.Namespace) -> None:
    from producer.app import build_app
    from producer.config import load_settings

    bootstrap, registry = _kafka_env()
    tag = uuid.uuid4().hex[:8]
    env = {
        "ASKELEPHANT_API_URL": args.api,
        "ASKELEPHANT_API_KEY": args.key,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHEMA_REGISTRY_URL": registry,
        "TOPIC_PREFIX": f"bench-{tag}.",
        "CHECKPOINT_TOPIC": f"bench-{tag}.checkpoints",
        "PRODUCER_ID": f"bench-{tag}",
        "RESOURCES": args.resources,
        "METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in args.set),
    }
    app = build_app(load_settings(env), stop=threading.Event())
    reports: list[Any] = []
    # (when, records fetched so far by the whole traversal): a sliced export reports each
    # window's own stats, so the windows' latest counts are added up
    progress: dict[str, list[tuple[float, int]]] = {r: [] for r in app.settings.resources}
    per_window: dict[str, dict[int, int]] = {r: {} for r in app.settings.resources}
    lock = threading.Lock()

    def on_page(resource: str, stats: Any, _acked: int) -> None:
        with lock:
            per_window[resource][id(stats)] = stats.fetched
            progress[resource].append((time.perf_counter(), sum(per_window[resource].values())))

    try:

        def run() -> tuple[int, int]:
            threads = [
                threading.Thread(
                    target=lambda r=r: reports.append(app.service.sync_once(r, on_page))
                )
                for r in app.settings.resources
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(r.published for r in reports), sum(r.stats.pages for r in reports)

        result = _timed(run) if not args.profile else _profiled(run)
        # steady state of the traversals, first page to last: without the run's fixed costs
        # (reading the checkpoint before it, draining and committing after it; for a sliced
        # export also its probe page)
        result["traversal_records_per_s"] = sum(
            (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
            for marks in progress.values()
            if len(marks) > 1 and marks[-1][0] > marks[0][0]
        )
        _emit(result)
    finally:
        app.close()
    failed = [f"{r.resource}: {r.error}" for r in reports if r.outcome != "success"]
    if failed:
        raise SystemExit("run failed: " + "; ".join(failed))


def sequential(args: argparse.Namespace) -> None:
    from confluent_kafka.admin import AdminClient

    from producer.kafka.admin import TopicSpec, ensure_topics
    from producer.kafka.publisher import new_producer

    bootstrap, _ = _kafka_env()
    tag = uuid.uuid4().hex[:8]
    resources = args.resources.split(",")
    topics = {r: f"bench-{tag}.seq.{r}" for r in resources}
    ensure_topics(
        AdminClient({"bootstrap.servers": bootstrap}),
        [TopicSpec(t, -1, -1, {}) for t in topics.values()],
    )
    kafka = new_producer({"bootstrap.servers": bootstrap})

    def run() -> tuple[int, int]:
        records = pages = 0
        with httpx.Client(headers={"Authorization": args.key}, timeout=30) as http:
            for name in resources:
                cursor: str | None = None
                while True:
                    params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                    response = http.get(f"{args.api}/v2/{name}", params=params)
                    response.raise_for_status()
                    body = json.loads(response.content)
                    pages += 1
                    for record in body["data"]:
                        value = json.dumps(record).encode()
                        while True:
                            try:
                                kafka.produce(topics[name], key=record["id"].encode(), value=value)
                                break
                            except BufferError:
                                kafka.poll(0.1)
                        kafka.poll(0)
                        records += 1
                    cursor = body.get("next_cursor")
                    if not body.get("has_more") or not cursor:
                        break
        if kafka.flush(60):
            raise SystemExit("sequential: messages left unacknowledged")
        return records, pages

    _emit(_timed(run))


def ceiling(args: argparse.Namespace) -> None:
    import fastavro
    from confluent_kafka.admin import AdminClient

    from producer import schemas
    from producer.events_compiled import CompiledEventBuilder
    from producer.kafka.admin import TopicSpec, ensure_topics
    from producer.kafka.publisher import new_producer
    from producer.sync.run import identify

    bootstrap, _ = _kafka_env()
    tag = uuid.uuid4().hex[:8]
    payloads: list[tuple[bytes, bytes]] = []
    resources = args.resources.split(",")
    with httpx.Client(timeout=30) as http:
        for name in resources:
            builder = CompiledEventBuilder(name)
            parsed = schemas.event_schema(name)
            body = http.get(f"{args.api}/v2/{name}", params={"limit": "100"}).json()
            for record in body["data"]:
                identity = identify(record)
                assert not hasattr(identity, "reason")
                event = builder.build(
                    record,
                    run_id="b",
                    producer_id="b",
                    api_version="bench",
                    snapshot=True,
                    now_ms=0,
                    updated_at_us=identity.instant,  # type: ignore[union-attr]
                )
                out = io.BytesIO()
                out.write(b"\0\0\0\0\1")  # Confluent framing: magic byte + schema id
                fastavro.schemaless_writer(out, parsed, event)
                payloads.append((str(record["id"]).encode(), out.getvalue()))
    topic = f"bench-{tag}.ceiling"
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), [TopicSpec(topic, -1, -1, {})])
    kafka = new_producer({"bootstrap.servers": bootstrap})
    count = args.count

    def run() -> tuple[int, int]:
        for n in range(count):
            key, value = payloads[n % len(payloads)]
            while True:
                try:
                    kafka.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    kafka.poll(0.1)
            kafka.poll(0)
        if kafka.flush(60):
            raise SystemExit("ceiling: messages left unacknowledged")
        return count, 0

    result = _timed(run)
    result["payload_bytes"] = sum(len(v) for _, v in payloads) / max(len(payloads), 1)
    _emit(result)


def _profiled(run: Callable[[], tuple[int, int]]) -> dict[str, float]:
    """cProfile of every thread the run starts (sync workers, prefetchers): where the CPU goes."""
    profiles: list[cProfile.Profile] = []

    def start_in_thread(*_: object) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()  # replaces this one-shot hook in the new thread

    threading.setprofile(start_in_thread)
    try:
        result = _timed(run)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(*profiles, stream=(stream := io.StringIO()))
    stats.sort_stats("tottime").print_stats(35)
    print(stream.getvalue(), file=sys.stderr)
    return result


def _emit(result: dict[str, float]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.measure")
    parser.add_argument("what", choices=["producer", "sequential", "ceiling"])
    parser.add_argument("--api", required=True, help="API base URL, e.g. http://host:port/api")
    parser.add_argument("--key", default="sk-apik_bench.secret")
    parser.add_argument("--resources", default="contacts,engagements")
    parser.add_argument("--count", type=int, default=100_000, help="ceiling: messages")
    parser.add_argument("--set", action="append", default=[], help="producer: ENV=VALUE")
    parser.add_argument("--profile", action="store_true", help="producer: cProfile to stderr")
    args = parser.parse_args()
    {"producer": producer, "sequential": sequential, "ceiling": ceiling}[args.what](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
