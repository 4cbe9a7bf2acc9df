"""``python -m streaming.simulator``: generate a scenario's traffic and send it, or write it to a file; with
``--live``, play it now through the collector while the simulated website asks the profile API mid-session.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from typing import Any

from streaming.simulator.delivery import send_http, send_to_kafka, summarize, write_truth
from streaming.simulator.generation import generate
from streaming.simulator.live import LiveTarget, Pace, new_run_id, play
from streaming.simulator.live_records import live_dir
from streaming.simulator.scenario import SCENARIOS, SITE, Scenario, ScenarioError, load_scenario

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
    live = parser.add_argument_group(
        "live mode", "--live plays the sessions now through the collector (--url, --write-key), the website reads "
                     "the profile API after product views and visitors respond (streaming/simulator/live.py)")
    live.add_argument("--live", action="store_true", help="play in compressed real time (ignores --to)")
    live.add_argument("--serving-url", default="http://127.0.0.1:8090", help="the profile API's base URL")
    live.add_argument("--read-key", help="publishable or server key for the reads; default FIRSTMILE_SIM_READ_KEY")
    live.add_argument("--origin", default=SITE, help="the website's origin (sent with a publishable key)")
    live.add_argument("--no-reads", action="store_true", help="play the traffic without asking the API")
    live.add_argument("--speed", type=float, default=Pace.speed,
                      help="simulated seconds per wall second for the day (288: a day in 5 minutes)")
    live.add_argument("--session-speed", type=float, default=Pace.session_speed,
                      help="the same inside a session (keep it low: the hot path judges rhythm)")
    live.add_argument("--max-gap", type=float, default=Pace.max_gap_s,
                      help="longest simulated gap inside a session, seconds")
    live.add_argument("--concurrency", type=int, default=Pace.concurrency, help="sessions played at once")
    live.add_argument("--wait-ms", type=int, help="the read's bounded wait (default: the API's, 500 ms)")
    live.add_argument("--live-out", help="run directory (default <FIRSTMILE_DATA_DIR>/live/<run id>)")
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
    if args.live:
        return _live(parser, args, scenario)
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



def _live(parser: argparse.ArgumentParser, args: argparse.Namespace, scenario: Scenario) -> int:
    import os
    import signal
    import threading
    from pathlib import Path

    from streaming.settings import load_settings

    write_key = args.write_key or os.environ.get("FIRSTMILE_SIM_WRITE_KEY")
    read_key = None if args.no_reads else args.read_key or os.environ.get("FIRSTMILE_SIM_READ_KEY")
    if not write_key:
        parser.error("--live needs --write-key or FIRSTMILE_SIM_WRITE_KEY (firstmile up prints its dev write key)")
    if not args.no_reads and not read_key:
        parser.error("--live needs --read-key or FIRSTMILE_SIM_READ_KEY (a publishable key for --origin, or the "
                     "server key firstmile up prints), or --no-reads")
    try:
        pace = Pace(speed=args.speed, session_speed=args.session_speed, max_gap_s=args.max_gap,
                    concurrency=args.concurrency, wait_ms=args.wait_ms)
        target = LiveTarget(collector_url=args.url, write_key=write_key,
                            serving_url=None if args.no_reads else args.serving_url, read_key=read_key,
                            origin=args.origin)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: stop between events and keep what was played
    run_id = new_run_id()
    out = Path(args.live_out) if args.live_out else live_dir(load_settings().layout.root) / run_id
    total_days = [args.day] if args.day is not None else None
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if not args.no_progress and (time.monotonic() - last[0] > 5 or done == total):
            last[0] = time.monotonic()
            print(f"live: {done}/{total} sessions played", file=sys.stderr, flush=True)

    run = play(scenario, target, pace=pace, days=total_days, run_id=run_id, stop=stop, progress=progress)
    run.write(out)
    print(f"live run {run.status}: {out}", file=sys.stderr)
    print(json.dumps(run.summary(), indent=1))
    return 0 if run.status == "complete" else 130
