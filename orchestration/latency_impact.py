"""The latency-impact report's figures and its text summary: :class:`LatencyImpact` (computed by
:func:`orchestration.report.compute`, rendered as HTML by :mod:`orchestration.report_html`)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

ANALYTICS, MARKETING, SALES = "dest.warehouse", "dest.marketing", "dest.sales"
PATHS = ("first_mile", "batch_only")
#: Headline rows: key → label. Lower is better for the first four, higher for the last two.
METRICS = {
    "deliveries_without_consent": "deliveries without consent (recomputed from the inputs)",
    "deliveries_after_revocation": "events delivered after a consent revocation",
    "bot_events_to_analytics": "bot events that reached analytics (dest.warehouse)",
    "bot_events_to_marketing": "bot events that reached marketing (dest.marketing)",
    "sessions_personalized_in_session": "sessions with an in-session personalization decision",
    "high_value_sessions_to_sales_in_session": "high-value sessions routed to sales within the session",
}
PATTERN_ROW = "new bot pattern: first appearance → enforced"
CONSENT_FROM_TRUTH = ("consent recomputed with streaming.consent from the consent each person had given when the "
                      "event was sent (the simulator's truth) and the region default of the event's country — not "
                      "from the hot path's stamp")
CONSENT_NOT_RECOMPUTED = ("consent NOT recomputed (no truth.parquet; the lake keeps neither TCF strings nor consent "
                          "events' purposes): 'deliveries without consent' is n/a and revocations are read from the "
                          "hot path's own consent stamps")
BATCH_PATTERN_HOW = ("new bot pattern, batch only: the loop's learner (ml.bot_rules mining, ml.candidate adoption "
                     "and gate) re-run at each UTC midnight on the warehouse's training set before it; a pattern "
                     "is enforced from the first run whose learned rules catch half of its events (runs take no "
                     "time). First mile: the first event decided by the policy version that enforced it.")
SOURCE = ("decided events as the warehouse keeps them: stg_decided (one row per event id and device; a reused id "
          "counts once for each device) and stg_deliveries; rules and routes read the fact catalog's SQL")


@dataclass
class LatencyImpact:
    """The report's numbers. ``metrics[key][path]`` (``None``: not computable from these inputs); times in seconds
    (``None``: did not happen in the data)."""

    metrics: dict[str, dict[str, int | None]] = field(default_factory=dict)
    denominators: dict[str, int] = field(default_factory=dict)
    enforcement_s: dict[str, float | None] = field(default_factory=dict)
    #: batch only, when no replayed nightly run enforced the pattern: it was enforced no sooner than this
    enforcement_after_s: float | None = None
    learned_rules: list[dict[str, Any]] = field(default_factory=list)
    sales_delay_s: dict[str, list[float]] = field(default_factory=dict)
    bots_per_hour: list[tuple[str, int, int]] = field(default_factory=list)
    labels: str = ""
    consent_source: str = ""
    #: how the batch-only pattern time was measured: one line per replayed (or skipped) nightly run
    nightly: list[str] = field(default_factory=list)
    events: int = 0
    days: list[str] = field(default_factory=list)
    #: decided-stream files of the landing zone the warehouse had not built yet (``None``: not checked)
    lake_files_pending: int | None = None

    def batch_pattern_time(self) -> str:
        bo = self.enforcement_s.get("batch_only")
        if bo is None and self.enforcement_after_s is not None:
            return f"> {hours(self.enforcement_after_s)}"
        return hours(bo)

    def coverage_note(self) -> str:
        """What the numbers cover: the warehouse's decided events, and whether the lake held more."""
        if not self.lake_files_pending:
            return SOURCE
        return (f"{SOURCE}. INCOMPLETE: the warehouse had not built {self.lake_files_pending} landing-zone file(s) "
                f"of decided events yet; rebuild stg_decided (dbt build) for the whole traffic")

    def to_text(self) -> str:
        width = max(len(v) for v in METRICS.values()) + 2
        lines = ["", "latency impact — first mile vs batch-only (decisions at the next nightly run)",
                 "=" * (width + 24), f"{'':<{width}}{'first mile':>12}{'batch only':>12}"]
        for key, label in METRICS.items():
            row = self.metrics.get(key, {})
            lines.append(f"{label:<{width}}{count(row.get('first_mile')):>12}{count(row.get('batch_only')):>12}")
        fm = self.enforcement_s.get("first_mile")
        lines.append(f"{PATTERN_ROW:<{width}}{hours(fm):>12}{self.batch_pattern_time():>12}")
        lines.append(f"({self.events} events over {', '.join(self.days)}; bots from {self.labels}; "
                     f"high-value sessions: {self.denominators.get('high_value_sessions', 0)}, "
                     f"personalization-eligible sessions: {self.denominators.get('personalizable_sessions', 0)})")
        lines.append(f"({self.consent_source})")
        lines.append(f"({self.coverage_note()})")
        lines += textwrap.wrap(BATCH_PATTERN_HOW, width + 24)
        lines += [f"  - {note}" for note in self.nightly]
        return "\n".join(lines)

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{k}_{p}": v for k, row in self.metrics.items() for p, v in row.items()}
        out.update({f"bot_pattern_enforcement_s_{p}": v for p, v in self.enforcement_s.items()})
        return out


def hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h"


def count(value: int | None) -> str:
    return "n/a" if value is None else str(value)
