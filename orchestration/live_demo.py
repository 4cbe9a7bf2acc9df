"""``firstmile demo --live``: the loop learns a new bot wave in the running platform, end to end, on its own.

Nothing here drives the loop. It starts ``firstmile up --workers 1`` (broker, collector, worker, lake sink, serving,
Dagster with its sensors and daemon, MLflow), plays the ``bot-wave`` scenario through the collector in compressed
real time (:func:`streaming.simulator.live.play`: a simulated day in ``86400 / speed`` seconds, sessions at their
real rhythm, every event stamped with the wall-clock time it is sent), and watches what the platform does by
itself: the lake, the loop runs the sensors start (and why), the policy versions they publish, and the hot path's
decisions under each version. It prints a timeline and writes it to ``<data_dir>/reports/live_demo.json``:

* wave first seen (the first wave event decided) and the first wave event quarantined by what the loop learned (a
  mined rule or the bot model, or the rest of a session one of them caught);
* each loop run: when, which sensor started it, how long it took, its outcome;
* each policy version: when it was registered, its mined rules and their modes;
* per policy version, recall on wave events and sessions and the share of human events quarantined.

Truth comes from the simulator: each played event's id is derived from the run id and the generator's id
(:mod:`streaming.simulator.live`), so the lake's rows are matched to the actor that sent them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warehouse.layout import DataLayout

ADDRESS = re.compile(r"^\s+(collector \(Segment HTTP API\)|serving \(live profile API\)|Dagster UI|MLflow UI|"
                     r"dev write key)\s+(\S+)")
WRITE_KEY = "live-demo-key"


@dataclass
class LiveDemoReport:
    run_id: str
    speed: float
    days: int
    users: int
    started_at: str
    addresses: dict[str, str] = field(default_factory=dict)
    #: seconds since the first wave event → what happened
    timeline: list[tuple[float, str]] = field(default_factory=list)
    wave_first_seen: str | None = None
    first_wave_quarantined: str | None = None
    first_wave_to_quarantined_s: float | None = None
    loop_runs: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    #: per policy version: wave events / quarantined, wave sessions / caught, human events / quarantined
    per_version: list[dict[str, Any]] = field(default_factory=list)
    #: the first policy version that enforced a rule learned from the wave, and its figures
    first_enforcing: dict[str, Any] | None = None
    played: dict[str, Any] = field(default_factory=dict)


def _truth(scenario: Any, days: list[int], run_id: str) -> dict[str, tuple[str, str]]:
    """event id as the live run sends it → (actor kind, session)."""
    from streaming.simulator.live_sessions import session_scripts

    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"firstmile-live:{run_id}")
    out: dict[str, tuple[str, str]] = {}
    for day in days:
        for script in session_scripts(scenario, day):
            kind = script.bot_kind or "human"
            for ev in [*script.events, *script.checkout]:
                out[str(uuid.uuid5(namespace, ev.payload["messageId"]))] = (kind, script.session)
    return out


def _decided(lake: Path) -> list[tuple[str, bool, int | None, datetime | None, bool]]:
    """(event id, quarantined, policy version, received at, by what the loop learned) of every decided event landed
    so far. "What the loop learned": a mined rule or the bot model, or the rest of a session one of them caught."""
    import duckdb

    globs = [str(lake / s / "**" / "*.parquet") for s in ("events", "quarantine", "suppressed")
             if any((lake / s).rglob("*.parquet"))]
    if not globs:
        return []
    con = duckdb.connect()
    try:
        rows = con.execute(
            "select event_id, coalesce(is_bot, false) or filename like '%/quarantine/%', policy_version, received_at, "
            "coalesce(bot_reasons like '%bot.mined%' or bot_reasons like '%model.bot%' "
            "         or (bot_reasons like '%bot.session_quarantined%' and policy_version > 1), false) "
            f"from read_parquet({globs!r}, union_by_name=true, filename=true)").fetchall()
    finally:
        con.close()
    return [(r[0], bool(r[1]), r[2], r[3], bool(r[4])) for r in rows]


def _loop_runs(layout: DataLayout) -> list[dict[str, Any]]:
    import dagster as dg

    if not (layout.dagster_home / "dagster.yaml").exists():
        return []
    try:
        with dg.DagsterInstance.from_config(str(layout.dagster_home)) as instance:
            records = instance.get_run_records(dg.RunsFilter(job_name="loop"))
    except Exception:  # noqa: BLE001 - the daemon may hold the storage mid-write; the next poll reads it
        return []
    out = []
    for r in sorted(records, key=lambda r: r.create_timestamp):
        run = r.dagster_run
        out.append({"run_id": run.run_id[:8], "trigger": run.tags.get("firstmile/trigger", "manual"),
                    "status": run.status.value, "created": r.create_timestamp.timestamp(),
                    "started": r.start_time, "ended": r.end_time,
                    "signal": {k.removeprefix("firstmile/"): v for k, v in run.tags.items()
                               if k.startswith("firstmile/") and k != "firstmile/trigger"}})
    return out


def _policies(layout: DataLayout) -> list[dict[str, Any]]:
    out = []
    for path in sorted(layout.policies.glob("policy-v*.json")):
        doc = json.loads(path.read_text())
        out.append({"version": doc["policy_version"], "registered": path.stat().st_mtime,
                    "mined": [{"id": r["id"], "mode": r.get("mode"), "description": r.get("description")}
                              for r in doc.get("rules", []) if r["id"].startswith("bot.mined")],
                    "bot_model": ((doc.get("models") or {}).get("bot") or {}).get("mode")})
    return out


def _per_version(decided: list[tuple[str, bool, int | None, datetime | None, bool]],
                 truth: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    stats: dict[int, dict[str, Any]] = {}
    for event_id, quarantined, version, _, _ in decided:
        if event_id not in truth or version is None:
            continue
        kind, session = truth[event_id]
        s = stats.setdefault(version, {"policy_version": version, "wave_events": 0, "wave_quarantined": 0,
                                       "wave_sessions": set(), "wave_sessions_caught": set(),
                                       "human_events": 0, "human_quarantined": 0})
        if kind == "wave":
            s["wave_events"] += 1
            s["wave_quarantined"] += quarantined
            s["wave_sessions"].add(session)
            if quarantined:
                s["wave_sessions_caught"].add(session)
        elif kind == "human":
            s["human_events"] += 1
            s["human_quarantined"] += quarantined
    out = []
    for version in sorted(stats):
        s = stats[version]
        waves, caught = len(s.pop("wave_sessions")), len(s.pop("wave_sessions_caught"))
        s.update(wave_sessions=waves, wave_sessions_caught=caught,
                 wave_event_recall=round(s["wave_quarantined"] / s["wave_events"], 4) if s["wave_events"] else None,
                 wave_session_recall=round(caught / waves, 4) if waves else None,
                 human_quarantined_share=round(s["human_quarantined"] / s["human_events"], 5)
                 if s["human_events"] else None)
        out.append(s)
    return out


def _start_platform(data_dir: Path, log: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKER_ADDRESS", "FIRSTMILE_WRITE_KEYS")}
    env["FIRSTMILE_WRITE_KEYS"] = f"{WRITE_KEY}:web"
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "--data-dir", str(data_dir), "up",
                             "--workers", "1", "--collector-port", "0", "--serving-port", "0", "--dagster-port", "0",
                             "--mlflow-port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        with log.open("a") as fh:
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                match = ADDRESS.match(line)
                if match:
                    found[match.group(1)] = match.group(2)
                if line.startswith("Ctrl-C stops everything"):
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 300
    while not ready.wait(0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"firstmile up did not come up (exit {proc.returncode}); see {log}")
    return proc, found


def _dagster_daemon_ready(url: str, timeout: float = 180) -> None:
    """Wait until the Dagster webserver answers (its daemon then evaluates the sensors every 30 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"the Dagster UI at {url} did not answer within {timeout:.0f}s")


def run_live_demo(data_dir: Path, *, users: int = 150, days: int = 3, speed: float = 288.0, tail_s: float = 240.0,
                  keep: bool = False, echo: Callable[[str], None] = print) -> LiveDemoReport:
    """Start the platform, play the bot wave live, watch the loop learn it; return (and write) the timeline."""
    from streaming.simulator import load_scenario
    from streaming.simulator.live import LiveTarget, Pace, new_run_id, play

    data_dir = data_dir.resolve()
    if data_dir.exists() and not keep:
        shutil.rmtree(data_dir)
    layout = DataLayout(data_dir).ensure()
    scenario = load_scenario("bot-wave", users=users, days=days, bot_wave_day=0,
                             start_date="today")
    run_id = new_run_id()
    report = LiveDemoReport(run_id=run_id, speed=speed, days=days, users=users,
                            started_at=datetime.now(UTC).isoformat())
    truth = _truth(scenario, list(range(days)), run_id)
    echo(f"starting firstmile up in {data_dir} (log: {layout.reports / 'live_demo_platform.log'}) …")
    layout.reports.mkdir(parents=True, exist_ok=True)
    proc, addresses = _start_platform(data_dir, layout.reports / "live_demo_platform.log")
    report.addresses = addresses
    try:
        _dagster_daemon_ready(addresses["Dagster UI"])
        echo(f"platform up: collector {addresses['collector (Segment HTTP API)']}, Dagster "
             f"{addresses['Dagster UI']}, MLflow {addresses['MLflow UI']}")
        echo(f"playing bot-wave live: {users} users, {days} day(s), a simulated day every {86400 / speed:.0f}s; "
             "the wave (hoarder-v2) starts on day 0")
        target = LiveTarget(addresses["collector (Segment HTTP API)"], WRITE_KEY)
        result: dict[str, Any] = {}

        def player() -> None:
            try:
                # the day runs `speed` times faster; inside a session the visitors (and the wave) keep their real
                # rhythm, which the hot path judges: a compressed session would be a flood, caught by bot.rate_flood
                result["run"] = play(scenario, target, pace=Pace(speed=speed, session_speed=1.0, concurrency=512),
                                     run_id=run_id)
            except Exception as exc:  # noqa: BLE001 - reported below, the watcher stops
                result["error"] = exc

        thread = threading.Thread(target=player, daemon=True)
        thread.start()
        done_at: float | None = None
        seen_versions: set[int] = set()
        seen_runs: dict[str, str] = {}
        first_wave: float | None = None
        first_caught: float | None = None
        while True:
            time.sleep(5)
            decided = _decided(layout.lake)
            wave = [(r, learned) for e, _, _, r, learned in decided
                    if truth.get(e, ("",))[0] == "wave" and r is not None]
            if wave and first_wave is None:
                first_wave = min(r for r, _ in wave).timestamp()
                report.wave_first_seen = datetime.fromtimestamp(first_wave, UTC).isoformat()
                echo(f"[{_clock(first_wave)}] wave first seen")
            caught = [r for r, q in wave if q]
            if caught and first_caught is None:
                first_caught = min(caught).timestamp()
                report.first_wave_quarantined = datetime.fromtimestamp(first_caught, UTC).isoformat()
                echo(f"[{_clock(first_caught)}] first wave event quarantined by what the loop learned")
            for run in _loop_runs(layout):
                if seen_runs.get(run["run_id"]) != run["status"]:
                    seen_runs[run["run_id"]] = run["status"]
                    echo(f"[{_clock(time.time())}] loop run {run['run_id']} ({run['trigger']}): {run['status']}")
            for policy in _policies(layout):
                if policy["version"] not in seen_versions:
                    seen_versions.add(policy["version"])
                    modes = ", ".join(f"{m['id']} {m['mode']}" for m in policy["mined"]) or "no mined rule"
                    echo(f"[{_clock(policy['registered'])}] policy v{policy['version']} registered: {modes}")
            if not thread.is_alive() and done_at is None:
                done_at = time.monotonic()
                echo(f"[{_clock(time.time())}] traffic played; watching {tail_s:.0f}s more")
            if done_at is not None and time.monotonic() - done_at > tail_s:
                break
        if "error" in result:
            raise result["error"]
        played = result["run"]
        report.played = played.summary()
        report.loop_runs = _loop_runs(layout)
        report.policies = _policies(layout)
        report.per_version = _per_version(_decided(layout.lake), truth)
        if first_wave is not None:
            origin = first_wave
            if first_caught is not None:
                report.first_wave_to_quarantined_s = round(first_caught - first_wave, 1)
            report.timeline = sorted(
                [(0.0, "wave first seen")]
                + ([(round(first_caught - origin, 1), "first wave event quarantined by what the loop learned")]
                   if first_caught else [])
                + [(round((r["started"] or r["created"]) - origin, 1),
                    f"loop run {r['run_id']} started ({r['trigger']}), {r['status']}"
                    + (f", {r['ended'] - r['started']:.0f}s" if r["ended"] and r["started"] else ""))
                   for r in report.loop_runs]
                + [(round(p["registered"] - origin, 1),
                    f"policy v{p['version']}: " + (", ".join(f"{m['id']} {m['mode']}" for m in p["mined"])
                                                  or "no mined rule"))
                   for p in report.policies])
        enforcing = [p["version"] for p in report.policies if any(m["mode"] == "enforce" for m in p["mined"])]
        if enforcing:
            first = min(enforcing)
            report.first_enforcing = next((v for v in report.per_version if v["policy_version"] == first),
                                          {"policy_version": first, "note": "no event was decided by it"})
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    (layout.reports / "live_demo.json").write_text(json.dumps(asdict(report), indent=1, default=str))
    echo(render(report))
    return report


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def render(report: LiveDemoReport) -> str:
    lines = ["", f"firstmile demo --live: the bot wave, as the running platform learned it (run {report.run_id})",
             "  timeline (seconds after the first wave event):"]
    lines += [f"    {t:>8.1f}s  {what}" for t, what in report.timeline]
    if report.first_wave_to_quarantined_s is not None:
        lines.append("  first wave event → first wave event quarantined by what the loop learned: "
                     f"{report.first_wave_to_quarantined_s:.0f}s")
    else:
        lines.append("  no wave event was quarantined by what the loop learned in this run")
    lines.append("  per policy version (events decided by it):")
    for v in report.per_version:
        lines.append(f"    v{v['policy_version']}: wave events {v['wave_quarantined']}/{v['wave_events']} "
                     f"(recall {v['wave_event_recall']}), wave sessions {v['wave_sessions_caught']}/"
                     f"{v['wave_sessions']} (recall {v['wave_session_recall']}), humans quarantined "
                     f"{v['human_quarantined']}/{v['human_events']} ({v['human_quarantined_share']})")
    if report.first_enforcing:
        lines.append(f"  first policy enforcing a mined rule: v{report.first_enforcing['policy_version']}")
    return "\n".join(lines)
