"""``python -m streaming.simulator``: generate a scenario's traffic and send it, or write it to a file.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from typing import Any

from streaming.simulator.delivery import send_http, send_to_kafka, summarize, write_truth
from streaming.simulator.generation import generate
from streaming.simulator.scenario import SCENARIOS, ScenarioError, load_scenario

# --- CLI ------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streaming.simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default", help=f"one of {', '.join(SCENARIOS)} or a TOML path")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--day", type=int, help="only this day (0-based)")
    parser.add_argument("--start-date", help="YYYY-MM-DD or 'today'")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any scenario field (repeatable)")
    parser.add_argument("--to", choices=("kafka", "http", "file", "summary"), default="summary")
    parser.add_argument("--broker", help="Kafka address (default: KAFKA_BROKER_ADDRESS)")
    parser.add_argument("--topic", help="default: events.raw with the configured prefix")
    parser.add_argument("--source-id", default="simulator")
    parser.add_argument("--received-at", choices=("now", "send_at"), default="now")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="collector base URL (--to http)")
    parser.add_argument("--write-key", help="collector write key (--to http); default FIRSTMILE_SIM_WRITE_KEY")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    parser.add_argument("--out", default="simulated-events.jsonl", help="wire events file (--to file)")
    parser.add_argument("--truth", help="write the ground truth here (.parquet or .jsonl)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {"seed": args.seed, "users": args.users, "days": args.days,
                                 "start_date": args.start_date}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value
    try:
        scenario = load_scenario(args.scenario, **overrides)
    except (ScenarioError, FileNotFoundError) as exc:
        parser.error(str(exc))
    events = list(generate(scenario, day=args.day))
    progress = not args.no_progress
    if args.truth:
        write_truth(events, args.truth)
    if args.to == "kafka":
        import os

        from streaming.settings import RAW, load_settings

        settings = load_settings()
        address = args.broker or os.environ.get("KAFKA_BROKER_ADDRESS") or settings.kafka_broker_address
        if not address:
            parser.error("--to kafka needs --broker or KAFKA_BROKER_ADDRESS")
        n = send_to_kafka(events, broker_address=address, topic=args.topic or settings.topic(RAW),
                          source_id=args.source_id, rate=args.rate, progress=progress, received_at=args.received_at)
        print(f"produced {n} events to {args.topic or settings.topic(RAW)} on {address}", file=sys.stderr)
    elif args.to == "http":
        import os

        key = args.write_key or os.environ.get("FIRSTMILE_SIM_WRITE_KEY")
        if not key:
            parser.error("--to http needs --write-key or FIRSTMILE_SIM_WRITE_KEY")
        n = send_http(events, url=args.url, write_key=key, batch_size=args.batch_size, rate=args.rate,
                      progress=progress)
        print(f"collector accepted {n} events", file=sys.stderr)
    elif args.to == "file":
        with open(args.out, "w") as fh:
            for ev in events:
                fh.write(json.dumps(ev.payload, separators=(",", ":")) + "\n")
        print(f"wrote {len(events)} wire events to {args.out}", file=sys.stderr)
    summary = summarize(events)
    print(json.dumps({"scenario": scenario.name, "seed": scenario.seed, "events": len(events),
                      "per_day": {str(k): v for k, v in sorted(summary.items())}}, indent=1))
    return 0

