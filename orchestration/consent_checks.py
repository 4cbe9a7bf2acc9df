"""Consent as the inputs decided it, for the latency-impact report: what each event's person had granted when it
was sent, which purposes an event comes after a revocation of, and the deliveries that lacked a purpose.

**Checked against the inputs, not the hot path's stamp.** Each event's consent is recomputed with
:mod:`streaming.consent` (an explicit decision wins, else the region default of the event's country) from the
consent its person had given when it was sent — the simulator's truth. The warehouse cannot give it: the lake keeps
neither the TCF strings that decide consent on ordinary events nor a consent event's own purposes (only the hot
path's resulting stamp), so without a truth the report says the check was not recomputed and reads revocations
from the stamps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from streaming.consent import ConsentState, region_of
from streaming.policy import compile_policy


def parse_consent(value: Any) -> dict[str, bool] | None:
    """A consent document (JSON text or a mapping) as purpose → granted; ``None`` when absent or unreadable."""
    if value is None or isinstance(value, float):
        return None
    try:
        doc = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    return {k: bool(v) for k, v in doc.items()} if isinstance(doc, dict) else None


def recomputed_consent(rows: Sequence[Mapping[str, Any]],
                       policies: Mapping[int, dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """Event id → purposes granted when it was sent, from the inputs: the consent its person had given
    (``truth_consent``), else the region default of its country under the policy that decided it."""
    defaults = {v: compile_policy(doc).region_defaults for v, doc in policies.items()}
    out = {}
    for r in rows:
        state = ConsentState()
        given = parse_consent(r.get("truth_consent"))
        if given:
            state.apply(given, at_ms=0, source="input")
        version = int(r["policy_version"]) if r.get("policy_version") is not None else max(policies)
        out[r["event_id"]] = state.effective(region_of(r.get("country")), defaults.get(version, defaults[1]))
    return out


def granted_when_sent(row: Mapping[str, Any], consent: Mapping[str, dict[str, bool]] | None) -> dict[str, bool] | None:
    """The purposes an event's person had granted: recomputed from the inputs when there are, else its stamp."""
    return consent.get(row["event_id"]) if consent is not None else parse_consent(row.get("consent"))


def consent_key(row: Mapping[str, Any]) -> str | None:
    """Whose consent an event is under: its profile, else its device (as the hot path keys consent)."""
    return row.get("profile_id") or row.get("device_id")


def revocations(rows: Sequence[Mapping[str, Any]],
                consent: Mapping[str, dict[str, bool]] | None) -> dict[str, set[str]]:
    """Event id → the purposes its person had granted on an earlier event and no longer grants at this one (in time
    order: ``rows`` as :func:`orchestration.decided_events.read_decided` gives them). Events after no revocation
    are left out."""
    granted_ever: dict[str, set[str]] = {}
    out: dict[str, set[str]] = {}
    for r in rows:
        key, granted = consent_key(r), granted_when_sent(r, consent)
        if granted is None or not key:
            continue
        revoked = {p for p, ok in granted.items() if not ok and p in granted_ever.get(key, set())}
        if revoked:
            out[r["event_id"]] = revoked
        granted_ever.setdefault(key, set()).update(p for p, ok in granted.items() if ok)
    return out


def after_revocation(delivered: Mapping[str, set[str]], revoked: Mapping[str, set[str]],
                     purpose_of: Mapping[str, tuple[str, ...]]) -> int:
    """Events delivered to a destination that requires a purpose their person had revoked."""
    return len({event_id for destination, ids in delivered.items() for event_id in ids
                if destination in purpose_of and revoked.get(event_id, set()) & set(purpose_of[destination])})


def without_consent(delivered: Mapping[str, set[str]], consent: Mapping[str, Mapping[str, bool]],
                    purpose_of: Mapping[str, tuple[str, ...]]) -> int:
    """Deliveries (event, destination) whose recomputed consent lacks a purpose the destination requires. An event
    the inputs say nothing about, or a destination no route names, counts as delivered without consent."""
    return sum(1 for destination, ids in delivered.items() for event_id in ids
               if destination not in purpose_of or event_id not in consent
               or not all(consent[event_id].get(p, False) for p in purpose_of[destination]))
