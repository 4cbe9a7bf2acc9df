"""What a live run recorded: every played session (:class:`PlayedSession`) and in-session read (:class:`ServedRead`),
written as ``run.json``, ``sessions.jsonl`` and ``reads.jsonl`` under ``<data_dir>/live/<run id>/``, where the
latency-impact report reads the newest run.

Part of :mod:`streaming.simulator` (the live mode: :mod:`streaming.simulator.live`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from streaming.simulator.scenario import SimulatorError

#: Where live runs go under the data directory; the report reads the newest one from there.
LIVE_DIR = "live"
RUN_FILE, SESSIONS_FILE, READS_FILE = "run.json", "sessions.jsonl", "reads.jsonl"


@dataclass
class ServedRead:
    """One in-session read: what the website asked after an event and what the API answered."""

    run_id: str
    session: str
    actor_id: str
    actor: str
    bot_kind: str | None
    intent: str | None
    anonymous_id: str | None
    day: int
    sim_at: str  # the event's simulated send time
    sent_at: str  # the wall-clock time the event was sent (its timestamp)
    event: str
    event_id: str
    token: str
    status: int  # the API's answer (200, 404 no profile yet, 503 catching up; 0 unreachable)
    stale: bool | None
    segment: str | None
    action: str | None
    withheld: list[str]
    staleness_ms: float | None  # the API's: now - when the serving process applied the profile
    freshness_ms: float  # the collector's 200 → this answer: the read-your-writes round trip, queueing included
    read_ms: float  # the GET alone
    collect_ms: float  # the collector's POST round trip
    policy_version: int | None
    converted_after: bool | None = None  # the visitor converted after this read (None: no checkout decision)


@dataclass
class PlayedSession:
    """One session as played: when, how much, what it was shown, and its checkout decision with the baseline's."""

    run_id: str
    session: str
    actor_id: str
    actor: str
    bot_kind: str | None
    intent: str | None
    anonymous_id: str | None
    day: int
    sim_start: str
    wall_start: str
    start_lag_ms: float
    duration_ms: float
    events_sent: int
    reads: int
    shown: list[str]  # distinct actions shown in the session, in order
    decision: bool  # reached a checkout decision (built a cart)
    p_baseline: float | None
    draw: float | None
    offer_uplift: float
    response_action: str | None  # the action that counted at the decision
    p_response: float | None
    converted: bool | None
    baseline_converted: bool | None  # the same draw with nothing shown


@dataclass
class LiveRun:
    """A played run: its sessions and reads, and how it was played (never the keys)."""

    run_id: str
    scenario: str
    seed: int
    days: list[int]
    started_at: str
    finished_at: str = ""
    status: str = "running"  # complete | interrupted
    pace: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    sessions: list[PlayedSession] = field(default_factory=list)
    reads: list[ServedRead] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts and percentiles for a line of text (the report computes its own rows from the files)."""
        humans = [s for s in self.sessions if s.actor == "human"]
        answered = [r for r in self.reads if r.status == 200]
        fresh = [r for r in answered if not r.stale]
        decided = [s for s in humans if s.decision]
        shown = [s for s in decided if s.response_action]
        return {
            "run_id": self.run_id, "status": self.status, "sessions": len(self.sessions), "human_sessions": len(humans),
            "events_sent": sum(s.events_sent for s in self.sessions), "reads": len(self.reads),
            "reads_answered": len(answered), "reads_fresh": len(fresh),
            "reads_fresh_with_action": sum(1 for r in fresh if r.action),
            "stale_share": round(1 - len(fresh) / len(answered), 4) if answered else None,
            "freshness_ms": percentiles([r.freshness_ms for r in fresh]),
            "staleness_ms": percentiles([r.staleness_ms for r in answered if r.staleness_ms is not None]),
            "checkout_decisions": len(decided), "decisions_shown_an_action": len(shown),
            "conversions": sum(1 for s in decided if s.converted),
            "conversions_baseline": sum(1 for s in decided if s.baseline_converted),
            "conversions_shown": sum(1 for s in shown if s.converted),
            "conversions_shown_baseline": sum(1 for s in shown if s.baseline_converted),
        }

    def write(self, run_dir: Path) -> Path:
        """``run.json`` (how it was played, the summary), ``sessions.jsonl``, ``reads.jsonl``. Returns ``run_dir``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(self).items() if k not in ("sessions", "reads")}
        meta["summary"] = self.summary()
        _write_jsonl(run_dir / SESSIONS_FILE, (asdict(s) for s in self.sessions))
        _write_jsonl(run_dir / READS_FILE, (asdict(r) for r in self.reads))
        (run_dir / RUN_FILE).write_text(json.dumps(meta, indent=1))  # last: a run.json means the files are whole
        return run_dir


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")


def read_run(run_dir: Path) -> LiveRun:
    """A run written by :meth:`LiveRun.write`. Raises :class:`SimulatorError` naming the file at fault."""
    try:
        meta = json.loads((run_dir / RUN_FILE).read_text())
        meta.pop("summary", None)
        run = LiveRun(**meta)
        session_fields = {f.name for f in fields(PlayedSession)}
        read_fields = {f.name for f in fields(ServedRead)}
        with (run_dir / SESSIONS_FILE).open("rb") as fh:
            run.sessions = [PlayedSession(**{k: v for k, v in orjson.loads(line).items() if k in session_fields})
                            for line in fh if line.strip()]
        with (run_dir / READS_FILE).open("rb") as fh:
            run.reads = [ServedRead(**{k: v for k, v in orjson.loads(line).items() if k in read_fields})
                         for line in fh if line.strip()]
    except (OSError, ValueError, TypeError) as exc:
        raise SimulatorError(f"live run {run_dir}: unreadable ({exc})") from exc
    return run


def live_dir(data_root: Path) -> Path:
    """Where live runs are written under a data directory (``<data_dir>/live``)."""
    return data_root / LIVE_DIR


def latest_run_dir(data_root: Path) -> Path | None:
    """The newest complete run directory under ``<data_dir>/live`` (by its start time), or None."""
    runs = []
    for meta in live_dir(data_root).glob(f"*/{RUN_FILE}"):
        try:
            runs.append((json.loads(meta.read_text()).get("started_at", ""), meta.parent))
        except (OSError, ValueError):
            continue
    return max(runs)[1] if runs else None


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles ``{"p50": ..., ...}`` (None when there are no values)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        if not ordered:
            out[f"p{q}"] = None
            continue
        rank = max(1, -(-q * len(ordered) // 100))  # ceil(q/100 * n)
        out[f"p{q}"] = round(ordered[rank - 1], 1)
    return out
