"""The profile inspector: one plain HTML page (no build step, no script) with a profile's live state and the
ledgers of its recent decided events — why each went where."""

from __future__ import annotations

import html
import time
from typing import Any

import orjson

from streaming.profile_view import FIELD_PURPOSES

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2433}h1{font-size:1.3rem}h2{font-size:1.05rem;
margin-top:1.6rem}table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #d4d8e0;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f2f4f8}.granted{color:#176b2c}.denied{color:#a4262c}
pre{margin:0;white-space:pre-wrap;font-size:12px}code{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def render_profile(view: dict[str, Any], recent: list[dict[str, Any]], *, applied_at: float) -> str:
    """The page for one profile (``view``: as published on ``profiles``; ``recent``: its last events)."""
    consent = view.get("consent") or {}
    purposes = "".join(f'<tr><th>{_e(p)}</th><td class="{"granted" if g else "denied"}">'
                       f'{"granted" if g else "denied"}</td></tr>' for p, g in sorted(consent.items()))
    scores = view.get("scores") or {}
    state = _rows([
        ("profile id", _e(view.get("profile_id"))), ("user id", _e(view.get("user_id"))),
        ("devices", _e(", ".join(view.get("devices") or []))),
        ("segment", _e(view.get("segment"))), ("action", _e(view.get("action"))),
        ("propensity", _e(scores.get("propensity"))), ("bot score", _e(scores.get("bot"))),
        ("last event at", _e(view.get("last_event_at"))), ("policy version", _e(view.get("policy_version"))),
        ("applied here", f"{time.time() - applied_at:.1f} s ago"),
    ])
    needs = _rows([(field, _e(purpose)) for field, purpose in FIELD_PURPOSES.items()])
    features = _rows([(k, _e(v)) for k, v in sorted((view.get("features") or {}).items())])
    events = "".join(
        f"<tr><td><code>{_e(e.get('event_id'))}</code></td><td>{_e(e.get('event_ts'))}</td>"
        f"<td>{_e(e.get('type'))} {_e(e.get('event_name'))}</td>"
        f"<td>{_e(', '.join(e.get('destinations') or []) or 'none')}</td>"
        f"<td><pre>{_e(orjson.dumps(e.get('ledger'), option=orjson.OPT_INDENT_2).decode())}</pre></td></tr>"
        for e in reversed(recent))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>firstmile · profile {_e(view.get("profile_id"))}</title>
<style>{_STYLE}</style></head><body>
<h1>Profile <code>{_e(view.get("profile_id"))}</code></h1>
<h2>Live state</h2><table id="state">{state}</table>
<h2>Consent now</h2><table id="consent">{purposes}</table>
<h2>What each served field needs</h2><table>{needs}</table>
<h2>Session so far</h2><table id="features">{features}</table>
<h2>Recent decided events (newest first): where each went, and why</h2>
<table id="events"><tr><th>event id</th><th>event time</th><th>event</th><th>went to</th><th>ledger</th></tr>
{events}</table>
</body></html>"""
