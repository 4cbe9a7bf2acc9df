"""``python -m streaming.delivery [--destination ID --lane fresh|retry]``: deliver routed events."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from streaming.delivery.app import create_delivery_topics, run_all, run_lane
from streaming.delivery.config import DestinationConfigError, load_destinations
from streaming.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m streaming.delivery", description=__doc__)
    parser.add_argument("--destination", help="one destination's id (default: every destination, one process "
                                              "per destination and lane)")
    parser.add_argument("--lane", choices=("fresh", "retry"), default="fresh")
    args = parser.parse_args(argv)
    settings = load_settings()
    if not settings.kafka_broker_address:
        print("KAFKA_BROKER_ADDRESS is required (host:port of the Kafka or embedded broker)", file=sys.stderr)
        return 2
    try:
        destinations = load_destinations(settings.destinations_file)
        if args.destination is None:
            create_delivery_topics(settings.kafka_broker_address, settings, destinations)
            return run_all(destinations, dict(os.environ))
        destination = destinations.get(args.destination)
        destination.secret(destination.secret_env or destination.write_key_env or destination.dsn_env)
    except DestinationConfigError as exc:
        print(f"destinations: {exc}", file=sys.stderr)
        return 2
    run_lane(settings, settings.kafka_broker_address, destination, args.lane)
    return 0


if __name__ == "__main__":
    sys.exit(main())
