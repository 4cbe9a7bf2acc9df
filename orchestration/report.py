"""The latency-impact report: on the same traffic, what the first mile did vs what a batch-only architecture would
have done. Pure: reads the landing zone (and the simulator's truth file when there is one), writes nothing but the
report files. The Dagster asset ``latency_impact_report`` and the demo only call :func:`compute` and :func:`write`.

(It lives in ``orchestration/`` because its owner wrote it there; it is analysis over the lake, and belongs in
``warehouse/`` — ``warehouse/latency_impact.py`` — once that tier's owner takes it. Nothing here imports Dagster.)

**The batch-only architecture** (what "decisions applied at the next nightly run" means here): a CDP forwards each
event to the destinations as it is collected; every decision is computed by the nightly run over the history up
to the last UTC midnight and applied to the flow from then on:

* consent: the profile's consent as stamped on its last event before midnight (the ``consent_audit`` mart's
  ``nightly_batch`` path); no known state → delivered (a batch load does not hold data back);
* bots: devices and IP hashes the rules caught before midnight are blocked (a nightly blocklist); a learned rule
  filters the flow from the nightly run after the one that learned it;
* personalization and sales routing: decided at the nightly run, so they reach a session only if it is still
  running at the next midnight after the behaviour that qualified it.

Route conditions (which events go to marketing, which carts are "high value") are the policy's own, evaluated with
:mod:`streaming.policy` on the facts stamped in the lake, so both paths route the same events. Bots are the
simulator's truth when ``truth.parquet`` exists, else the devices the hot path ever quarantined.
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

from streaming.policy import CompiledPolicy, bootstrap_policy, compile_policy
from warehouse.lake import stream_glob

ANALYTICS, MARKETING, SALES = "dest.warehouse", "dest.marketing", "dest.sales"
PATHS = ("first_mile", "batch_only")
#: Headline rows: key → label. Lower is better for the first three, higher for the next two.
METRICS = {
    "deliveries_after_revocation": "events delivered after a consent revocation",
    "bot_events_to_analytics": "bot events that reached analytics (dest.warehouse)",
    "bot_events_to_marketing": "bot events that reached marketing (dest.marketing)",
    "sessions_personalized_in_session": "sessions with an in-session personalization decision",
    "high_value_sessions_to_sales_in_session": "high-value sessions routed to sales within the session",
}


@dataclass
class LatencyImpact:
    """The report's numbers. ``metrics[key][path]``; times in seconds (``None``: did not happen in the data)."""

    metrics: dict[str, dict[str, int]] = field(default_factory=dict)
    denominators: dict[str, int] = field(default_factory=dict)
    enforcement_s: dict[str, float | None] = field(default_factory=dict)
    learned_rules: list[dict[str, Any]] = field(default_factory=list)
    sales_delay_s: dict[str, list[float]] = field(default_factory=dict)
    bots_per_hour: list[tuple[str, int, int]] = field(default_factory=list)
    labels: str = ""
    events: int = 0
    days: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        width = max(len(v) for v in METRICS.values()) + 2
        lines = ["", "latency impact — first mile vs batch-only (decisions at the next nightly run)",
                 "=" * (width + 24), f"{'':<{width}}{'first mile':>12}{'batch only':>12}"]
        for key, label in METRICS.items():
            row = self.metrics.get(key, {})
            lines.append(f"{label:<{width}}{row.get('first_mile', 0):>12}{row.get('batch_only', 0):>12}")
        fm, bo = self.enforcement_s.get("first_mile"), self.enforcement_s.get("batch_only")
        lines.append(f"{'new bot pattern: first appearance → enforced':<{width}}{_hours(fm):>12}{_hours(bo):>12}")
        lines.append(f"({self.events} events over {', '.join(self.days)}; bots from {self.labels}; "
                     f"high-value sessions: {self.denominators.get('high_value_sessions', 0)}, "
                     f"personalization-eligible sessions: {self.denominators.get('personalizable_sessions', 0)})")
        return "\n".join(lines)

    def headline(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{k}_{p}": v for k, row in self.metrics.items() for p, v in row.items()}
        out.update({f"bot_pattern_enforcement_s_{p}": v for p, v in self.enforcement_s.items()})
        return out


def _hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h"


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
    """All the numbers, from ``data_dir/lake`` (+ ``truth.parquet`` and ``policies/`` when present)."""
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
            con.execute(f"create temp table bots as select event_id from read_parquet('{truth}') "
                        "where actor <> 'human'")
            labels = "the simulator's truth"
        else:
            con.execute("create temp table bots as select event_id from decided where device_id in "
                        "(select device_id from decided where stream = 'quarantine')")
            labels = "devices the hot path ever quarantined"
        rows = con.execute("""
            select d.*, b.event_id is not null as is_bot_label from decided d left join bots b using (event_id)
            order by event_ts, received_at""").fetchdf().to_dict("records")
        delivered: dict[str, set[str]] = {}
        for event_id, destination in con.execute("select event_id, destination from deliveries").fetchall():
            delivered.setdefault(destination, set()).add(event_id)
    finally:
        con.close()
    return _impact(rows, delivered, policies, purpose_of, route, labels)


def _consent(value: Any) -> dict[str, bool] | None:
    if value is None or (isinstance(value, float)):
        return None
    try:
        doc = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    return {k: bool(v) for k, v in doc.items()} if isinstance(doc, dict) else None


def _impact(rows: list[dict[str, Any]], delivered: dict[str, set[str]], policies: dict[int, dict[str, Any]],
            purpose_of: dict[str, tuple[str, ...]], route: dict[str, Any], labels: str) -> LatencyImpact:
    import pandas as pd

    report = LatencyImpact(labels=labels, events=len(rows))
    for row in rows:  # pandas gives NaN/NaT for missing values: normalize to None once
        for k, v in row.items():
            if v is not None and not isinstance(v, str | list | dict | bool) and pd.isna(v):
                row[k] = None
        row["event_ts"] = row["event_ts"].to_pydatetime() if hasattr(row["event_ts"], "to_pydatetime") \
            else row["event_ts"]
    report.days = sorted({r["event_ts"].date().isoformat() for r in rows})

    # --- the nightly-batch simulation: walk the events in time order, keeping what the last midnight knew ------
    consent_now: dict[str, dict[str, bool]] = {}      # first-mile stamp, per consent key, as of the event
    consent_ever: dict[str, set[str]] = {}            # purposes a key ever had granted (a later "no" = revocation)
    nightly: dict[str, dict[str, bool]] = {}          # state as of the last midnight
    blocked_devices: set[str] = set()
    blocked_ips: set[str] = set()
    caught_today: list[tuple[str | None, str | None]] = []
    learned = _learned_rules(policies)
    learned_active_from: dict[str, datetime] = {}     # when the batch starts applying each learned rule
    adoption: dict[int, datetime] = {}                # first event decided by each policy version (event time)
    for r in rows:
        v = r.get("policy_version")
        if v is not None and int(v) not in adoption:
            adoption[int(v)] = r["event_ts"]
    for rule_id, info in learned.items():
        adopted = adoption.get(info["version"])
        if adopted is not None:
            learned_active_from[rule_id] = _next_midnight(adopted)

    counts = {k: {p: 0 for p in PATHS} for k in METRICS}
    after_revocation: dict[str, set[str]] = {p: set() for p in PATHS}
    batch_delivered: dict[str, set[str]] = {d: set() for d in route}
    current_day = None
    sessions: dict[str, dict[str, Any]] = {}
    first_match: dict[str, datetime] = {}
    for r in rows:
        ts: datetime = r["event_ts"]
        if ts.date() != current_day:
            # the nightly run: snapshot consent, block what the rules caught before midnight
            current_day = ts.date()
            nightly = {k: dict(v) for k, v in consent_now.items()}
            for device, ip in caught_today:
                if device:
                    blocked_devices.add(device)
                if ip:
                    blocked_ips.add(ip)
            caught_today = []
        key = r.get("profile_id") or r.get("device_id")
        stamp = _consent(r.get("consent"))
        facts = facts_of(r)
        for rule_id, info in learned.items():
            if rule_id not in first_match and holds(info["predicate"], facts):
                first_match[rule_id] = ts
        if r["stream"] == "quarantine":
            caught_today.append((r.get("device_id"), r.get("ip_hash")))
        revoked: set[str] = set()
        if stamp is not None and key:
            revoked = {p for p, ok in stamp.items() if not ok and p in consent_ever.get(key, set())}
        # batch-only delivery of this event
        learned_blocks = any(ts >= learned_active_from[rid] and holds(learned[rid]["predicate"], facts)
                             for rid in learned_active_from)
        blocked = (r.get("device_id") in blocked_devices or (r.get("ip_hash") in blocked_ips and r.get("ip_hash"))
                   or learned_blocks)
        state = nightly.get(key) if key else None
        for destination, predicate in route.items():
            if blocked or not holds(predicate, facts):
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
            consent_now[key] = stamp
            consent_ever.setdefault(key, set()).update(p for p, ok in stamp.items() if ok)
        # sessions (humans only): qualifying moments for personalization and sales
        if not r["is_bot_label"] and r.get("session_id"):
            s = sessions.setdefault(r["session_id"], {"end": ts, "decided_at": None, "high_value_at": None,
                                                      "sales_ok": False})
            s["end"] = max(s["end"], ts)
            if s["decided_at"] is None and isinstance(_json(r.get("ledger")).get("decision"), dict):
                s["decided_at"] = ts  # the first mile's personalization decision, stamped in its ledger
            if s["high_value_at"] is None and SALES in route and holds(route[SALES], facts):
                s["high_value_at"] = ts
                s["sales_ok"] = bool(stamp and all(stamp.get(p) for p in purpose_of[SALES]))

    counts["deliveries_after_revocation"] = {p: len(ids) for p, ids in after_revocation.items()}
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

    # a new bot pattern: first appearance (first event a learned rule matches) → enforcement
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
    for rule_id, info in learned.items():
        first = first_match.get(rule_id)
        # first mile: in force from the first event its policy version decided; batch: the next nightly run
        fm = adoption.get(info["version"])
        bo = learned_active_from.get(rule_id)
        report.learned_rules.append({
            "rule": rule_id, "policy_version": info["version"], "first_seen": _iso(first),
            "first_mile_enforced": _iso(fm), "first_quarantined": _iso(quarantined_by.get(rule_id)),
            "batch_enforced": _iso(bo),
            "first_mile_s": (fm - first).total_seconds() if first and fm else None,
            "batch_s": (bo - first).total_seconds() if first and bo else None})
    enforced = [r for r in report.learned_rules if r["first_mile_s"] is not None]
    report.enforcement_s = {
        "first_mile": min((r["first_mile_s"] for r in enforced), default=None),
        "batch_only": min((r["batch_s"] for r in enforced if r["batch_s"] is not None), default=None)}

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
        values = [report.metrics.get(k, {}).get(path, 0) for k in keys]
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
    rows = "".join(f"<tr><td>{esc(label)}</td><td>{report.metrics[k]['first_mile']}</td>"
                   f"<td>{report.metrics[k]['batch_only']}</td></tr>" for k, label in METRICS.items())
    rows += (f"<tr><td>new bot pattern: first appearance → enforced</td>"
             f"<td>{_hours(report.enforcement_s.get('first_mile'))}</td>"
             f"<td>{_hours(report.enforcement_s.get('batch_only'))}</td></tr>")
    rules = "".join("<tr>" + "".join(f"<td>{esc(_short(r.get(c)))}</td>" for c in (
        "rule", "policy_version", "first_seen", "first_mile_enforced", "first_quarantined", "batch_enforced"))
        + "</tr>" for r in report.learned_rules) or "<tr><td colspan=6>no learned rule in the data yet</td></tr>"
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
<table id="headline"><tr><th></th><th>first mile</th><th>batch only</th></tr>{rows}</table>
<p>Denominators: {esc(json.dumps(report.denominators))}</p>
{figures}
<h2>Learned bot patterns</h2>
<table><tr><th>rule</th><th>policy</th><th>first seen</th><th>first mile: in force</th><th>first quarantined</th>
<th>batch: in force</th></tr>{rules}</table>
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
         "learned_rules": report.learned_rules, "labels": report.labels, "events": report.events,
         "days": report.days}, indent=2))
    return path
