"""Whether an event is decided at all: an erased person's events and client retries are suppressed before any
decision, in stage 1, on the device's state.

* **Erasure.** An event of an id the policy lists in ``erased_ids`` erases its device: the device's state is
  forgotten and it stays erased, so its later anonymous events are suppressed too.
* **Retries.** A client retry re-sends the same ``event_id``: it is decided once and never folded into the session
  twice. The device remembers the fingerprints of its last :data:`RECENT_IDS` events (retries come seconds apart,
  not days); the same id with another payload is an id reused (robots do it), suppressed too but told apart so the
  warehouse lists it as a conflict instead of taking it for a retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Set

import orjson

from streaming.contract import Event
from streaming.decided import SuppressionReason
from streaming.keyed_state import State

#: Event ids remembered per device to recognise client retries (they come seconds apart, not days).
RECENT_IDS = 32
#: The parts of a device's state an erasure forgets.
FORGOTTEN_ON_ERASURE = ("identity", "session", "device_consent", "recent_ids")


def event_fingerprint(event_id: str) -> str:
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).hexdigest()


def payload_fingerprint(event: Event) -> str:
    """What a client retry repeats exactly (not received_at, which the collector stamps anew on each attempt)."""
    body = orjson.dumps([event.type, event.event, event.name, event.user_id,
                         (event.original_timestamp or event.timestamp).isoformat(), event.properties, event.traits],
                        option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(body, digest_size=4).hexdigest()


def erase_if_listed(event: Event, state: State, erased_ids: Set[str]) -> bool:
    """True if the device is erased (now, or by an earlier event); an erasure forgets the device's state."""
    if state.get("erased") or (erased_ids and (event.anonymous_id in erased_ids or event.user_id in erased_ids)):
        state.set("erased", True)
        for part in FORGOTTEN_ON_ERASURE:
            state.set(part, None)
        return True
    return False


def repeat_of_recent(event: Event, state: State, payload_hash: str | None = None) -> SuppressionReason | None:
    """``duplicate_event_id`` (same id and payload) or ``event_id_reused`` (same id, other payload) if the device saw
    this event id recently; else None, and the id is remembered. ``payload_hash``: :func:`payload_fingerprint` of
    the event when the caller already has it (it goes on the record: the warehouse compares payloads with it)."""
    recent = state.get("recent_ids") or []
    id_print = event_fingerprint(event.event_id)
    fingerprint = f"{id_print}:{payload_hash or payload_fingerprint(event)}"
    seen = next((r for r in recent if r.startswith(id_print)), None)
    if seen is not None:
        return "duplicate_event_id" if seen == fingerprint else "event_id_reused"
    state.set("recent_ids", [*recent[-(RECENT_IDS - 1):], fingerprint])  # a new list: the stored one is untouched
    return None


def admit(event: Event, state: State, erased_ids: Set[str],
          payload_hash: str | None = None) -> SuppressionReason | None:
    """None if the event is to be decided; else why it is suppressed (erasure first: an erased device's retry is
    an erased person's event)."""
    if erase_if_listed(event, state, erased_ids):
        return "erased"
    return repeat_of_recent(event, state, payload_hash)
