"""The ``firstmile`` command. Imports lazily: ``firstmile worker`` must not load Dagster, dbt or MLflow.

Each command is an entry point: it reads its tier's settings once (``--data-dir`` over ``FIRSTMILE_DATA_DIR``) and
passes them, or the values they hold, down; child processes get an environment built from them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.settings import OrchestrationSettings


def _data_dir_override(args: argparse.Namespace) -> dict[str, Any]:
    """``--data-dir`` wins over ``FIRSTMILE_DATA_DIR`` (and ``.env``)."""
    return {"data_dir": Path(args.data_dir)} if args.data_dir else {}


def _orchestration_settings(args: argparse.Namespace) -> OrchestrationSettings:
    from orchestration.settings import load_orchestration_settings

    return load_orchestration_settings(**_data_dir_override(args))


def _demo(args: argparse.Namespace) -> int:
    from orchestration.demo import run_demo

    settings = _orchestration_settings(args)
    if args.live:
        from orchestration.live_demo import run_live_demo

        report = run_live_demo(settings.data_dir, users=args.users or 150, days=args.days, speed=args.speed,
                               keep=args.keep)
        print(f"\nTimeline in {settings.layout.reports / 'live_demo.json'}; the platform's data is left in "
              f"{settings.layout.root} (`firstmile ui`, `firstmile mlflow-ui`).")
        return 0 if report.first_wave_quarantined else 1
    run_demo(data_dir=settings.data_dir, scenario=args.scenario, users=args.users, fresh=not args.keep,
             mlflow_tracking_uri=settings.mlflow_tracking_uri)
    print(f"\nData left in {settings.layout.root}. Open the UIs with `firstmile ui` (Dagster) and "
          f"`firstmile mlflow-ui` (MLflow).")
    return 0


def _ui(args: argparse.Namespace) -> int:
    settings = _orchestration_settings(args)
    # `dagster dev` inherits this environment, with the data directory and instance the settings resolved.
    env = {**os.environ, **settings.child_env()}
    env.setdefault("KAFKA_BROKER_ADDRESS", "unset")
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    from orchestration.environment import ensure_dbt_manifest

    ensure_dbt_manifest(settings)
    bin_dir = Path(sys.executable).parent
    os.execve(str(bin_dir / "dagster"), [str(bin_dir / "dagster"), "dev", "-m", "orchestration.definitions",
                                        "-h", args.host, "-p", str(args.port)], env)
    return 0


def _mlflow_ui(args: argparse.Namespace) -> int:
    layout = _orchestration_settings(args).layout
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execve(str(bin_dir / "mlflow"), [str(bin_dir / "mlflow"), "server", "--workers", "1", "--host", args.host,
                                       "--port", str(args.port), "--backend-store-uri", layout.mlflow_tracking_uri,
                                       "--default-artifact-root", layout.mlflow_artifacts.as_uri()], env)
    return 0


def _up(args: argparse.Namespace) -> int:
    from orchestration.supervisor import PlatformOptions, run_platform
    from streaming.collector.config import load_collector_settings

    # `up` launches both families: the hot path's settings (broker, topics, the collector's write keys) and the
    # orchestration's (dbt, Dagster), each read once here.
    orchestration = _orchestration_settings(args)
    streaming = load_collector_settings(data_dir=orchestration.data_dir)
    options = PlatformOptions(data_dir=orchestration.data_dir, host=args.host, workers=args.workers,
                              collector_port=args.collector_port, serving_port=args.serving_port,
                              dagster_port=args.dagster_port,
                              mlflow_port=args.mlflow_port, dagster=not args.no_dagster, mlflow=not args.no_mlflow)
    return run_platform(options, streaming=streaming, orchestration=orchestration,
                        echo=lambda line: print(line, flush=True))


def _worker(_: argparse.Namespace) -> int:
    from streaming.worker import main

    main()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from datetime import datetime

    from streaming.delivery.config import DestinationConfigError, load_destinations
    from streaming.delivery.replay import replay
    from streaming.settings import load_settings

    settings = load_settings()
    if settings.embedded:
        print("KAFKA_BROKER_ADDRESS is not set: replay sends to the running platform's broker", file=sys.stderr)
        return 2
    try:
        destination = load_destinations(settings.destinations_file).get(args.destination)
        start = datetime.fromisoformat(args.start) if args.start else None
        end = datetime.fromisoformat(args.end) if args.end else None
    except (DestinationConfigError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    statuses = {s.strip() for s in args.status.split(",")} if args.status else None
    count = replay(settings.kafka_broker_address, settings, destination, start=start, end=end, statuses=statuses,
                   routed=args.routed)
    source = "routed events" if args.routed else "dead letters"
    print(f"replayed {count} {source} to {destination.id} (through {destination.retry_topic(settings.topic_prefix)})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from ml import registry
    from streaming.control import publish_policy
    from streaming.policy import seal
    from streaming.settings import CONTROL_POLICY, load_settings

    orchestration = _orchestration_settings(args)
    settings = load_settings(data_dir=orchestration.data_dir)
    if settings.embedded:
        print("KAFKA_BROKER_ADDRESS is not set: rollback republishes to the running platform's broker",
              file=sys.stderr)
        return 2
    layout = orchestration.layout.ensure()
    client = registry.configure(layout, tracking_uri=orchestration.tracking_uri)
    version, doc = registry.rollback(client)
    # Workers only move forward: the previous document is republished under a new, higher version number.
    current = registry.champion_policy(client) or doc
    newest = max(int(p.stem.split("-v")[-1]) for p in layout.policies.glob("policy-v*.json")) \
        if list(layout.policies.glob("policy-v*.json")) else int(current["policy_version"])
    republished = seal({**doc, "policy_version": newest + 1, "parent_version": doc["policy_version"],
                        "description": f"rollback to model version {version} (policy v{doc['policy_version']})"})
    publish_policy(settings.kafka_broker_address, settings.topic(CONTROL_POLICY), republished)
    (layout.policies / f"policy-v{republished['policy_version']}.json").write_text(json.dumps(republished, indent=2))
    print(f"champion → model version {version}; republished as policy v{republished['policy_version']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firstmile", description=__doc__)
    parser.add_argument("--data-dir", help="data directory (default: $FIRSTMILE_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole loop on the embedded broker and print a report")
    demo.add_argument("--scenario", default="default")
    demo.add_argument("--users", type=int, default=None)
    demo.add_argument("--keep", action="store_true", help="keep the existing data directory")
    demo.add_argument("--live", action="store_true",
                      help="start the platform and play a bot wave through the collector in compressed real time; "
                           "the sensors run the loop; print the timeline (bot-wave scenario, default 150 users)")
    demo.add_argument("--days", type=int, default=3, help="--live: simulated days to play")
    demo.add_argument("--speed", type=float, default=288.0,
                      help="--live: simulated seconds per second (288: a day in five minutes)")
    demo.set_defaults(func=_demo)
    up = sub.add_parser("up", help="start the platform: broker, collector, workers, lake sink, Dagster, MLflow")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--workers", type=int, default=1, help="hot-path workers (<= FIRSTMILE_PARTITIONS)")
    up.add_argument("--collector-port", type=int, default=8080, help="0: a free port")
    up.add_argument("--serving-port", type=int, default=8090, help="the live profile API; 0: a free port")
    up.add_argument("--dagster-port", type=int, default=3000, help="0: a free port")
    up.add_argument("--mlflow-port", type=int, default=5000, help="0: a free port")
    up.add_argument("--no-dagster", action="store_true", help="do not start the Dagster webserver and daemon")
    up.add_argument("--no-mlflow", action="store_true", help="do not start the MLflow UI")
    up.set_defaults(func=_up)
    ui = sub.add_parser("ui", help="Dagster UI on the data directory")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_ui)
    mui = sub.add_parser("mlflow-ui", help="MLflow UI on the data directory")
    mui.add_argument("--host", default="127.0.0.1")
    mui.add_argument("--port", type=int, default=5000)
    mui.set_defaults(func=_mlflow_ui)
    sub.add_parser("worker", help="run a hot-path worker (KAFKA_BROKER_ADDRESS)").set_defaults(func=_worker)
    sub.add_parser("rollback", help="re-point champion to previous and republish").set_defaults(func=_rollback)
    rp = sub.add_parser("replay", help="send a destination's dead letters (or routed events) again")
    rp.add_argument("--destination", required=True, help="the destination's id in the destinations file")
    rp.add_argument("--from", dest="start", help="ISO time: only records written from then")
    rp.add_argument("--to", dest="end", help="ISO time: only records written before then")
    rp.add_argument("--status", help="only dead letters with these HTTP statuses or reasons (comma separated)")
    rp.add_argument("--routed", action="store_true", help="replay the routed topic's records, not dead letters")
    rp.set_defaults(func=_replay)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
