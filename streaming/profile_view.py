"""The live profile the application reads: stage 2 publishes it after every decided event of the profile.

Two compacted topics, read by the serving process (:mod:`streaming.serving`) as a broadcast:

* ``profiles`` (key: profile id): :class:`ProfileView` — consent per purpose granted now, segment and action,
  propensity and bot scores, the session-so-far features, the devices and user id linked to it (as the hot path
  holds them: pseudonymized), the last event (its time, ids, where it went and its ledger), the policy version that
  decided it, and per ``events.raw`` partition the last input offset it reflects (read-your-writes). An erased
  profile gets a tombstone.
* ``profiles.devices`` (key: device id, as events carry it): ``{"profile_id", "at"}`` — which profile a device
  belongs to now, published when the profile first sees the device (a device that moves — a login, a merge — is
  published again by its new profile; compaction keeps the latest).

Every served field needs a purpose (:data:`FIELD_PURPOSES`): the serving process leaves out a field whose purpose is
not granted at read time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streaming import settings as topics
from streaming.decided import iso
from streaming.keyed_state import State
from streaming.outputs import Output
from streaming.policy import CompiledPolicy

#: A profile remembers at most this many devices (the newest), for its view and the device index.
MAX_DEVICES = 32
#: The purpose a served field needs; fields not listed are about the profile itself and always served.
FIELD_PURPOSES: dict[str, str] = {
    "segment": "personalization", "action": "personalization", "scores": "personalization",
    "features": "analytics", "last_event": "analytics",
}


def profile_outputs(record: dict[str, Any], state: State, policy: CompiledPolicy, granted: dict[str, bool],
                    *, erased: bool) -> list[Output]:
    """The profile's new view (and its device's entry when the profile sees the device for the first time);
    a tombstone for an erased profile."""
    profile_id = record["profile_id"]
    if erased:
        return [Output(topics.PROFILES, profile_id, None)]
    out: list[Output] = []
    devices: list[str] = state.get("devices") or []
    device = record.get("device_id")
    if device and device not in devices:
        devices = [*devices[-(MAX_DEVICES - 1):], device]
        state.set("devices", devices)
        out.append(Output(topics.PROFILE_DEVICES, device, {"profile_id": profile_id, "at": record["received_at"]}))
    offsets: dict[str, int] = state.get("offsets") or {}
    part = str(record.get("raw_partition"))
    if record.get("raw_offset") is not None and offsets.get(part, -1) < record["raw_offset"]:
        offsets = {**offsets, part: record["raw_offset"]}
        state.set("offsets", offsets)
    user_id = record.get("user_id")
    if user_id and state.get("user_id") != user_id:
        state.set("user_id", user_id)
    user_id = user_id or state.get("user_id")  # an anonymous event after a login keeps the profile's user id
    segment_id = state.get("segment")
    action = next((s.action for s in policy.segments if s.id == segment_id), None) if segment_id else None
    ledger = record["ledger"]
    out.append(Output(topics.PROFILES, profile_id, {
        "profile_id": profile_id,
        "user_id": user_id,
        "devices": devices,
        "consent": granted,
        "segment": segment_id,
        "action": action,
        "scores": {"propensity": record.get("score"), "bot": record.get("bot_score")},
        "features": record.get("features") or {},
        "last_event": {"event_id": record["event_id"], "type": record["type"], "event_name": record["event_name"],
                       "event_ts": record["event_ts"], "session_id": record.get("session_id"),
                       "device_id": device, "destinations": record.get("destinations") or [],
                       "ledger": ledger},
        "last_event_at": record["event_ts"],
        "policy_version": ledger.get("routed_by_policy_version") or record["policy_version"],
        "offsets": offsets,
        "decided_at": iso(datetime.now(UTC)),
    }))
    return out
