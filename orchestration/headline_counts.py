"""The latency-impact report's headline counts, first mile beside batch only, from what each path delivered.

First mile: the deliveries it made (``stg_deliveries``) and the decisions in its ledgers. Batch only: the deliveries
:func:`orchestration.batch_only.batch_deliveries` simulates, and in-session decisions taken at the next nightly run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestration.consent_checks import after_revocation, without_consent
from orchestration.latency_impact import ANALYTICS, MARKETING, METRICS, PATHS, SALES
from orchestration.session_moments import SessionMoments, in_session_after_midnight, next_midnight


@dataclass
class HeadlineCounts:
    metrics: dict[str, dict[str, int | None]] = field(default_factory=dict)
    denominators: dict[str, int] = field(default_factory=dict)
    sales_delay_s: dict[str, list[float]] = field(default_factory=dict)
    #: (hour, bot events reaching analytics on the first mile, on the batch-only path)
    bots_per_hour: list[tuple[str, int, int]] = field(default_factory=list)


def headline_counts(rows: Sequence[Mapping[str, Any]], *, delivered: Mapping[str, Mapping[str, set[str]]],
                    purpose_of: Mapping[str, tuple[str, ...]], revoked: Mapping[str, set[str]],
                    consent: Mapping[str, dict[str, bool]] | None,
                    sessions: Mapping[str, SessionMoments]) -> HeadlineCounts:
    """``delivered[path][destination]``: the event ids each path delivered there; ``revoked``: event id → purposes
    revoked before it; ``consent``: event id → purposes granted when it was sent (``None``: not recomputable)."""
    out = HeadlineCounts(metrics={k: {p: 0 for p in PATHS} for k in METRICS})
    out.metrics["deliveries_after_revocation"] = {
        p: after_revocation(delivered[p], revoked, purpose_of) for p in PATHS}
    out.metrics["deliveries_without_consent"] = {
        p: None if consent is None else without_consent(delivered[p], consent, purpose_of) for p in PATHS}
    bots = {r["event_id"] for r in rows if r["is_bot_label"]}
    for key, destination in (("bot_events_to_analytics", ANALYTICS), ("bot_events_to_marketing", MARKETING)):
        out.metrics[key] = {p: len(bots & delivered[p].get(destination, set())) for p in PATHS}

    # personalization: the first mile decided in the session; the batch decision arrives at the next midnight
    decided = [s for s in sessions.values() if s.decided_at is not None]
    out.metrics["sessions_personalized_in_session"] = {
        "first_mile": len(decided), "batch_only": sum(in_session_after_midnight(s.decided_at, s) for s in decided)}
    # sales: sessions whose cart or order met the sales route, with sales consent at that moment
    qualified = [s for s in sessions.values() if s.high_value_at is not None]
    to_sales = delivered["first_mile"].get(SALES, set())
    out.metrics["high_value_sessions_to_sales_in_session"] = {
        "first_mile": len({r["session_id"] for r in rows if r["event_id"] in to_sales and not r["is_bot_label"]}),
        "batch_only": sum(s.sales_ok and in_session_after_midnight(s.high_value_at, s) for s in qualified)}
    out.sales_delay_s = {
        "first_mile": [0.0 for s in qualified if s.sales_ok],
        "batch_only": [(next_midnight(s.high_value_at) - s.high_value_at).total_seconds()
                       for s in qualified if s.sales_ok and s.high_value_at is not None]}
    out.denominators = {"sessions": len(sessions), "personalizable_sessions": len(decided),
                        "high_value_sessions": len(qualified),
                        "high_value_sessions_with_sales_consent": sum(s.sales_ok for s in qualified),
                        "bot_events": len(bots)}
    out.bots_per_hour = _bots_per_hour(rows, bots, delivered)
    return out


def _bots_per_hour(rows: Sequence[Mapping[str, Any]], bots: set[str],
                   delivered: Mapping[str, Mapping[str, set[str]]]) -> list[tuple[str, int, int]]:
    """Bot events reaching analytics per hour of event time, both paths (for the plot)."""
    per_hour: dict[str, list[int]] = {}
    for r in rows:
        if r["event_id"] not in bots:
            continue
        cell = per_hour.setdefault(r["event_ts"].strftime("%Y-%m-%d %H:00"), [0, 0])
        for i, path in enumerate(PATHS):
            cell[i] += r["event_id"] in delivered[path].get(ANALYTICS, set())
    return [(hour, fm, bo) for hour, (fm, bo) in sorted(per_hour.items())]
