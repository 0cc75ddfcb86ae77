"""The README's first command (`make demo`): the whole job end to end on embedded defaults.

Not part of the product package: it lives with the devstack because it starts a broker and a
registry, which the product never does.

Starts a local Kafka broker and schema registry (the devstack launcher) and the API simulator,
runs a full sync of all five resources, changes some records (including a batch sharing one
`updated_at`), runs an incremental sync, and prints what happened per resource with a sample
event read back and decoded by a consumer. Then deletes: the simulator sends signed
`v1.contact.deleted` webhooks to the producer's receiver (op d + tombstone on the topic), and a
reconciliation finds a user removed from the API (users have no webhooks).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TextIO

from confluent_kafka.schema_registry import SchemaRegistryClient

from askelephant_simulator.server import Simulator
from askelephant_simulator.webhooks import WebhookSender
from devstack.stack import LocalStack
from producer.app import App, build_app
from producer.cli import render_summary
from producer.config import load_settings
from producer.kafka.reader import read_topic
from producer.observability.logging import configure_logging
from producer.schemas import RESOURCES
from producer.service import RunReport
from producer.webhooks.server import WebhookServer

log = logging.getLogger("devstack.demo")
DEMO_SECRET = "whsec_" + "ZGVtby1vbmx5LXNpZ25pbmctc2VjcmV0LTAwMDE="
"""The demo's own endpoint secret (a real one comes from the Svix App Portal)."""


def main(records: int = 300) -> int:
    configure_logging("WARNING", "text")
    out = sys.stdout
    print("Starting a local Apache Kafka broker and schema registry ...", file=out, flush=True)
    with LocalStack() as stack, Simulator(seed=42, records_per_resource=records) as sim:
        print(
            f"  broker {stack.bootstrap_servers} (Apache Kafka {stack.kafka_version}, "
            f"via {stack.how}); registry {stack.schema_registry_url} ({stack.registry_name}); "
            f"API simulator {sim.base_url}",
            file=out,
        )
        settings = load_settings(
            {
                "ASKELEPHANT_API_URL": sim.base_url,
                "ASKELEPHANT_API_KEY": sim.api_key,
                "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
                "SCHEMA_REGISTRY_URL": stack.schema_registry_url,
                "TOPIC_PREFIX": f"demo-{uuid.uuid4().hex[:6]}.",
                "CHECKPOINT_TOPIC": "askelephant.demo.checkpoints",
                "PRODUCER_ID": f"demo-{uuid.uuid4().hex[:8]}",
                "METRICS_PORT": "0",
                "WEBHOOK_PORT": str(_free_port()),
                "ASKELEPHANT_WEBHOOK_SECRET": DEMO_SECRET,
                "RECONCILE_INTERVAL_SECONDS": "0,users=86400",
            }
        )
        app = build_app(settings, stop=threading.Event())
        try:
            print("\n1. Full export (no checkpoint yet: bulk export, no filter)", file=out)
            full = {r: app.service.sync_once(r) for r in RESOURCES}
            _print_reports(full.values(), out)

            print(
                "\n2. Changing records in the API: 5 updates per resource, 4 engagements "
                "sharing one updated_at, 2 new contacts",
                file=out,
            )
            for resource in RESOURCES:
                sim.dataset.mutate(resource, 5)
            sim.dataset.mutate("engagements", 4, same_timestamp=True)
            sim.dataset.create("contacts", 2)

            print("\n3. Incremental sync (filter[updated_at][gte]=<checkpoint>)", file=out)
            incremental = {r: app.service.sync_once(r) for r in RESOURCES}
            _print_reports(incremental.values(), out)

            print("\n4. Read back by a consumer (AvroDeserializer)", file=out)
            with SchemaRegistryClient(settings.registry_config()) as registry:
                for resource in RESOURCES:
                    topic = settings.topic_for(resource)
                    events = read_topic(settings.kafka_config(), registry, topic)
                    print(f"  {topic}: {len(events)} events on the topic", file=out)
                contacts = settings.topic_for("contacts")
                sample = read_topic(settings.kafka_config(), registry, contacts)
            event = sample[-1].value
            print(f"\nSample event (key {sample[-1].key}):", file=out)
            print(json.dumps(_compact(event), indent=2, default=str), file=out)
            deletes_ok = _deletes(app, sim, out)
        finally:
            app.close()
            del app  # release the Kafka handles before the local broker stops (no log noise)
            gc.collect()
        failed = [r for r in [*full.values(), *incremental.values()] if r.outcome != "success"]
        print(
            "\nDemo finished: "
            + ("all runs succeeded" if not failed else f"{len(failed)} failed")
            + ("; deletes reached Kafka." if deletes_ok else "; deletes did NOT reach Kafka."),
            file=out,
        )
        return 0 if not failed and deletes_ok else 1


def _deletes(app: App, sim: Simulator, out: TextIO) -> bool:
    """Steps 5 and 6: a delete through a signed webhook, and one found by reconciliation."""
    assert app.receiver is not None
    assert app.reconciler is not None
    settings = app.settings
    with WebhookServer(app.receiver, host="127.0.0.1", port=settings.webhook_port) as server:
        sender = WebhookSender(server.url, DEMO_SECRET)
        sim.dataset.add_listener(sender)
        print(
            f"\n5. Deleting 2 contacts in the API: the simulator sends signed v1.contact.deleted "
            f"webhooks to {server.url}",
            file=out,
        )
        gone = sim.dataset.delete_random("contacts", 2)
        deadline = time.monotonic() + 30
        while sender.delivered + sender.failed < len(gone) and time.monotonic() < deadline:
            time.sleep(0.1)
        sender.close()
    ok = True
    with SchemaRegistryClient(settings.registry_config()) as registry:
        events = read_topic(settings.kafka_config(), registry, settings.topic_for("contacts"))
    for contact_id in gone:
        ok &= _show_history(contact_id, [e.value for e in events if e.key == contact_id], out)

    print("\n6. Removing a user from the API (users have no webhooks): reconciliation", file=out)
    [user_id] = sim.dataset.delete_random("users", 1)
    report = app.reconciler.reconcile("users")
    print(
        f"  {report.outcome}: {report.listed} ids listed in {report.requests} request(s), "
        f"{report.keys_scanned} messages scanned, {report.seconds:.2f}s; deleted {report.deleted}",
        file=out,
    )
    with SchemaRegistryClient(settings.registry_config()) as registry:
        events = read_topic(settings.kafka_config(), registry, settings.topic_for("users"))
    ok &= _show_history(user_id, [e.value for e in events if e.key == user_id], out)
    return ok


def _show_history(key: str, values: list[dict[str, object] | None], out: TextIO) -> bool:
    """Print the ops of one key as a consumer reads them; True if it ends with d + tombstone."""
    ops = ["tombstone" if v is None else str(v["op"]) for v in values]
    print(f"  key {key}: {' -> '.join(ops)}", file=out)
    return ops[-2:] == ["d", "tombstone"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _print_reports(reports: Iterable[RunReport], out: TextIO) -> None:
    print(render_summary(list(reports)), file=out)


def _compact(event: dict[str, object]) -> dict[str, object]:
    """Drop the empty optional fields of `after` so the sample reads well."""
    after = event.get("after")
    if isinstance(after, dict):
        event = {**event, "after": {k: v for k, v in after.items() if v not in (None, [])}}
    return event


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=300, help="records per resource")
    sys.exit(main(records=parser.parse_args().records))
