"""A tiny landing zone with every case the warehouse must handle, written with the real lake writer.

The records are what the hot path would have produced: events in arrival order (``raw_offset``), with the
session features the hot path computes (``streaming.sessions.update_session``) stamped as ``features``.

Cases: a human with two devices (the second not yet merged at the edge), a Kafka redelivery (same event, new
offset), an event id reused for another payload, a late event (device clock behind), a backfilled event landing
in an earlier day's partition, a bot the hot path quarantined, a bot it missed (regular 2 s cadence), consent
revoked on day 2 (suppressed afterwards), a profile to erase, and no DLQ files at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streaming.sessions import SessionState, update_session
from warehouse.lake import STREAMS, write_batch

DAY1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
ALL = {"analytics": True, "marketing": True, "personalization": True, "sales": True}
ANALYTICS_ONLY = {"analytics": True, "marketing": False, "personalization": False, "sales": False}
NONE = {"analytics": False, "marketing": False, "personalization": False, "sales": False}
ERASED_PROFILE = "p-erase"


@dataclass
class Scenario:
    """Records per stream in arrival order, plus what the tests need to know about them."""

    streams: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {
        "events": [], "quarantine": [], "suppressed": []})
    states: dict[str, SessionState] = field(default_factory=dict)
    offset: int = 0

    def add(self, stream: str, *, device: str, ts: datetime, type_: str = "page", name: str | None = None,
            properties: dict[str, Any] | None = None, profile: str | None = None, user: str | None = None,
            email_hash: str | None = None, consent: dict[str, bool] | None = None,
            destinations: list[str] | None = None, is_bot: bool = False, revenue: float | None = None,
            event_id: str | None = None, policy_version: int = 1, score: float = 0.1) -> dict[str, Any]:
        self.offset += 1
        props = properties or {}
        state = self.states.setdefault(device, SessionState())
        session_id, features = update_session(state, device_id=device, ts=ts, type_=type_, event_name=name,
                                              properties=props)
        if destinations is None:
            destinations = {"events": ["dest.warehouse"], "quarantine": [], "suppressed": []}[stream]
        record = {
            "event_id": event_id or f"ev-{self.offset:04d}",
            "type": type_,
            "event_name": name,
            "anonymous_id": device,
            "user_id": user,
            "profile_id": profile or f"p-{device}",
            "device_id": device,
            "source_id": "web",
            "event_ts": ts.isoformat(),
            "received_at": (ts + timedelta(milliseconds=150)).isoformat(),
            "clock_skew_ms": 0,
            "session_id": session_id,
            "email_hash": email_hash,
            "user_agent": "HeadlessChrome/120" if is_bot else "Mozilla/5.0 Firefox/128",
            "country": "DE",
            "asn": "AS3320",
            "browser": "Firefox",
            "os": "Linux",
            "device_type": "desktop",
            "page_path": "/",
            "category": props.get("category"),
            "revenue": revenue,
            "properties": props,
            "traits": {},
            "consent": consent if consent is not None else ALL,
            "is_bot": is_bot,
            "bot_reasons": ["ua"] if is_bot else [],
            "bot_score": 0.99 if is_bot else 0.01,
            "score": score,
            "policy_version": policy_version,
            "destinations": destinations,
            "ledger": {"policy_version": policy_version},
            "raw_partition": 0,
            "raw_offset": self.offset,
            "kafka_topic": f"lake.{stream}",
            "kafka_partition": 0,
            "kafka_offset": self.offset,
            "features": features,
        }
        self.streams[stream].append(record)
        return record


def build(lake: Path) -> Scenario:
    sc = Scenario()
    t = DAY1
    # --- human h1 on device anon-h1 (profile p-h1): browses, buys on day 1 ---------------------------------
    h1 = {"device": "anon-h1", "profile": "p-h1"}
    sc.add("events", ts=t, **h1, properties={"path": "/"})
    sc.add("events", ts=t + timedelta(seconds=20), **h1, type_="track", name="Product Viewed",
           properties={"category": "shoes", "price": 20})
    added = sc.add("events", ts=t + timedelta(seconds=45), **h1, type_="track", name="Product Added",
                   properties={"category": "shoes", "price": 20, "quantity": 2})
    # late: the device clock is behind (event time before the previous event's)
    sc.add("events", ts=t + timedelta(seconds=30), **h1, type_="track", name="Product Viewed",
           properties={"category": "hats", "price": "12.5"})
    sc.add("events", ts=t + timedelta(seconds=90), **h1, type_="identify", user="u-1", email_hash="eh-1")
    sc.add("events", ts=t + timedelta(seconds=120), **h1, user="u-1", type_="track", name="Order Completed",
           properties={"revenue": 40.0}, revenue=40.0)
    sc.add("events", ts=t + timedelta(seconds=150), **h1, user="u-1")
    # Kafka redelivery of the cart add: same event, later offset and receipt
    redelivered = dict(added, kafka_offset=9000, received_at=(DAY1 + timedelta(minutes=5)).isoformat())
    sc.streams["events"].append(redelivered)

    # --- bot the hot path quarantined: 15 hits, 1 s apart -------------------------------------------------
    for i in range(15):
        sc.add("quarantine", device="bot-1", ts=t + timedelta(seconds=i), is_bot=True, score=0.0,
               properties={"path": f"/p/{i}"})

    # --- bot the hot path missed: 12 page views exactly 2 s apart, delivered as events ---------------------
    for i in range(12):
        sc.add("events", device="bot-2", ts=t + timedelta(minutes=10, seconds=2 * i), properties={"path": "/x"})

    # --- consent: c1 grants analytics on day 1, revokes on day 2; afterwards suppressed --------------------
    c1 = {"device": "anon-c1", "profile": "p-c1"}
    sc.add("events", ts=t + timedelta(minutes=20), **c1, consent=ANALYTICS_ONLY)
    sc.add("events", ts=t + timedelta(minutes=21), **c1, consent=ANALYTICS_ONLY, type_="track",
           name="Product Viewed", properties={"category": "books"})

    # --- an event id reused for another payload (not a retry) ----------------------------------------------
    sc.add("events", ts=t + timedelta(minutes=25), device="anon-r1", event_id="ev-reused")
    sc.add("events", ts=t + timedelta(minutes=26), device="anon-r2", event_id="ev-reused",
           type_="track", name="Signed Up")
    # another device's event under the same id: kept apart as ev-reused@anon-r2, not merged (B7)
    sc.streams["events"][-1]["received_at"] = (t + timedelta(hours=1)).isoformat()

    # --- the profile to erase --------------------------------------------------------------------------------
    for i in range(3):
        sc.add("events", device="anon-x", profile=ERASED_PROFILE, user="u-x", email_hash="eh-x",
               ts=t + timedelta(minutes=30, seconds=10 * i), properties={"category": "erase-me"})

    # microsecond event times (an SDK's timestamp rebased on the collector's clock): both engines truncate them to
    # whole milliseconds (DuckDB's epoch_ms would round .348999 up: a session id one millisecond off)
    us = DAY1 + timedelta(hours=3, microseconds=348_999)
    for i in range(3):
        sc.add("events", device="anon-us", ts=us + i * timedelta(seconds=7, microseconds=999_600))

    # --- day 2 --------------------------------------------------------------------------------------------
    t = DAY2
    # h1 again (new session: more than 30 min later)
    sc.add("events", ts=t, **h1, user="u-1")
    # a backfilled event from day 1 arriving on day 2 (lands in day 1's partition; it is late in its session)
    sc.add("events", ts=DAY1 + timedelta(seconds=170), **h1, user="u-1")
    # h1's second device: the user logs in; the edge has not merged it (profile p-h2)
    h2 = {"device": "anon-h2", "profile": "p-h2"}
    sc.add("events", ts=t + timedelta(minutes=5), **h2)
    sc.add("events", ts=t + timedelta(minutes=6), **h2, type_="identify", user="u-1", email_hash="eh-1")
    sc.add("events", ts=t + timedelta(minutes=7), **h2, user="u-1", type_="track", name="Product Added",
           properties={"category": "shoes", "price": 15, "quantity": 2})
    sc.add("events", ts=t + timedelta(minutes=8), **h2, user="u-1", type_="track", name="Order Completed",
           properties={"revenue": 30.0}, revenue=30.0, policy_version=2, score=0.9)
    # c1 revokes everything; later events of the profile are suppressed at the edge
    sc.add("suppressed", ts=t + timedelta(minutes=10), **c1, consent=NONE, type_="consent")
    sc.add("suppressed", ts=t + timedelta(minutes=11), **c1, consent=NONE)
    sc.add("suppressed", ts=t + timedelta(minutes=12), **c1, consent=NONE, type_="track", name="Product Viewed",
           properties={"category": "books"})
    # the lake sink's metadata stream: one row per delivery (topic with an installation prefix)
    if "deliveries" in STREAMS:
        deliveries = [dict(r, kafka_topic="fm." + dest) for r in sc.streams["events"] for dest in r["destinations"]]
        write_batch(lake, "deliveries", deliveries, file_stem="lake.deliveries+0+a")
    for stream, records in sc.streams.items():
        # two files per stream: the lake sink writes one file per Kafka batch
        half = len(records) // 2
        if records:
            write_batch(lake, stream, records[:half], file_stem=f"lake.{stream}+0+a")
            write_batch(lake, stream, records[half:], file_stem=f"lake.{stream}+0+b")
    return sc


def unique_events(sc: Scenario) -> list[dict[str, Any]]:
    """The events the warehouse keeps: the first delivery per event id and device (earliest received_at, then Kafka
    offset); an id another device used first (a person's event over a quarantined bot's) is kept as
    ``<event_id>@<device_id>``, with ``sent_event_id`` the id as sent."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for stream, records in sc.streams.items():
        for r in records:
            key = (r["received_at"], r["kafka_offset"])
            slot = (r["event_id"], r.get("device_id") or "")
            known = first.get(slot)
            if known is None or key < (known["received_at"], known["kafka_offset"]):
                first[slot] = dict(r, stream=stream, sent_event_id=r["event_id"])
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in first.values():
        by_id.setdefault(r["event_id"], []).append(r)
    out = []
    for rows in by_id.values():
        rows.sort(key=lambda r: (r["stream"] == "quarantine", r["received_at"], r["kafka_offset"]))
        out.append(rows[0])
        out += [dict(r, event_id=f"{r['event_id']}@{r.get('device_id') or ''}") for r in rows[1:]]
    return out


def python_features(events: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, float]]]:
    """Recompute the session features with the hot path's own code over the kept events, per device in order."""
    out: dict[str, tuple[str, dict[str, float]]] = {}
    states: dict[str, SessionState] = {}
    for r in sorted(events, key=lambda r: (r["device_id"], r["raw_partition"], r["raw_offset"])):
        props = r["properties"] if isinstance(r["properties"], dict) else json.loads(r["properties"] or "{}")
        state = states.setdefault(r["device_id"], SessionState())
        out[r["event_id"]] = update_session(
            state, device_id=r["device_id"], ts=datetime.fromisoformat(r["event_ts"]), type_=r["type"],
            event_name=r["event_name"], properties=props)
    return out


#: h2 (merged into h1 by the warehouse, see :func:`build`) decides on a consent event, then revokes marketing on an
#: event no destination received (:func:`add_merged_profile_consent`).
H2_CONSENT_AT = DAY2 + timedelta(minutes=9)
H2_REVOKED_AT = DAY2 + timedelta(minutes=9, seconds=30)


def add_merged_profile_consent(lake: Path, sc: Scenario) -> None:
    """h2's consent decisions, in a third file per stream: a consent event whose ledger lists what it changed, then
    a stage-2 suppression (its ledger has no ``consent_changed``, only what was granted after it)."""
    h2 = {"device": "anon-h2", "profile": "p-h2", "user": "u-1"}
    granted = sc.add("events", ts=H2_CONSENT_AT, **h2, type_="consent", consent=ALL)
    granted["ledger"] = {"policy_version": 1, "consent_changed": ["analytics", "marketing"]}
    revoked = sc.add("suppressed", ts=H2_REVOKED_AT, **h2, type_="consent", consent={**ALL, "marketing": False})
    revoked["ledger"] = {"policy_version": 1, "decision": "suppressed", "purposes": revoked["consent"]}
    write_batch(lake, "events", [granted], file_stem="lake.events+0+c")
    write_batch(lake, "suppressed", [revoked], file_stem="lake.suppressed+0+c")


def received_ms(ts: datetime) -> int:
    """Epoch ms of a decision as the hot path records it: the event's receipt (150 ms later, :meth:`Scenario.add`)."""
    return int((ts + timedelta(milliseconds=150)).timestamp() * 1000)
