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
#: In-session serving rows (from a live run of the simulator): key → label; first mile beside batch only.
LIVE_METRICS = {
    "reads_with_action": "in-session reads answered with an action (humans)",
    "sessions_shown_action": "human sessions shown an action",
    "sessions_shown_same_session_decision": "human sessions shown an action decided in the same session",
    "conversions_shown": "conversions in checkout sessions the first mile showed an action",
    "conversions_all": "conversions, all checkout sessions",
}
LIVE_WIDTH = max(len(v) for v in LIVE_METRICS.values()) + 2
LIVE_BATCH_HOW = ("batch only, in-session: the website reads a profile store that the nightly run rebuilds at each "
                  "simulated UTC midnight with the same segment rules over the same events, so a session is shown "
                  "only the action its person held at the last midnight before it started (the last action the "
                  "first mile served them before that midnight; none on the first simulated day): it can act in "
                  "the next session, never in this one. Conversions use the same visitors, the same baseline "
                  "probabilities and the same draws (streaming/simulator/response.py), so the columns differ only "
                  "by what was shown; that is generous to the batch, whose action decided on yesterday's behaviour "
                  "counts as fully relevant today.")
LIVE_NOT_RUN = ("no live run recorded in {where}: run `python -m streaming.simulator --live ...` against the "
                "platform (README: the live mode) to measure decisions served in-session")


@dataclass
class InSessionServing:
    """What a live run of the simulator recorded (``<data_dir>/live/<run>/``): the website's in-session reads of the
    profile API and how visitors responded. ``metrics[key][path]`` as in :class:`LatencyImpact`; distributions are
    ``{"p50", "p95", "p99"}`` in milliseconds."""

    run_dir: str
    run_id: str
    status: str
    scenario: str
    pace: dict[str, Any]
    metrics: dict[str, dict[str, int | None]] = field(default_factory=dict)
    denominators: dict[str, int] = field(default_factory=dict)
    #: reads by humans / by bots (truth), answered 200, stale, not found
    reads: dict[str, int] = field(default_factory=dict)
    #: collector 200 → the answer reflecting the event (non-stale human reads)
    freshness_ms: dict[str, float | None] = field(default_factory=dict)
    #: the API's staleness_ms on non-stale human reads
    staleness_ms: dict[str, float | None] = field(default_factory=dict)
    #: the collector's round trip for the events the reads followed
    collect_ms: dict[str, float | None] = field(default_factory=dict)
    stale_share: float | None = None
    bot_stale_share: float | None = None

    def to_text(self) -> list[str]:
        width = LIVE_WIDTH
        lines = [f"in-session serving — live run {self.run_id} ({self.status}, scenario {self.scenario}, "
                 f"{self.pace.get('speed')}x day, {self.pace.get('session_speed')}x sessions)"]
        for key, label in LIVE_METRICS.items():
            row = self.metrics.get(key, {})
            lines.append(f"{label:<{width}}{count(row.get('first_mile')):>12}{count(row.get('batch_only')):>12}")
        lines.append(f"{'':<{width}}{'p50':>8}{'p95':>8}{'p99':>8}")
        for label, dist in self.distributions():
            lines.append(f"{label:<{width}}" + "".join(f"{ms(dist.get(q)):>8}" for q in ("p50", "p95", "p99")))
        lines += textwrap.wrap(self.notes(), LIVE_WIDTH + 24)
        return lines

    def distributions(self) -> list[tuple[str, dict[str, float | None]]]:
        """The served freshness rows (ms), as the text and the HTML show them."""
        return [("read-your-writes round trip: collector 200 → fresh answer (ms)", self.freshness_ms),
                ("staleness_ms of the fresh answers", self.staleness_ms),
                ("collector round trip of the events read after (ms)", self.collect_ms)]

    def notes(self) -> str:
        """Denominators and the stale reads explained, in one parenthesis."""
        r, d = self.reads, self.denominators
        return (f"({r.get('human', 0)} reads by humans, {share(self.stale_share)} stale; {r.get('bot', 0)} by bots, "
                f"{share(self.bot_stale_share)} stale: a quarantined event never reaches the profile, so a read "
                f"after it waits out its bound; {r.get('not_found', 0)} not found. {d.get('human_sessions', 0)} human "
                f"sessions, {d.get('checkout_sessions', 0)} reached a checkout decision, "
                f"{d.get('checkout_sessions_shown', 0)} of them shown an action; shown nothing, the same visitors "
                f"would have converted {d.get('conversions_nothing_shown', 0)} times "
                f"({d.get('conversions_shown_nothing_shown', 0)} in the sessions shown an action).)")


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
    #: the latest live run's in-session serving (``None``: no run; ``live_unavailable`` says why)
    live: InSessionServing | None = None
    live_unavailable: str = ""

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
        lines.append("")
        if self.live is None:
            lines.append("in-session serving (live run)")
            for label in LIVE_METRICS.values():
                lines.append(f"{label:<{LIVE_WIDTH}}{'n/a':>12}{'n/a':>12}")
            lines += textwrap.wrap(f"(n/a: {self.live_unavailable})", LIVE_WIDTH + 24)
        else:
            lines += self.live.to_text()
            lines += textwrap.wrap(LIVE_BATCH_HOW, LIVE_WIDTH + 24)
        return "\n".join(lines)

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{k}_{p}": v for k, row in self.metrics.items() for p, v in row.items()}
        out.update({f"bot_pattern_enforcement_s_{p}": v for p, v in self.enforcement_s.items()})
        return out


def hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h"


def count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
