"""Whether an event is decided at all: an erased person's events and client retries are suppressed before any
decision, in stage 1, on the device's state.

* **Erasure.** An event of an id the policy lists in ``erased_ids`` erases its device: the device's state is
  forgotten and it stays erased, so its later anonymous events are suppressed too.
* **Retries.** A client retry re-sends the same ``event_id``: it is decided once and never folded into the session
  twice, however large the retried queue (mobile SDKs flush up to 100 events per request and keep up to 1,000
  queued). The device remembers every event it admitted within :data:`RETRY_WINDOW_S`, at most
  :data:`MAX_REMEMBERED` (the newest), as one string of its state: 15 bytes per event (receive second mod 2^24, id
  hash, payload hash), each base64-encoded on its own into 20 characters, so the string is searched for an id
  (``str.find``, C speed), appended to and trimmed without decoding it. The same id with another payload is an id
  reused (robots do it), suppressed too but told apart so the warehouse lists it as a conflict instead of taking it
  for a retry.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Set

import orjson

from streaming.contract import Event
from streaming.decided import SuppressionReason
from streaming.keyed_state import State

#: How long a device remembers the events it admitted (a retried queue can come back hours later, after the app
#: was closed offline), and at most how many (the newest): Segment's mobile SDKs keep up to 1,000 events queued.
RETRY_WINDOW_S = 24 * 3600
MAX_REMEMBERED = 1024
#: The parts of a device's state an erasure forgets.
FORGOTTEN_ON_ERASURE = ("identity", "session", "device_consent", "recent_ids")
_CHUNK = 20  # characters per remembered event: base64 of 3 + 8 + 4 bytes, encoded on its own
_ID_AT = 4  # the id hash's first 6 bytes are characters 4-11 of a chunk (whole 3-byte groups)
_WRAP = 1 << 24  # receive seconds are kept mod 2^24 (194 days): only ages within the window are compared


def event_fingerprint(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()


def payload_fingerprint(event: Event) -> str:
    """What a client retry repeats exactly (not received_at, which the collector stamps anew on each attempt)."""
    body = orjson.dumps([event.type, event.event, event.name, event.user_id,
                         (event.original_timestamp or event.timestamp).isoformat(), event.properties, event.traits],
                        option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(body, digest_size=4).hexdigest()


def _chunk(second: int, id_print: bytes, payload: bytes) -> str:
    return binascii.b2a_base64((second % _WRAP).to_bytes(3, "big") + id_print + payload, newline=False).decode()


def _find(remembered: str, id_print: bytes) -> int:
    """Where the chunk of ``id_print`` starts in ``remembered``, or -1."""
    key = binascii.b2a_base64(id_print[:6], newline=False).decode()
    pos = remembered.find(key, _ID_AT)
    while pos != -1:
        if pos % _CHUNK == _ID_AT:
            return pos - _ID_AT
        pos = remembered.find(key, pos + 1)
    return -1


def _age_s(remembered: str, at: int, second: int) -> int:
    """Seconds since the chunk at ``at`` was received (negative: after ``second``, events arrive out of order)."""
    age = (second - int.from_bytes(binascii.a2b_base64(remembered[at:at + 4]), "big")) % _WRAP
    return age - _WRAP if age > _WRAP // 2 else age


def _remember(remembered: str, second: int, id_print: bytes, payload: bytes) -> str:
    """``remembered`` with the new event, without events older than the window, at most the newest
    :data:`MAX_REMEMBERED`."""
    start = max(0, len(remembered) - (MAX_REMEMBERED - 1) * _CHUNK)
    while start < len(remembered) and _age_s(remembered, start, second) > RETRY_WINDOW_S:
        start += _CHUNK
    return remembered[start:] + _chunk(second, id_print, payload)


def erase_if_listed(event: Event, state: State, erased_ids: Set[str]) -> bool:
    """True if the device is erased (now, or by an earlier event); an erasure forgets the device's state."""
    if state.get("erased") or (erased_ids and (event.anonymous_id in erased_ids or event.user_id in erased_ids)):
        state.set("erased", True)
        for part in FORGOTTEN_ON_ERASURE:
            state.set(part, None)
        return True
    return False


def repeat_of_recent(event: Event, state: State, payload_hash: str | None = None) -> SuppressionReason | None:
    """``duplicate_event_id`` (same id and payload) or ``event_id_reused`` (same id, other payload) if the device
    admitted this event id within the window; else None, and the event is remembered. ``payload_hash``:
    :func:`payload_fingerprint` of the event when the caller already has it (it goes on the record: the warehouse
    compares payloads with it)."""
    stored = state.get("recent_ids")
    remembered = stored if isinstance(stored, str) else ""  # (a list: the 32-id window of earlier versions)
    id_print = event_fingerprint(event.event_id)
    payload = bytes.fromhex(payload_hash or payload_fingerprint(event))
    at = _find(remembered, id_print)
    if at != -1:
        kept = binascii.a2b_base64(remembered[at:at + _CHUNK])[11:]
        return "duplicate_event_id" if kept == payload else "event_id_reused"
    state.set("recent_ids", _remember(remembered, int(event.received_at.timestamp()), id_print, payload))
    return None


def admit(event: Event, state: State, erased_ids: Set[str],
          payload_hash: str | None = None) -> SuppressionReason | None:
    """None if the event is to be decided; else why it is suppressed (erasure first: an erased device's retry is
    an erased person's event)."""
    if erase_if_listed(event, state, erased_ids):
        return "erased"
    return repeat_of_recent(event, state, payload_hash)
