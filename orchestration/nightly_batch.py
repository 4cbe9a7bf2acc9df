"""The batch-only platform's nightly runs, replayed over the traffic in the lake (for the latency-impact report).

The learning is :mod:`ml.nightly` (the loop's own miner, candidate and gate, run at each UTC midnight on the
warehouse's training set before it). This module only decides which midnights can be replayed honestly — those
before which the warehouse's training set holds every archived event (``events`` and ``quarantine``) of the lake —
and turns the runs into what the report needs: the rules the batch filters the flow with, from which midnight, and
when it first enforces a pattern the first mile learned. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ml.nightly import NightlyRun, coverage, first_enforcing_run, midnights, simulate_nightly
from streaming.policy import compile_policy
from streaming.scoring import SESSION_QUARANTINED

#: A nightly run "found" a pattern when the rules it enforces catch at least this share of the pattern's events.
MIN_COVERAGE = 0.5


@dataclass
class NightlyBatch:
    runs: list[NightlyRun] = field(default_factory=list)
    #: midnights the replay could not run (the warehouse's training set lacks events before them)
    skipped: list[datetime] = field(default_factory=list)
    #: why the replay did not run at all (no warehouse, no training set), else ""
    unavailable: str = ""
    notes: list[str] = field(default_factory=list)

    def active_rules(self) -> list[tuple[datetime, str, Any]]:
        """(from midnight, rule id, predicate) of every rule the batch's nightly runs enforce."""
        out: list[tuple[datetime, str, Any]] = []
        seen: set[str] = set()
        for run in self.runs:
            for rule in compile_policy(run.policy).bot_rules:
                if rule.id in run.enforced and rule.id not in seen:
                    seen.add(rule.id)
                    out.append((run.midnight, rule.id, rule.predicate))
        return out

    def enforcement(self, pattern: Sequence[Mapping[str, Any]]) -> tuple[datetime | None, datetime | None, float]:
        """For a pattern's events (their facts): the midnight the batch first enforces it (``None`` if no replayed
        run does), a lower bound otherwise (the night after the last replayed one; ``None`` without a replay), and
        the coverage of the run that enforced it."""
        run = first_enforcing_run(self.runs, pattern, min_coverage=MIN_COVERAGE)
        if run is not None:
            return run.midnight, None, coverage(run, pattern)
        return None, (self.runs[-1].midnight + timedelta(days=1)) if self.runs else None, 0.0


def _training_frame(duckdb_path: Path) -> tuple[Any, str]:
    from ml.datasets import load_training_events

    try:
        return load_training_events(duckdb_path), ""
    except (FileNotFoundError, ValueError, duckdb.Error) as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def replay(rows: Sequence[Mapping[str, Any]], duckdb_path: Path, base_policy: dict[str, Any]) -> NightlyBatch:
    """Replay the nightly runs over ``rows`` (the report's decided events: ``stg_decided`` in time order, with
    ``stream``, ``event_id``, ``event_ts``, ``bot_reasons``) using the warehouse's training set at ``duckdb_path``
    (``training_events``, keyed by the same event ids as stg_decided)."""
    out = NightlyBatch()
    frame, why = _training_frame(duckdb_path)
    if frame is None:
        out.unavailable = f"no training set to replay the nightly runs on ({why})"
        return out
    if not rows:
        out.unavailable = "no decided events"
        return out
    trained = set(frame["event_id"].to_list())
    # the replay is honest up to the first archived event the warehouse has not seen
    missing = next((r["event_ts"] for r in rows if r["stream"] in ("events", "quarantine")
                    and r["event_id"] not in trained), None)
    nights = midnights(rows[0]["event_ts"], rows[-1]["event_ts"])
    out.skipped = [m for m in nights if missing is not None and m > missing]
    nights = [m for m in nights if m not in out.skipped]
    # The session verdict (bot.session_quarantined) counts as the batch's too: generous to the batch (a CDP's
    # collection filter is stateless), so the comparison never credits the first mile with it.
    base_ids = {r["id"] for r in base_policy["rules"]} | {SESSION_QUARANTINED}
    first_mile_only = {r["event_id"] for r in rows if r["stream"] == "quarantine"
                       and (reasons := bot_reasons(r.get("bot_reasons"))) and not set(reasons) & base_ids}
    out.runs = simulate_nightly(frame, nights, base_policy=base_policy, first_mile_only=first_mile_only)
    for run in out.runs:
        found = "; ".join(f"{rid} ({_describe(when)})" for rid, when in run.enforced.items()) or "none"
        outcome = (("candidate adopted" if run.gate_passed else "candidate adopted (it adds shadow rules only)")
                   if run.adopted else "champion kept (" + "; ".join(run.gate_reasons) + ")")
        out.notes.append(f"nightly run {_at(run.midnight)}: learned from {run.rows:,} events before it; "
                         f"{outcome}; learned rules enforced from then on: {found}")
    for night in out.skipped:
        out.notes.append(f"nightly run {_at(night)}: not replayed — the warehouse's training set lacks events "
                         f"before it (first missing at {_at(missing)}: the loop had not run on them); no rule is "
                         f"assumed learned there")
    return out


def bot_reasons(value: Any) -> list[str]:
    """The rule ids a quarantined event's ``bot_reasons`` names (JSON text or a list)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        doc = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return []
    return [str(v) for v in doc] if isinstance(doc, list) else []


def _at(ts: datetime | None) -> str:
    return "?" if ts is None else ts.strftime("%Y-%m-%d %H:%M UTC")


def _describe(when: Mapping[str, Any]) -> str:
    parts = when.get("and", [when])
    return " and ".join(f"{c[op][0]['var']} {op} {c[op][1]}" for c in parts for op in c
                        if isinstance(c[op], list) and isinstance(c[op][0], dict)) or json.dumps(when)
