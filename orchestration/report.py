"""The latency-impact report: on the same traffic, what the first mile did vs what a batch-only architecture would
have done. Pure: reads the landing zone (and the simulator's truth file when there is one, and the warehouse's
training set), writes nothing but the report files. The Dagster asset ``latency_impact_report`` and the demo only
call :func:`compute` and :func:`write`.

(It lives in ``orchestration/`` because its owner wrote it there; it is analysis over the lake, and belongs in
``warehouse/`` — ``warehouse/latency_impact.py`` — once that tier's owner takes it. Nothing here imports Dagster.)

**The batch-only architecture** (what "decisions applied at the next nightly run" means here): a CDP forwards each
event to the destinations as it is collected; every decision is computed by the nightly run over the history up
to the last UTC midnight and applied to the flow from then on:

* consent: the profile's consent as stamped on its last event before midnight (the ``consent_audit`` mart's
  ``nightly_batch`` path); no known state → delivered (a batch load does not hold data back);
* bots: devices and IP hashes the rules caught before midnight are blocked (a nightly blocklist); new bot rules
  are what the loop's own learner finds when it runs at that midnight on the events before it
  (:mod:`orchestration.nightly_batch`, :mod:`ml.nightly`), and they filter the flow from that midnight on;
* personalization and sales routing: decided at the nightly run, so they reach a session only if it is still
  running at the next midnight after the behaviour that qualified it.

Route conditions (which events go to marketing, which carts are "high value") are the policy's own, evaluated with
:mod:`streaming.policy` on the facts stamped in the lake, so both paths route the same events. Bots are the
simulator's truth when ``truth.parquet`` exists, else the devices the hot path ever quarantined.

**Consent is checked against the inputs, not against the hot path's stamp.** Each event's consent is recomputed
with :mod:`streaming.consent` (an explicit decision wins, else the region default of the event's country) from
the consent each person had given when the event was sent — the simulator's truth. The lake cannot give it: it
keeps neither the TCF strings that decide consent on ordinary events nor a consent event's own purposes (only the
hot path's resulting stamp), so without ``truth.parquet`` the report says the check was not recomputed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from orchestration.nightly_batch import NightlyBatch, replay
from streaming.consent import ConsentState, region_of
from streaming.policy import CompiledPolicy, bootstrap_policy, compile_policy
from warehouse.lake import stream_glob

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

    def batch_pattern_time(self) -> str:
        bo = self.enforcement_s.get("batch_only")
        if bo is None and self.enforcement_after_s is not None:
            return f"> {_hours(self.enforcement_after_s)}"
        return _hours(bo)

    def to_text(self) -> str:
        width = max(len(v) for v in METRICS.values()) + 2
        lines = ["", "latency impact — first mile vs batch-only (decisions at the next nightly run)",
                 "=" * (width + 24), f"{'':<{width}}{'first mile':>12}{'batch only':>12}"]
        for key, label in METRICS.items():
            row = self.metrics.get(key, {})
            lines.append(f"{label:<{width}}{_count(row.get('first_mile')):>12}{_count(row.get('batch_only')):>12}")
        fm = self.enforcement_s.get("first_mile")
        lines.append(f"{PATTERN_ROW:<{width}}{_hours(fm):>12}{self.batch_pattern_time():>12}")
        lines.append(f"({self.events} events over {', '.join(self.days)}; bots from {self.labels}; "
                     f"high-value sessions: {self.denominators.get('high_value_sessions', 0)}, "
                     f"personalization-eligible sessions: {self.denominators.get('personalizable_sessions', 0)})")
        lines.append(f"({self.consent_source})")
        lines += textwrap.wrap(BATCH_PATTERN_HOW, width + 24)
        lines += [f"  - {note}" for note in self.nightly]
        return "\n".join(lines)

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{k}_{p}": v for k, row in self.metrics.items() for p, v in row.items()}
        out.update({f"bot_pattern_enforcement_s_{p}": v for p, v in self.enforcement_s.items()})
        return out


def _hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h"


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _read(lake: Path, stream: str) -> str | None:
    if not list((lake / stream).rglob("*.parquet")):
        return None
    return f"read_parquet('{stream_glob(lake, stream)}', hive_partitioning=true, union_by_name=true)"


def load_policies(policies_dir: Path) -> dict[int, dict[str, Any]]:
    """Every policy document by version: the bootstrap plus what the loop wrote to ``data_dir/policies``."""
    docs = {1: bootstrap_policy()}
    for path in sorted(policies_dir.glob("policy-v*.json")) if policies_dir.is_dir() else []:
        doc = json.loads(path.read_text())
        docs[int(doc["policy_version"])] = doc
    return docs


def facts_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The facts a policy predicate reads, from a lake row (columns + ``f_<feature>`` columns)."""
    facts = {k: v for k, v in row.items() if not k.startswith("f_")}
    facts.update({k[2:]: v for k, v in row.items() if k.startswith("f_")})
    facts["identified"] = bool(row.get("user_id"))
    return facts


def holds(predicate: Any, facts: Mapping[str, Any]) -> bool:
    """A predicate over lake facts; a fact the lake does not carry (suppressed rows keep no features) → False."""
    try:
        return bool(predicate(facts))
    except (TypeError, KeyError, ValueError):
        return False


def _next_midnight(ts: datetime) -> datetime:
    return datetime.combine(ts.date() + timedelta(days=1), datetime.min.time(), tzinfo=ts.tzinfo)


def decided_sql(lake: Path) -> str:
    """Decided events (events, quarantine, suppressed), one row per event_id (first received)."""
    parts = [f"select *, '{s}' as stream from {src}" for s in ("events", "quarantine", "suppressed")
             if (src := _read(lake, s))]
    if not parts:
        raise FileNotFoundError(f"no decided events in the landing zone {lake}")
    return f"""select * from ({' union all by name '.join(parts)})
               qualify row_number() over (partition by event_id order by received_at, stream) = 1"""


def compute(data_dir: Path) -> LatencyImpact:
    """All the numbers, from ``data_dir/lake`` (+ ``truth.parquet``, ``policies/`` and the warehouse's training set
    in ``warehouse.duckdb`` when present)."""
    lake = data_dir / "lake"
    policies = load_policies(data_dir / "policies")
    latest: CompiledPolicy = compile_policy(policies[max(policies)])
    purpose_of = {r.destination: r.purposes for r in latest.routes}
    route = {r.destination: r.predicate for r in latest.routes}
    con = duckdb.connect()
    try:
        con.execute(f"create temp table decided as {decided_sql(lake)}")
        deliveries = _read(lake, "deliveries")
        con.execute("create temp table deliveries as " + (
            f"select distinct event_id, kafka_topic as destination from {deliveries}" if deliveries
            else "select null::varchar as event_id, null::varchar as destination where false"))
        truth = data_dir / "truth.parquet"
        if truth.exists():
            con.execute(f"create temp table labels as select event_id, actor <> 'human' as is_bot_label, "
                        f"consent as truth_consent from read_parquet('{truth}')")
            labels = "the simulator's truth"
        else:
            con.execute("create temp table labels as select event_id, true as is_bot_label, "
                        "null::varchar as truth_consent from decided where device_id in "
                        "(select device_id from decided where stream = 'quarantine')")
            labels = "devices the hot path ever quarantined"
        rows = con.execute("""
            select d.*, coalesce(l.is_bot_label, false) as is_bot_label, l.truth_consent
            from decided d left join labels l using (event_id)
            order by event_ts, received_at""").fetchdf().to_dict("records")
        delivered: dict[str, set[str]] = {}
        for event_id, destination in con.execute("select event_id, destination from deliveries").fetchall():
            delivered.setdefault(destination, set()).add(event_id)
    finally:
        con.close()
    _normalize(rows)
    batch = replay(rows, data_dir / "warehouse.duckdb", policies[1])
    consent = recomputed_consent(rows, policies) if truth.exists() else None
    return _impact(rows, delivered, policies, purpose_of, route, labels, batch=batch, consent=consent)


def _normalize(rows: list[dict[str, Any]]) -> None:
    """pandas gives NaN/NaT for missing values and Timestamps for times: plain None and datetimes, once."""
    import pandas as pd

    for row in rows:
        for k, v in row.items():
            if v is not None and not isinstance(v, str | list | dict | bool) and pd.isna(v):
                row[k] = None
        if hasattr(row["event_ts"], "to_pydatetime"):
            row["event_ts"] = row["event_ts"].to_pydatetime()


def _consent(value: Any) -> dict[str, bool] | None:
    if value is None or (isinstance(value, float)):
        return None
    try:
        doc = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    return {k: bool(v) for k, v in doc.items()} if isinstance(doc, dict) else None


def recomputed_consent(rows: list[dict[str, Any]], policies: dict[int, dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """Event id → purposes granted when it was sent, from the inputs: the consent its person had given
    (``truth_consent``), else the region default of its country under the policy that decided it."""
    defaults = {v: compile_policy(doc).region_defaults for v, doc in policies.items()}
    out = {}
    for r in rows:
        state = ConsentState()
        given = _consent(r.get("truth_consent"))
        if given:
            state.apply(given, at_ms=0, source="input")
        version = int(r["policy_version"]) if r.get("policy_version") is not None else max(policies)
        out[r["event_id"]] = state.effective(region_of(r.get("country")), defaults.get(version, defaults[1]))
    return out


def _impact(rows: list[dict[str, Any]], delivered: dict[str, set[str]], policies: dict[int, dict[str, Any]],
            purpose_of: dict[str, tuple[str, ...]], route: dict[str, Any], labels: str, *,
            batch: NightlyBatch, consent: dict[str, dict[str, bool]] | None) -> LatencyImpact:
    report = LatencyImpact(labels=labels, events=len(rows), nightly=list(batch.notes),
                           consent_source=CONSENT_FROM_TRUTH if consent is not None else CONSENT_NOT_RECOMPUTED)
    if batch.unavailable:
        report.nightly.insert(0, f"batch-only pattern time not measured: {batch.unavailable}")
    report.days = sorted({r["event_ts"].date().isoformat() for r in rows})
    facts = [facts_of(r) for r in rows]

    # --- the nightly-batch simulation: walk the events in time order, keeping what the last midnight knew ------
    stamped_now: dict[str, dict[str, bool]] = {}      # first-mile stamp, per consent key, as of the event
    granted_ever: dict[str, set[str]] = {}            # purposes a key ever had granted (a later "no" = revocation)
    nightly: dict[str, dict[str, bool]] = {}          # stamped state as of the last midnight (what the batch knows)
    blocked_devices: set[str] = set()
    blocked_ips: set[str] = set()
    caught_today: list[tuple[str | None, str | None]] = []
    learned = _learned_rules(policies)
    batch_rules = batch.active_rules()                # (from midnight, id, predicate): the batch's own learned rules
    adoption: dict[int, datetime] = {}                # first event decided by each policy version (event time)
    for r in rows:
        v = r.get("policy_version")
        if v is not None and int(v) not in adoption:
            adoption[int(v)] = r["event_ts"]

    counts: dict[str, dict[str, int | None]] = {k: {p: 0 for p in PATHS} for k in METRICS}
    after_revocation: dict[str, set[str]] = {p: set() for p in PATHS}
    batch_delivered: dict[str, set[str]] = {d: set() for d in route}
    current_day = None
    sessions: dict[str, dict[str, Any]] = {}
    first_match: dict[str, datetime] = {}
    pattern: dict[str, list[dict[str, Any]]] = {rule_id: [] for rule_id in learned}
    for r, f in zip(rows, facts, strict=True):
        ts: datetime = r["event_ts"]
        if ts.date() != current_day:
            # the nightly run: snapshot consent, block what the rules caught before midnight
            current_day = ts.date()
            nightly = {k: dict(v) for k, v in stamped_now.items()}
            for device, ip in caught_today:
                if device:
                    blocked_devices.add(device)
                if ip:
                    blocked_ips.add(ip)
            caught_today = []
        key = r.get("profile_id") or r.get("device_id")
        stamp = _consent(r.get("consent"))
        granted = consent.get(r["event_id"]) if consent is not None else stamp
        for rule_id, info in learned.items():
            if holds(info["predicate"], f):
                first_match.setdefault(rule_id, ts)
                pattern[rule_id].append(f)
        if r["stream"] == "quarantine":
            caught_today.append((r.get("device_id"), r.get("ip_hash")))
        revoked: set[str] = set()
        if granted is not None and key:
            revoked = {p for p, ok in granted.items() if not ok and p in granted_ever.get(key, set())}
        # batch-only delivery of this event
        learned_blocks = any(ts >= since and holds(predicate, f) for since, _, predicate in batch_rules)
        blocked = (r.get("device_id") in blocked_devices or (r.get("ip_hash") in blocked_ips and r.get("ip_hash"))
                   or learned_blocks)
        state = nightly.get(key) if key else None
        for destination, predicate in route.items():
            if blocked or not holds(predicate, f):
                continue
            if state is not None and not all(state.get(p, False) for p in purpose_of[destination]):
                continue
            batch_delivered[destination].add(r["event_id"])
            if any(p in revoked for p in purpose_of[destination]):
                after_revocation["batch_only"].add(r["event_id"])
        for destination in route:
            if r["event_id"] in delivered.get(destination, set()) and any(
                    p in revoked for p in purpose_of[destination]):
                after_revocation["first_mile"].add(r["event_id"])
        if stamp is not None and key:
            stamped_now[key] = stamp
        if granted is not None and key:
            granted_ever.setdefault(key, set()).update(p for p, ok in granted.items() if ok)
        # sessions (humans only): qualifying moments for personalization and sales
        if not r["is_bot_label"] and r.get("session_id"):
            s = sessions.setdefault(r["session_id"], {"end": ts, "decided_at": None, "high_value_at": None,
                                                      "sales_ok": False})
            s["end"] = max(s["end"], ts)
            if s["decided_at"] is None and isinstance(_json(r.get("ledger")).get("decision"), dict):
                s["decided_at"] = ts  # the first mile's personalization decision, stamped in its ledger
            if s["high_value_at"] is None and SALES in route and holds(route[SALES], f):
                s["high_value_at"] = ts
                s["sales_ok"] = bool(granted and all(granted.get(p) for p in purpose_of[SALES]))

    counts["deliveries_after_revocation"] = {p: len(ids) for p, ids in after_revocation.items()}
    counts["deliveries_without_consent"] = {p: None for p in PATHS} if consent is None else {
        "first_mile": without_consent(delivered, consent, purpose_of),
        "batch_only": without_consent(batch_delivered, consent, purpose_of)}
    # bots that reached analytics and marketing
    bot_ids = {r["event_id"] for r in rows if r["is_bot_label"]}
    counts["bot_events_to_analytics"] = {"first_mile": len(bot_ids & delivered.get(ANALYTICS, set())),
                                         "batch_only": len(bot_ids & batch_delivered.get(ANALYTICS, set()))}
    counts["bot_events_to_marketing"] = {"first_mile": len(bot_ids & delivered.get(MARKETING, set())),
                                         "batch_only": len(bot_ids & batch_delivered.get(MARKETING, set()))}
    # personalization: the first mile decided in the session; the batch decision arrives at the next midnight
    decided_sessions = [s for s in sessions.values() if s["decided_at"] is not None]
    counts["sessions_personalized_in_session"] = {
        "first_mile": len(decided_sessions),
        "batch_only": sum(1 for s in decided_sessions if _next_midnight(s["decided_at"]) <= s["end"])}
    # sales: sessions whose cart/order met the sales route, with sales consent at that moment
    sales_sessions = {sid: s for sid, s in sessions.items() if s["high_value_at"] is not None}
    sales_delivered_sessions = {r["session_id"] for r in rows
                                if r["event_id"] in delivered.get(SALES, set()) and not r["is_bot_label"]}
    counts["high_value_sessions_to_sales_in_session"] = {
        "first_mile": len(sales_delivered_sessions),
        "batch_only": sum(1 for s in sales_sessions.values()
                          if s["sales_ok"] and _next_midnight(s["high_value_at"]) <= s["end"])}
    report.sales_delay_s = {
        "first_mile": [0.0 for s in sales_sessions.values() if s["sales_ok"]],
        "batch_only": [(_next_midnight(s["high_value_at"]) - s["high_value_at"]).total_seconds()
                       for s in sales_sessions.values() if s["sales_ok"]]}
    report.metrics = counts
    report.denominators = {"sessions": len(sessions), "personalizable_sessions": len(decided_sessions),
                           "high_value_sessions": len(sales_sessions),
                           "high_value_sessions_with_sales_consent": sum(1 for s in sales_sessions.values()
                                                                         if s["sales_ok"]),
                           "bot_events": len(bot_ids)}
    _pattern_times(report, rows, learned, adoption, first_match, pattern, batch)

    # bots reaching analytics per hour, both paths (for the plot)
    per_hour: dict[str, list[int]] = {}
    for r in rows:
        if r["event_id"] not in bot_ids:
            continue
        hour = r["event_ts"].strftime("%Y-%m-%d %H:00")
        cell = per_hour.setdefault(hour, [0, 0])
        cell[0] += r["event_id"] in delivered.get(ANALYTICS, set())
        cell[1] += r["event_id"] in batch_delivered.get(ANALYTICS, set())
    report.bots_per_hour = [(h, a, b) for h, (a, b) in sorted(per_hour.items())]
    return report


def without_consent(delivered: Mapping[str, set[str]], consent: Mapping[str, Mapping[str, bool]],
                    purpose_of: Mapping[str, tuple[str, ...]]) -> int:
    """Deliveries (event, destination) whose recomputed consent lacks a purpose the destination requires. An event
    the inputs say nothing about, or a destination no route names, counts as delivered without consent."""
    return sum(1 for destination, ids in delivered.items() for event_id in ids
               if destination not in purpose_of or event_id not in consent
               or not all(consent[event_id].get(p, False) for p in purpose_of[destination]))


def _pattern_times(report: LatencyImpact, rows: list[dict[str, Any]], learned: dict[str, dict[str, Any]],
                   adoption: dict[int, datetime], first_match: dict[str, datetime],
                   pattern: dict[str, list[dict[str, Any]]], batch: NightlyBatch) -> None:
    """A new bot pattern (the events a rule the first mile learned matches): first appearance → enforced.
    First mile: the first event decided by the policy version that enforced it. Batch only: the first replayed
    nightly run whose own learned rules catch it (:meth:`NightlyBatch.enforcement`)."""
    quarantined_by: dict[str, datetime] = {}
    for r in rows:
        if r["stream"] != "quarantine" or not r.get("bot_reasons"):
            continue
        try:
            reasons = json.loads(r["bot_reasons"])
        except ValueError:
            continue
        for rule_id in reasons:
            if rule_id in learned and rule_id not in quarantined_by:
                quarantined_by[rule_id] = r["event_ts"]
    bounds = []
    for rule_id, info in learned.items():
        first = first_match.get(rule_id)
        fm = adoption.get(info["version"])
        bo, after, cover = batch.enforcement(pattern[rule_id])
        report.learned_rules.append({
            "rule": rule_id, "policy_version": info["version"], "first_seen": _iso(first),
            "first_mile_enforced": _iso(fm), "first_quarantined": _iso(quarantined_by.get(rule_id)),
            "batch_enforced": _iso(bo) if bo else (f"after {_iso(after)}" if after else None),
            "batch_coverage": round(cover, 3), "pattern_events": len(pattern[rule_id]),
            # enforced before it first appeared = 0 s
            "first_mile_s": max((fm - first).total_seconds(), 0.0) if first and fm else None,
            "batch_s": max((bo - first).total_seconds(), 0.0) if first and bo else None})
        if first and fm and bo is None and after is not None:
            bounds.append(max((after - first).total_seconds(), 0.0))
    enforced = [r for r in report.learned_rules if r["first_mile_s"] is not None]
    report.enforcement_s = {
        "first_mile": min((r["first_mile_s"] for r in enforced), default=None),
        "batch_only": min((r["batch_s"] for r in enforced if r["batch_s"] is not None), default=None)}
    if report.enforcement_s["batch_only"] is None and bounds:
        report.enforcement_after_s = min(bounds)

def _json(value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        return {}
    try:
        doc = json.loads(value)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _learned_rules(policies: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Enforced bot rules that a later policy added to the bootstrap: the patterns the loop learned."""
    known = {r["id"] for r in policies[1]["rules"]}
    out: dict[str, dict[str, Any]] = {}
    for version in sorted(policies):
        compiled = compile_policy(policies[version])
        for rule in compiled.bot_rules:
            if rule.id not in known and rule.mode == "enforce" and rule.id not in out:
                out[rule.id] = {"version": version, "predicate": rule.predicate}
    return out


# --- the HTML report ---------------------------------------------------------------------------------------------

def _short(value: Any) -> str:
    """ISO timestamps as ``YYYY-MM-DD HH:MM`` UTC for the tables; anything else as text."""
    if isinstance(value, str) and len(value) > 16 and value[10:11] == "T":
        return value[:16].replace("T", " ")
    return str(value)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: LatencyImpact) -> dict[str, str]:
    """Base64 PNGs: the side-by-side counts, bots reaching analytics per hour, sales lead delay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(9, 4))
    keys = list(METRICS)
    x = range(len(keys))
    for offset, path, color in ((-0.2, "first_mile", "#2a7ab0"), (0.2, "batch_only", "#c8553d")):
        values = [report.metrics.get(k, {}).get(path) or 0 for k in keys]
        bars = ax.bar([i + offset for i in x], values, width=0.4, label=path.replace("_", " "), color=color)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(list(x), [textwrap.fill(METRICS[k], 24) for k in keys], fontsize=7)
    ax.set_yscale("symlog")
    ax.set_title("Same traffic, two architectures")
    ax.legend()
    out["counts"] = _png(fig)
    plt.close(fig)

    if report.bots_per_hour:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        hours = [h for h, _, _ in report.bots_per_hour]
        ax.plot(range(len(hours)), [a for _, a, _ in report.bots_per_hour], label="first mile", color="#2a7ab0")
        ax.plot(range(len(hours)), [b for _, _, b in report.bots_per_hour], label="batch only", color="#c8553d")
        step = max(1, len(hours) // 8)
        ax.set_xticks(range(0, len(hours), step), [hours[i][5:] for i in range(0, len(hours), step)], fontsize=7)
        ax.set_ylabel("bot events / hour")
        ax.set_title("Bot events reaching analytics, per hour")
        ax.legend()
        out["bots_per_hour"] = _png(fig)
        plt.close(fig)

    delays = report.sales_delay_s.get("batch_only") or []
    if delays:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist([d / 3600 for d in delays], bins=12, color="#c8553d", label="batch only (next nightly run)")
        ax.axvline(0, color="#2a7ab0", linewidth=3, label="first mile (same event)")
        ax.set_xlabel("hours from the qualifying event to the sales hand-off")
        ax.set_title("High-value sessions: time to sales")
        ax.legend(fontsize=8)
        out["sales_delay"] = _png(fig)
        plt.close(fig)
    return out


def consent_audit_rows(duckdb_path: Path) -> list[tuple[Any, ...]]:
    """The ``consent_audit`` mart as dbt last built it (cross-check; it covers the data of the last loop run)."""
    if not duckdb_path.exists():
        return []
    try:
        con = duckdb.connect(str(duckdb_path), read_only=True)
    except duckdb.Error:
        return []  # a dbt build holds the file: the report does not wait for it
    try:
        return con.execute("select path, destination, purpose, events_delivered, delivered_without_consent "
                           "from consent_audit order by path, destination").fetchall()
    except duckdb.Error:
        return []
    finally:
        con.close()


def to_html(report: LatencyImpact, *, audit: list[tuple[Any, ...]] | None = None) -> str:
    images = plots(report)
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(label)}</td><td>{_count(report.metrics[k]['first_mile'])}</td>"
                   f"<td>{_count(report.metrics[k]['batch_only'])}</td></tr>" for k, label in METRICS.items())
    rows += (f"<tr><td>{PATTERN_ROW}</td><td>{_hours(report.enforcement_s.get('first_mile'))}</td>"
             f"<td>{esc(report.batch_pattern_time())}</td></tr>")
    rules = "".join("<tr>" + "".join(f"<td>{esc(_short(r.get(c)))}</td>" for c in (
        "rule", "policy_version", "first_seen", "first_mile_enforced", "first_quarantined", "batch_enforced",
        "batch_coverage")) + "</tr>" for r in report.learned_rules) \
        or "<tr><td colspan=7>no learned rule in the data yet</td></tr>"
    nightly = "".join(f"<li>{esc(note)}</li>" for note in report.nightly)
    audit_html = ""
    if audit:
        audit_html = ("<h2>Cross-check: the consent_audit mart (as of the last warehouse build)</h2><table>"
                      "<tr><th>path</th><th>destination</th><th>purpose</th><th>delivered</th>"
                      "<th>without consent</th></tr>"
                      + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in audit)
                      + "</table>")
    figures = "".join(f'<figure><img alt="{k}" src="data:image/png;base64,{v}"></figure>' for k, v in images.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>firstmile — latency impact</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Latency impact: first mile vs batch-only</h1>
<p>{report.events} events over {esc(', '.join(report.days))}; bots from {esc(report.labels)}.
Batch-only = the same events forwarded as collected, with every decision (consent state, bot blocklist, learned rules,
personalization, sales routing) computed by the nightly run and applied from then on.</p>
<p id="consent-source">{esc(report.consent_source[:1].upper() + report.consent_source[1:])}.</p>
<table id="headline"><tr><th></th><th>first mile</th><th>batch only</th></tr>{rows}</table>
<p>Denominators: {esc(json.dumps(report.denominators))}</p>
{figures}
<h2>Learned bot patterns</h2>
<table><tr><th>rule</th><th>policy</th><th>first seen</th><th>first mile: in force</th><th>first quarantined</th>
<th>batch: in force</th><th>share of the pattern the batch's rules catch</th></tr>{rules}</table>
<p id="batch-pattern-how">{esc(BATCH_PATTERN_HOW)}</p><ul>{nightly}</ul>
{audit_html}
</body></html>"""


def write(report: LatencyImpact, data_dir: Path) -> Path:
    """``data_dir/reports/latency_impact.html`` (+ ``.json`` with the numbers). Returns the HTML path."""
    out = data_dir / "reports"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latency_impact.html"
    path.write_text(to_html(report, audit=consent_audit_rows(data_dir / "warehouse.duckdb")))
    (out / "latency_impact.json").write_text(json.dumps(
        {"metrics": report.metrics, "denominators": report.denominators, "enforcement_s": report.enforcement_s,
         "enforcement_after_s": report.enforcement_after_s, "learned_rules": report.learned_rules,
         "labels": report.labels, "consent_source": report.consent_source, "nightly": report.nightly,
         "events": report.events, "days": report.days}, indent=2))
    return path
