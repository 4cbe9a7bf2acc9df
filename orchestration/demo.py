"""The scripted loop on the embedded default (``firstmile demo`` / ``make demo``).

broker + worker + lake sink → day-1 traffic → one user asks to be forgotten (suppressed at the edge at once) →
Dagster materializes the loop (dbt → teacher/student → mined rules → backtest → gate → publish v2, and the identity
merges and erasures the warehouse found) → the regulations sensor's erasure run (lake rewritten, warehouse rebuilt,
ML artefacts checked) → workers hot-swap v2 → day-2 traffic → report. The people stories (one merge, one erasure):
:mod:`orchestration.demo_people`. Exits 0 and leaves the data directory for the Dagster and MLflow UIs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from orchestration.settings import OrchestrationSettings
from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.control import PolicyReader, publish_policy, wait_for_version
from streaming.policy import PolicyHolder, bootstrap_policy
from streaming.settings import StreamingSettings
from warehouse.lake import STREAMS, stream_glob

if TYPE_CHECKING:
    import dagster as dg

logger = logging.getLogger(__name__)


@dataclass
class DemoReport:
    sent_per_day: dict[int, int] = field(default_factory=dict)
    accounted: int = 0
    per_day_destination: list[tuple[Any, ...]] = field(default_factory=list)
    per_day_policy: list[tuple[Any, ...]] = field(default_factory=list)
    stealth_day2: dict[str, int] = field(default_factory=dict)
    published_version: int | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    materialized: list[str] = field(default_factory=list)
    swap_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the latency-impact report's text summary (orchestration/report.py), and where its HTML is
    latency_impact: str = ""
    latency_impact_html: str = ""
    #: the merge the warehouse found and published (from, into, consent) and what became of device B on day 2
    merge: dict[str, Any] = field(default_factory=dict)
    #: the erasure request: its states with times, what each step did, and the erased person's events
    erasure: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = ["", "firstmile demo — report", "=" * 60]
        erased = self.erasure.get("lake_inputs_erased", 0)
        lines.append(f"events sent per day: {self.sent_per_day}; accounted for in the lake: {self.accounted} "
                     f"(routed + quarantined + dead-lettered + suppressed)"
                     + (f" + {erased} erased on request" if erased else ""))
        lines.append("")
        lines.append(f"{'day':<12}{'outcome':<22}{'events':>8}")
        for day, outcome, n in self.per_day_destination:
            lines.append(f"{str(day):<12}{outcome:<22}{n:>8}")
        lines.append("")
        lines.append(f"{'day':<12}{'policy version':<22}{'events decided':>14}")
        for day, version, n in self.per_day_policy:
            lines.append(f"{str(day):<12}{'v' + str(version):<22}{n:>14}")
        lines.append("")
        lines.append(f"policy v{self.published_version} published (gate passed: {self.gate.get('passed')}); "
                     f"its broadcast reached a policy reader in {self.swap_seconds or 0:.2f} s")
        s = self.stealth_day2
        lines.append(f"day-2 stealth bots: {s.get('events', 0)} events; quarantined by v2: {s.get('caught_v2', 0)}; "
                     f"v1 would have caught: {s.get('caught_v1', 0)}; caught by v2 that v1 missed: "
                     f"{s.get('v2_not_v1', 0)}")
        from orchestration.demo_people import people_lines

        lines += people_lines(self.merge, self.erasure)
        lines.append(f"Dagster materialized {len(self.materialized)} assets; timings (s): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()))
        if self.latency_impact:
            lines.append(self.latency_impact)
            lines.append(f"full report with plots: {self.latency_impact_html}")
        return "\n".join(lines)


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lake_accounted(lake: Path) -> int:
    """Distinct inputs (events.raw partition/offset) that reached any lake stream."""
    parts = []
    for stream in STREAMS:
        if list((lake / stream).rglob("*.parquet")):
            parts.append(f"select raw_partition, raw_offset from read_parquet('{stream_glob(lake, stream)}', "
                         f"hive_partitioning=true, union_by_name=true)")
    if not parts:
        return 0
    con = duckdb.connect()
    try:
        row = con.execute(f"select count(*) from (select distinct * from ({' union all '.join(parts)}))").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def lake_event_ids(lake: Path) -> set[str]:
    """Every event id any lake file holds (every stream)."""
    parts = [f"select event_id from read_parquet('{stream_glob(lake, stream)}', hive_partitioning=true, "
             f"union_by_name=true)" for stream in STREAMS if list((lake / stream).rglob("*.parquet"))]
    if not parts:
        return set()
    con = duckdb.connect()
    try:
        return {r[0] for r in con.execute(" union ".join(parts)).fetchall()}
    finally:
        con.close()


def wait_for_lake(lake: Path, expected: int, *, timeout: float = 180.0,
                  procs: list[subprocess.Popen[bytes]] | None = None) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = lake_accounted(lake)
        if seen >= expected:
            return seen
        for proc in procs or []:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see the logs in the data directory")
        time.sleep(1.0)
    raise TimeoutError(f"only {seen} of {expected} events reached the lake within {timeout:.0f}s")


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (and its children's: dbt) to ``log`` for the block: the terminal gets the
    report, the log file and the Dagster UI get the runs' details."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _definitions(settings: OrchestrationSettings, *, broker_address: str = "unset", topic_prefix: str = ""
                 ) -> dg.Definitions:
    """The code location with a resource for the demo's data directory and broker, given explicitly (the process's
    environment is not edited)."""
    from orchestration.definitions import build_definitions
    from orchestration.resources import FirstmileResource

    firstmile = FirstmileResource(data_dir=str(settings.layout.root), kafka_broker_address=broker_address,
                                  topic_prefix=topic_prefix, mlflow_tracking_uri=settings.mlflow_tracking_uri,
                                  lake_uri=settings.lake_uri)
    return build_definitions(settings=settings, firstmile=firstmile)


def materialize_loop(settings: OrchestrationSettings, *, broker_address: str, topic_prefix: str = ""
                     ) -> tuple[bool, list[str], dict[str, Any]]:
    """Run the Dagster ``loop`` job in-process on the instance under the data directory (the UI shows the runs)."""
    from dagster import DagsterInstance

    defs = _definitions(settings, broker_address=broker_address, topic_prefix=topic_prefix)
    job = defs.resolve_job_def("loop")
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        # Dagster's console logger at WARNING: the runs' full logs are in the UI, the terminal gets the report.
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        materialized = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
                               if e.asset_key is not None})
        published = {}
        if result.success and "published_policy" in materialized:
            published = result.output_for_node("published_policy")
    return result.success, materialized, published


def materialize_latency_report(settings: OrchestrationSettings) -> tuple[str, str]:
    """Materialize ``latency_impact_report`` in-process on the data directory's instance (the UI shows it with its
    metadata); return its text summary and the HTML path."""
    from dagster import DagsterInstance

    job = _definitions(settings).resolve_job_def("latency_impact")
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        result = job.execute_in_process(instance=instance, run_config=QUIET)
    event = result.get_asset_materialization_events()[0]
    metadata = event.materialization.metadata
    summary = str(metadata["summary"].value).strip().strip("`").strip()
    return "\n" + summary, str(metadata["path"].value)


def build_report(data_dir: Path, truth: Path, report: DemoReport, day_dates: dict[int, str]) -> None:
    """The demo's own tables (outcomes and policy versions per day, day-2 stealth bots), read through the
    warehouse's models: stg_decided, stg_deliveries and stg_dlq (one dedupe, one copy that counts). The loop built
    them after day 1, so they are first built over day 2 with the loop's own dbt asset, in Dagster
    (:func:`orchestration.warehouse_refresh.build_decided_models`)."""
    from dagster import DagsterInstance

    from ml.backtest import bot_sql
    from orchestration.warehouse_refresh import build_decided_models
    from warehouse.duck import connect

    # The embedded runtime's lake is the data directory's, whatever FIRSTMILE_LAKE_URI says (as in run_demo).
    settings = OrchestrationSettings(data_dir=data_dir, lake_uri="")
    with output_to(data_dir / "logs" / "dagster.log"), \
            DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        build_decided_models(_definitions(settings), instance, run_config=QUIET)
    with connect(data_dir / "warehouse.duckdb") as con:
        con.execute("set TimeZone = 'UTC'")
        report.per_day_destination = sorted(con.execute("""
            select cast(day as varchar), outcome, count(*) from (
                select cast(event_ts as date) as day, destination as outcome from stg_deliveries
                union all
                select event_date, 'events.' || stream from stg_decided where stream <> 'events'
                union all
                select received_date, 'events.dlq' from stg_dlq)
            group by all""").fetchall())
        report.per_day_policy = sorted(con.execute(
            "select cast(event_date as varchar), policy_version, count(*) from stg_decided group by all").fetchall())
        if day_dates.get(1):
            v1 = bot_sql(bootstrap_policy())
            row = con.execute(f"""
                with d as (select sent_event_id, stream, stream <> 'suppressed' and coalesce({v1}, false) as v1
                           from stg_decided)
                select count(*), count(*) filter (where stream = 'quarantine'), count(*) filter (where v1),
                       count(*) filter (where stream = 'quarantine' and not v1)
                from read_parquet('{truth}') t join d on d.sent_event_id = t.event_id
                where t.actor = 'stealth_bot' and t.day = 1""").fetchone()
            if row:
                report.stealth_day2 = {"events": row[0], "caught_v2": row[1], "caught_v1": row[2],
                                       "v2_not_v1": row[3]}


def run_demo(*, data_dir: Path, scenario: str = "default", users: int | None = None, fresh: bool = True,
             echo: bool = True, mlflow_tracking_uri: str = "") -> DemoReport:
    """The demo on the embedded broker and the local lake of ``data_dir``. ``mlflow_tracking_uri``: an MLflow server
    (``FIRSTMILE_MLFLOW_TRACKING_URI`` as the command read it); empty: the data directory's SQLite store."""
    from orchestration import demo_people as people
    from streaming import simulator
    from warehouse.duck import connect

    started = time.monotonic()
    report = DemoReport()
    data_dir = data_dir.resolve()
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    settings = StreamingSettings(data_dir=data_dir, KAFKA_BROKER_ADDRESS="")  # type: ignore[call-arg]
    # The embedded runtime's lake is the data directory's, whatever FIRSTMILE_LAKE_URI says.
    orchestration = OrchestrationSettings(data_dir=data_dir, lake_uri="", mlflow_tracking_uri=mlflow_tracking_uri)
    layout = settings.layout.ensure()
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    overrides: dict[str, Any] = {"days": 2}
    if users is not None:
        overrides["users"] = users
    sim = simulator.load_scenario(scenario, **overrides)

    from orchestration.environment import ensure_dbt_manifest, start_dbt_parse

    ensure_dbt_manifest(orchestration)
    parse = start_dbt_parse(orchestration)  # for this data directory; done before the loop needs it
    broker = EmbeddedBroker.start(log_path=logs / "broker.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        create_topics(broker.address, settings)
        publish_policy(broker.address, settings.topic(topics.CONTROL_POLICY), bootstrap_policy())
        holder = PolicyHolder()
        reader = PolicyReader(broker.address, settings.topic(topics.CONTROL_POLICY), holder)
        reader.start()
        env = {**os.environ, "KAFKA_BROKER_ADDRESS": broker.address, "FIRSTMILE_DATA_DIR": str(data_dir)}
        procs = [_spawn("streaming.worker", env, logs / "worker.log"),
                 _spawn("streaming.lake_sink", env, logs / "lake_sink.log")]
        report.timings["start"] = time.monotonic() - started

        days = [list(simulator.generate(sim, day=day)) for day in range(2)]
        people.add_merge_story(days)
        subject = people.pick_erasure_subject(days)
        truth_events = [ev for day in days for ev in day]
        day_dates = {day: events[0].send_at.date().isoformat() for day, events in enumerate(days) if events}
        total = 0
        for day, events in enumerate(days):
            t0 = time.monotonic()
            sent = simulator.send_to_kafka(events, broker_address=broker.address, topic=settings.topic(topics.RAW),
                                           received_at="send_at")
            report.sent_per_day[day + 1] = sent
            total += sent
            if echo:
                print(f"day {day + 1}: sent {sent} events; waiting for the hot path and the lake…", flush=True)
            report.accounted = wait_for_lake(layout.lake, total - report.erasure.get("lake_inputs_erased", 0),
                                             procs=procs)
            report.timings[f"day{day + 1}_hot_path"] = time.monotonic() - t0
            if day == 0:
                t1 = time.monotonic()
                parse.wait()
                reg = people.request_erasure(broker.address, settings, subject[1]) if subject else None
                if echo:
                    print("materializing the loop in Dagster (dbt → teacher/student → rules → backtest → gate → "
                          "publish policy, merges, erasures)…", flush=True)
                with output_to(logs / "dagster.log"):
                    ok, materialized, published = materialize_loop(orchestration, broker_address=broker.address,
                                                                   topic_prefix=settings.topic_prefix)
                report.materialized = materialized
                report.timings["dagster_loop"] = time.monotonic() - t1
                if not ok or not published:
                    raise RuntimeError(f"the Dagster loop did not publish a policy; see {logs / 'dagster.log'} and "
                                       f"the run in the Dagster UI (DAGSTER_HOME={data_dir / 'dagster'})")
                report.published_version = int(published["published_version"])
                report.gate = {"passed": True}
                report.merge = people.published_merge(layout.duckdb_path)
                if reg is not None and subject is not None:
                    t2 = time.monotonic()
                    if echo:
                        print("the regulations sensor's erasure run (lake rewritten → warehouse rebuilt → ML "
                              "artefacts checked)…", flush=True)
                    with output_to(logs / "dagster.log"):
                        report.erasure = people.run_erasure(orchestration, broker.address, settings, reg, subject[0])
                    report.timings["erasure_job"] = time.monotonic() - t2
                report.swap_seconds = wait_for_version(holder, report.published_version)
                time.sleep(2.0)  # the workers' readers poll every 10 ms; leave them a margin beyond ours
        truth_path = data_dir / "truth.parquet"
        simulator.write_truth(truth_events, truth_path)
        reader.stop()
        build_report(data_dir, truth_path, report, day_dates)
        with connect(layout.duckdb_path) as con:
            after = people.after_day_two(
                con, layout.lake, merge=report.merge,
                erased_day1=people.event_ids(days, actor=subject[0], day=0) if report.erasure and subject else [],
                erased_day2=people.event_ids(days, actor=subject[0], day=1) if report.erasure and subject else [])
        if report.merge:
            report.merge["day2"] = after.get("merge_day2", [])
        if report.erasure:
            report.erasure.update(day1=after.get("erased_day1", {}), day2=after.get("erased_day2", {}))
        report.timings["total"] = time.monotonic() - started
    finally:
        for proc in [*procs, parse]:
            _stop(proc)
        broker.stop()
    t2 = time.monotonic()
    with output_to(data_dir / "logs" / "dagster.log"):
        report.latency_impact, report.latency_impact_html = materialize_latency_report(orchestration)
    report.timings["latency_report"] = time.monotonic() - t2
    (layout.reports / "demo.json").write_text(json.dumps(report.__dict__, default=str, indent=2))
    if echo:
        print(report.to_text(), flush=True)
    return report
