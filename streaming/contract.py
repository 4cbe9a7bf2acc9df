"""The event contract: the Segment-style wire format in, one versioned internal schema out.

On the wire (collector) events follow the Segment HTTP tracking API (camelCase: ``messageId``, ``anonymousId``,
``userId``, ``timestamp``, ``sentAt``, ``context``, ...). :func:`from_segment` turns one wire event into the
internal schema that ``events.raw`` carries; :func:`parse_raw` validates bytes from ``events.raw`` and raises
:class:`InvalidEvent` with a machine-readable ``reason`` for the dead-letter topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from streaming.errors import FirstmileError

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 32 * 1024
MAX_DEPTH = 8
MAX_ID_LENGTH = 256

#: ``group`` (Segment's account association) is accepted so that trackers' batches are never rejected for it.
EventType = Literal["page", "track", "identify", "alias", "consent", "group"]
EVENT_TYPES: tuple[str, ...] = ("page", "track", "identify", "alias", "consent", "group")


class InvalidEvent(FirstmileError, ValueError):
    """An event that breaks the contract. ``reason`` is a stable code; ``detail`` says where."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Page(msgspec.Struct, omit_defaults=True):
    url: str | None = None
    path: str | None = None
    referrer: str | None = None
    title: str | None = None


class Context(msgspec.Struct, omit_defaults=True):
    ip: str | None = None
    user_agent: str | None = None
    page: Page | None = None
    locale: str | None = None
    timezone: str | None = None
    #: IAB TCF v2 consent string, as trackers send it (``context.consent.tcString`` or ``context.tcf``).
    tcf: str | None = None


class Event(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Internal schema v1 of an event on ``events.raw``. Unknown fields are ignored, not rejected."""

    schema_version: int = SCHEMA_VERSION
    type: EventType
    event_id: str
    anonymous_id: str | None = None
    user_id: str | None = None
    event: str | None = None
    name: str | None = None
    timestamp: datetime
    received_at: datetime
    sent_at: datetime | None = None
    original_timestamp: datetime | None = None
    #: sentAt minus receivedAt, in ms, kept visible (Segment corrects timestamp by it and forgets it).
    clock_skew_ms: int = 0
    source_id: str = "unknown"
    previous_id: str | None = None
    context: Context = msgspec.field(default_factory=Context)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Purposes set by a ``consent`` event: {"analytics": true, "marketing": false, ...}.
    consent: dict[str, bool] | None = None

    @property
    def device_id(self) -> str:
        """The key of ``events.raw``: the device (anonymous id), else the user id."""
        return self.anonymous_id or self.user_id or ""


_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def _depth(value: Any, limit: int, level: int = 1) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max((_depth(v, limit, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, limit, level + 1) for v in value), default=level)
    return level


def parse_raw(raw: bytes | None, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Validate bytes from ``events.raw``. Raises :class:`InvalidEvent`; never anything else."""
    if raw is None:
        raise InvalidEvent("empty", "message has no value")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_utf8", f"invalid byte at position {exc.start}") from None
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "missing required field `event_id`" in text:
            raise InvalidEvent("missing_id", text) from None
        raise InvalidEvent("schema", text) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidEvent("invalid_json", str(exc)[:200]) from None
    if not event.event_id.strip() or len(event.event_id) > MAX_ID_LENGTH:
        raise InvalidEvent("missing_id", "event_id is empty or longer than 256 characters")
    if not (event.anonymous_id or event.user_id):
        raise InvalidEvent("missing_identity", "one of anonymous_id or user_id is required")
    if event.schema_version != SCHEMA_VERSION:
        raise InvalidEvent("schema_version", f"unsupported schema_version {event.schema_version}")
    if event.type == "track" and not event.event:
        raise InvalidEvent("schema", "a track event needs `event` (its name) - at `$.event`")
    if event.type == "consent" and event.consent is None and not event.context.tcf:
        raise InvalidEvent("schema", "a consent event needs `consent` purposes or `context.tcf`")
    for field_name in ("properties", "traits"):
        if _depth(getattr(event, field_name), MAX_DEPTH) > MAX_DEPTH:
            raise InvalidEvent("too_deep", f"`{field_name}` nests deeper than {MAX_DEPTH} levels")
    return event


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def to_dict(event: Event) -> dict[str, Any]:
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


# --- the wire format -------------------------------------------------------------------------------------------

_SEGMENT_TYPES = {"page": "page", "screen": "page", "track": "track", "identify": "identify", "alias": "alias",
                  "consent": "consent", "group": "group"}


def _parse_time(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent("schema", f"`{field}` must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent("schema", f"`{field}` is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if not parsed.tzinfo:
        return parsed.replace(tzinfo=UTC)
    # In UTC here, so an offset at the range's edge (0001-01-01T00:00+05:00) is this field's InvalidEvent, not an
    # OverflowError from _iso later (found by scenario 11's fuzzer).
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent("schema", f"`{field}` is out of range in UTC: {value[:40]!r}") from None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_segment(payload: dict[str, Any], *, source_id: str, received_at: datetime,
                 batch_sent_at: Any = None, kind: str | None = None) -> dict[str, Any]:
    """One Segment/RudderStack wire event → the internal schema (a dict ready for ``events.raw``).

    Clock skew is corrected as Segment does: ``timestamp = receivedAt - (sentAt - originalTimestamp)``, and the
    skew is kept in ``clock_skew_ms``. Raises :class:`InvalidEvent` naming the field at fault.
    """
    if not isinstance(payload, dict):
        raise InvalidEvent("schema", "an event must be a JSON object")
    raw_type = payload.get("type") or kind
    # isinstance first: an object or array `type` made the lookup raise TypeError (found by scenario 11's fuzzer)
    if not isinstance(raw_type, str) or raw_type not in _SEGMENT_TYPES:
        raise InvalidEvent("schema", f"`type` must be one of {sorted(_SEGMENT_TYPES)}, got {raw_type!r}")
    event_id = payload.get("messageId")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("missing_id", "`messageId` is required (the dedupe key)")
    anonymous_id = payload.get("anonymousId")
    user_id = payload.get("userId")
    for name, value in (("anonymousId", anonymous_id), ("userId", user_id)):
        if value is not None and not isinstance(value, str | int):
            raise InvalidEvent("schema", f"`{name}` must be a string")
    anonymous_id = str(anonymous_id) if anonymous_id not in (None, "") else None
    user_id = str(user_id) if user_id not in (None, "") else None
    if not (anonymous_id or user_id):
        raise InvalidEvent("missing_identity", "one of `anonymousId` or `userId` is required")

    original = _parse_time(payload.get("timestamp") or payload.get("originalTimestamp"), "timestamp")
    sent_at = _parse_time(payload.get("sentAt") or batch_sent_at, "sentAt")
    skew_ms = 0
    if original is None:
        timestamp = received_at
    elif sent_at is not None:
        skew = sent_at - received_at
        skew_ms = int(skew.total_seconds() * 1000)
        try:
            timestamp = original - skew
        except OverflowError:
            raise InvalidEvent("schema", "`timestamp` corrected by the `sentAt` clock skew is out of range") from None
    else:
        timestamp = original

    context = payload.get("context") or {}
    if not isinstance(context, dict):
        raise InvalidEvent("schema", "`context` must be an object")
    page = context.get("page") if isinstance(context.get("page"), dict) else None
    properties = payload.get("properties") or {}
    traits = payload.get("traits") or context.get("traits") or {}
    if not isinstance(properties, dict):
        raise InvalidEvent("schema", "`properties` must be an object")
    if not isinstance(traits, dict):
        raise InvalidEvent("schema", "`traits` must be an object")
    consent_ctx: dict[str, Any] = context["consent"] if isinstance(context.get("consent"), dict) else {}
    tcf = context.get("tcf") or consent_ctx.get("tcString") or consent_ctx.get("tcfString")

    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "type": _SEGMENT_TYPES[raw_type],
        "event_id": event_id,
        "anonymous_id": anonymous_id,
        "user_id": user_id,
        "timestamp": _iso(timestamp),
        "received_at": _iso(received_at),
        "clock_skew_ms": skew_ms,
        "source_id": source_id,
        "context": {
            "ip": context.get("ip"),
            "user_agent": context.get("userAgent"),
            "page": {k: page.get(k) for k in ("url", "path", "referrer", "title") if page.get(k) is not None}
            if page else None,
            "locale": context.get("locale"),
            "timezone": context.get("timezone"),
            "tcf": tcf if isinstance(tcf, str) else None,
        },
        "properties": properties,
        "traits": traits,
    }
    if original is not None:
        out["original_timestamp"] = _iso(original)
    if sent_at is not None:
        out["sent_at"] = _iso(sent_at)
    if payload.get("event") is not None:
        out["event"] = str(payload["event"])
    if payload.get("name") is not None:
        out["name"] = str(payload["name"])
    if payload.get("previousId") is not None:
        out["previous_id"] = str(payload["previousId"])
    if payload.get("groupId") is not None:
        out["properties"] = {**properties, "group_id": str(payload["groupId"])}
    if out["type"] == "consent":
        purposes = payload.get("consent") or properties.get("purposes") or consent_ctx.get("purposes")
        if purposes is not None:
            if not isinstance(purposes, dict) or not all(isinstance(v, bool) for v in purposes.values()):
                raise InvalidEvent("schema", "`consent` must map purpose names to true/false")
            out["consent"] = purposes
    out["context"] = {k: v for k, v in out["context"].items() if v is not None}
    return {k: v for k, v in out.items() if v is not None}
