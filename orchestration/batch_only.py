"""What a batch-only platform would have delivered, for the latency-impact report.

A CDP forwards each event to the destinations as it is collected; every decision is computed by the nightly run
over the history up to the last UTC midnight and applied to the flow from then on:

* consent: the profile's consent as stamped on its last event before midnight (the ``consent_audit`` mart's
  ``nightly_batch`` path); no known state → delivered (a batch load does not hold data back);
* bots: devices and IP hashes the rules caught before midnight are blocked (a nightly blocklist), and the rules
  the loop's own learner finds when it runs at that midnight (:mod:`orchestration.nightly_batch`) filter the flow
  from that midnight on;
* routing: the policy's own route conditions over the catalog's facts, so both paths route the same events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from orchestration.consent_checks import consent_key, parse_consent
from orchestration.decided_events import holds


def batch_deliveries(rows: Sequence[Mapping[str, Any]], *, routes: Mapping[str, Any],
                     purpose_of: Mapping[str, tuple[str, ...]],
                     learned: Sequence[tuple[datetime, str, Any]]) -> dict[str, set[str]]:
    """Destination → the event ids the batch-only platform delivers to it, walking ``rows`` in time order.

    ``routes``: destination → compiled route condition; ``learned``: (from midnight, rule id, predicate) of the
    rules the batch's own nightly runs enforce (:meth:`orchestration.nightly_batch.NightlyBatch.active_rules`).
    """
    stamped_now: dict[str, dict[str, bool]] = {}     # the hot path's stamp per consent key, as of the event
    nightly: dict[str, dict[str, bool]] = {}         # the stamps as of the last midnight (what the batch knows)
    blocked_devices: set[str] = set()
    blocked_ips: set[str] = set()
    caught_today: list[tuple[str | None, str | None]] = []
    delivered: dict[str, set[str]] = {d: set() for d in routes}
    day: date | None = None
    for r in rows:
        ts: datetime = r["event_ts"]
        if ts.date() != day:  # the nightly run: snapshot consent, block what the rules caught before midnight
            day = ts.date()
            nightly = {k: dict(v) for k, v in stamped_now.items()}
            blocked_devices.update(device for device, _ in caught_today if device)
            blocked_ips.update(ip for _, ip in caught_today if ip)
            caught_today = []
        if r["stream"] == "quarantine":
            caught_today.append((r.get("device_id"), r.get("ip_hash")))
        key = consent_key(r)
        blocked = (r.get("device_id") in blocked_devices or bool(r.get("ip_hash") and r["ip_hash"] in blocked_ips)
                   or any(ts >= since and holds(predicate, r) for since, _, predicate in learned))
        state = nightly.get(key) if key else None
        for destination, route in routes.items():
            if blocked or not holds(route, r):
                continue
            if state is not None and not all(state.get(p, False) for p in purpose_of[destination]):
                continue
            delivered[destination].add(r["event_id"])
        stamp = parse_consent(r.get("consent"))
        if stamp is not None and key:
            stamped_now[key] = stamp
    return delivered
