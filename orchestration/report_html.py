"""The latency-impact report rendered: the HTML page with its plots and tables, and the JSON of its numbers
(``<data_dir>/reports/latency_impact.{html,json}``)."""

from __future__ import annotations

import base64
import html
import io
import json
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb

from orchestration.latency_impact import (
    BATCH_PATTERN_HOW,
    LIVE_BATCH_HOW,
    LIVE_METRICS,
    METRICS,
    PATTERN_ROW,
    LatencyImpact,
    count,
    hours,
    ms,
)


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


def in_session_html(report: LatencyImpact) -> str:
    """The in-session serving section: the live run's rows and freshness, or n/a rows with the reason."""
    esc = html.escape
    live = report.live
    if live is None:
        rows = "".join(f"<tr><td>{esc(label)}</td><td>n/a</td><td>n/a</td></tr>" for label in LIVE_METRICS.values())
        return (f'<h2>In-session serving (live run)</h2><table id="in-session"><tr><th></th><th>first mile</th>'
                f'<th>batch only</th></tr>{rows}</table><p id="in-session-unavailable">n/a: '
                f"{esc(report.live_unavailable)}</p>")
    rows = "".join(f"<tr><td>{esc(label)}</td><td>{count(live.metrics[k]['first_mile'])}</td>"
                   f"<td>{count(live.metrics[k]['batch_only'])}</td></tr>" for k, label in LIVE_METRICS.items())
    dists = "".join(
        f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{ms(dist.get(q))}</td>" for q in ("p50", "p95", "p99"))
        + "</tr>" for label, dist in live.distributions())
    return (f"<h2>In-session serving (live run {esc(live.run_id)}, {esc(live.status)})</h2>"
            f"<p>Scenario {esc(live.scenario)}, day at {esc(str(live.pace.get('speed')))}x, sessions at "
            f"{esc(str(live.pace.get('session_speed')))}x; recorded in <code>{esc(live.run_dir)}</code>.</p>"
            f'<table id="in-session"><tr><th></th><th>first mile</th><th>batch only</th></tr>{rows}</table>'
            f'<table id="in-session-freshness"><tr><th>in-session reads by humans</th><th>p50</th><th>p95</th>'
            f"<th>p99</th></tr>{dists}</table><p>{esc(live.notes())}</p>"
            f'<p id="in-session-batch-how">{esc(LIVE_BATCH_HOW)}</p>')


def to_html(report: LatencyImpact, *, audit: list[tuple[Any, ...]] | None = None) -> str:
    images = plots(report)
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(label)}</td><td>{count(report.metrics[k]['first_mile'])}</td>"
                   f"<td>{count(report.metrics[k]['batch_only'])}</td></tr>" for k, label in METRICS.items())
    rows += (f"<tr><td>{PATTERN_ROW}</td><td>{hours(report.enforcement_s.get('first_mile'))}</td>"
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
<p id="coverage">{esc(report.coverage_note()[:1].upper() + report.coverage_note()[1:])}.</p>
<table id="headline"><tr><th></th><th>first mile</th><th>batch only</th></tr>{rows}</table>
<p>Denominators: {esc(json.dumps(report.denominators))}</p>
{figures}
<h2>Learned bot patterns</h2>
<table><tr><th>rule</th><th>policy</th><th>first seen</th><th>first mile: in force</th><th>first quarantined</th>
<th>batch: in force</th><th>share of the pattern the batch's rules catch</th></tr>{rules}</table>
<p id="batch-pattern-how">{esc(BATCH_PATTERN_HOW)}</p><ul>{nightly}</ul>
{in_session_html(report)}
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
         "lake_files_pending": report.lake_files_pending,
         "events": report.events, "days": report.days,
         "in_session": asdict(report.live) if report.live else {"unavailable": report.live_unavailable}},
        indent=2))
    return path
