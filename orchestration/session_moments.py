"""The moments that qualify a person's session for an in-session decision, for the latency-impact report: when
the first mile decided its personalization (stamped in the ledger), when it first met the sales route (the
policy's own condition over the catalog's facts) and whether sales consent was granted then, and when it ended.
A batch-only platform acts on them at the next nightly run: in the session only if it is still running then."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestration.consent_checks import granted_when_sent
from orchestration.decided_events import holds


@dataclass
class SessionMoments:
    end: datetime
    #: the first mile's personalization decision (the first event whose ledger carries one)
    decided_at: datetime | None = None
    #: the first event that met the sales route's condition
    high_value_at: datetime | None = None
    #: every purpose the sales route requires was granted at ``high_value_at``
    sales_ok: bool = False


def next_midnight(ts: datetime) -> datetime:
    """When a batch-only platform's nightly run next acts on something that happened at ``ts`` (UTC days)."""
    return datetime.combine(ts.date() + timedelta(days=1), datetime.min.time(), tzinfo=ts.tzinfo)


def session_moments(rows: Sequence[Mapping[str, Any]], *, sales_route: Any | None, sales_purposes: tuple[str, ...],
                    consent: Mapping[str, dict[str, bool]] | None) -> dict[str, SessionMoments]:
    """Session id → its moments, over the humans' events (``is_bot_label`` false) in time order."""
    sessions: dict[str, SessionMoments] = {}
    for r in rows:
        if r["is_bot_label"] or not r.get("session_id"):
            continue
        ts: datetime = r["event_ts"]
        s = sessions.setdefault(r["session_id"], SessionMoments(end=ts))
        s.end = max(s.end, ts)
        if s.decided_at is None and isinstance(_ledger(r.get("ledger")).get("decision"), dict):
            s.decided_at = ts
        if s.high_value_at is None and sales_route is not None and holds(sales_route, r):
            s.high_value_at = ts
            granted = granted_when_sent(r, consent)
            s.sales_ok = bool(granted and all(granted.get(p) for p in sales_purposes))
    return sessions


def in_session_after_midnight(moment: datetime | None, session: SessionMoments) -> bool:
    """A decision taken at the next nightly run after ``moment`` still reaches the session."""
    return moment is not None and next_midnight(moment) <= session.end


def _ledger(value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        return {}
    try:
        doc = json.loads(value)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
