"""`make devstack` / `python -m devstack`: broker + registry + API simulator for use by hand.

Starts the same stack as the tests and the demo (docs/devstack.md) plus the API simulator,
prints their addresses and the `export` lines that point `askelephant-kafka` at them, then
waits. Ctrl-C (SIGINT) or SIGTERM stops all three.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from askelephant_simulator.server import Simulator
from devstack._common import HOW_TO_GET_A_BROKER, StackUnavailable
from devstack.stack import LocalStack

#: The last line printed once everything is up (tests wait for it).
READY_LINE = "devstack ready; Ctrl-C stops the broker, the registry and the simulator"


def export_lines(stack: LocalStack, sim: Simulator) -> list[str]:
    """Shell lines that point the producer CLI at this stack."""
    values = {
        "ASKELEPHANT_API_URL": sim.base_url,
        "ASKELEPHANT_API_KEY": sim.api_key,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": stack.schema_registry_url,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--simulator-port", type=int, default=8765, help="0: any free port")
    parser.add_argument("--seed", type=int, default=42, help="simulator data seed")
    parser.add_argument("--records", type=int, default=500, help="simulator records per resource")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    # Installed before anything starts, so a Ctrl-C during start-up still stops what started.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    out = sys.stdout
    print(
        "Starting Apache Kafka, a schema registry and the API simulator ...", file=out, flush=True
    )
    try:
        with (
            LocalStack() as stack,
            Simulator(
                seed=args.seed, records_per_resource=args.records, port=args.simulator_port
            ) as sim,
        ):
            print(
                f"  broker     {stack.bootstrap_servers}  (Apache Kafka {stack.kafka_version}, "
                f"via {stack.how})\n"
                f"  registry   {stack.schema_registry_url}  ({stack.registry_name}, "
                f"via {stack.registry_how})\n"
                f"  simulator  {sim.base_url}  (API key {sim.api_key}; control {sim.control_url})\n"
                "\nTo use the CLI by hand, in another shell:\n",
                file=out,
            )
            for line in export_lines(stack, sim):
                print(f"  {line}", file=out)
            print(f"  askelephant-kafka sync\n\n{READY_LINE}", file=out, flush=True)
            stop.wait()
            print("stopping ...", file=out, flush=True)
    except StackUnavailable as exc:
        print(f"devstack: {exc}\nTo get one: {HOW_TO_GET_A_BROKER}.", file=sys.stderr)
        return 1
    print("stopped", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
