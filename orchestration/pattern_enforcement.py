"""How long a new bot pattern ran before each architecture enforced a rule against it, for the latency-impact report.

A pattern is the events a bot rule the first mile's loop learned matches (the rule's condition over the catalog's
facts). First mile: first appearance → the first event decided by the policy version that enforced the rule.
Batch only: first appearance → the first replayed nightly run whose own learned rules catch at least half of the
pattern (:meth:`orchestration.nightly_batch.NightlyBatch.enforcement`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestration.decided_events import holds
from orchestration.nightly_batch import NightlyBatch, bot_reasons
from streaming.policy import compile_policy


@dataclass
class PatternTimes:
    #: one row per learned rule: when it was first seen, enforced by each path, and how much the batch catches
    rules: list[dict[str, Any]] = field(default_factory=list)
    #: path → the shortest first appearance → enforced, in seconds (``None``: not enforced in the data)
    enforcement_s: dict[str, float | None] = field(default_factory=dict)
    #: batch only, when no replayed nightly run enforced it: enforced no sooner than this many seconds
    enforcement_after_s: float | None = None


def learned_rules(policies: Mapping[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Enforced bot rules that a later policy added to the bootstrap (version 1): the patterns the loop learned,
    rule id → the version that first enforced it and its compiled condition."""
    known = {r["id"] for r in policies[1]["rules"]}
    out: dict[str, dict[str, Any]] = {}
    for version in sorted(policies):
        for rule in compile_policy(policies[version]).bot_rules:
            if rule.id not in known and rule.mode == "enforce" and rule.id not in out:
                out[rule.id] = {"version": version, "predicate": rule.predicate}
    return out


def pattern_times(rows: Sequence[Mapping[str, Any]], policies: Mapping[int, dict[str, Any]],
                  batch: NightlyBatch) -> PatternTimes:
    """Every learned rule's pattern over ``rows`` (stg_decided in time order, with their catalog facts)."""
    learned = learned_rules(policies)
    adoption: dict[int, datetime] = {}           # first event decided by each policy version (event time)
    first_match: dict[str, datetime] = {}
    pattern: dict[str, list[dict[str, Any]]] = {rule_id: [] for rule_id in learned}
    quarantined_by: dict[str, datetime] = {}
    for r in rows:
        ts: datetime = r["event_ts"]
        if r.get("policy_version") is not None:
            adoption.setdefault(int(r["policy_version"]), ts)
        for rule_id, info in learned.items():
            if holds(info["predicate"], r):
                first_match.setdefault(rule_id, ts)
                pattern[rule_id].append(r["facts"])
        if r["stream"] == "quarantine":
            for rule_id in bot_reasons(r.get("bot_reasons")):
                if rule_id in learned:
                    quarantined_by.setdefault(rule_id, ts)
    out = PatternTimes()
    bounds = []
    for rule_id, info in learned.items():
        first, fm = first_match.get(rule_id), adoption.get(info["version"])
        bo, after, cover = batch.enforcement(pattern[rule_id])
        out.rules.append({
            "rule": rule_id, "policy_version": info["version"], "first_seen": _iso(first),
            "first_mile_enforced": _iso(fm), "first_quarantined": _iso(quarantined_by.get(rule_id)),
            "batch_enforced": _iso(bo) if bo else (f"after {_iso(after)}" if after else None),
            "batch_coverage": round(cover, 3), "pattern_events": len(pattern[rule_id]),
            # enforced before it first appeared = 0 s
            "first_mile_s": max((fm - first).total_seconds(), 0.0) if first and fm else None,
            "batch_s": max((bo - first).total_seconds(), 0.0) if first and bo else None})
        if first and fm and bo is None and after is not None:
            bounds.append(max((after - first).total_seconds(), 0.0))
    enforced = [r for r in out.rules if r["first_mile_s"] is not None]
    out.enforcement_s = {
        "first_mile": min((r["first_mile_s"] for r in enforced), default=None),
        "batch_only": min((r["batch_s"] for r in enforced if r["batch_s"] is not None), default=None)}
    if out.enforcement_s["batch_only"] is None and bounds:
        out.enforcement_after_s = min(bounds)
    return out


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()
