"""What the two stages emit: an :class:`Output` (topic, key, value) per record, each value in the shape
:mod:`streaming.decided` declares.

Stage 1's record is built through :class:`~streaming.decided.DeviceRecord`; the others are dict displays (cheaper
on paths that are rare or small), checked against their Structs by ``tests/streaming/test_decided.py``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from streaming import facts as fact_catalog
from streaming import pii
from streaming import settings as topics
from streaming.contract import Event, InvalidEvent
from streaming.decided import (
    HANDOFF,
    ConsentDecisions,
    ControlOffsets,
    Decided,
    DeviceRecord,
    Handoff,
    Ledger,
    RuleError,
    Scores,
    field_names,
    iso,
    utc,
)
from streaming.enrich import Device, Geo
from streaming.identity import Link
from streaming.policy import CompiledPolicy, Segment
from streaming.routing import Routing
from streaming.scoring import BotVerdict
from streaming.sessions import FEATURES

#: The repartition: stage 1's output for stage 2, keyed by profile.
PROFILE = "profile"
#: Product fields a stage-2 suppression keeps (no personal data), so the warehouse can recompute the features of the
#: session's later, consented events exactly (one definition, two engines).
SESSION_INPUTS = ("category", "price", "quantity")
#: Facts stage 2 reads from the record's own columns (:class:`~streaming.decided.Decided`), in catalog order.
FACT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fact_catalog.CATALOG if f.name in field_names(Decided))
#: Facts that are neither columns nor session features: they travel in :attr:`Handoff.facts`.
HANDOFF_FACTS: tuple[str, ...] = tuple(f.name for f in fact_catalog.CATALOG
                                       if f.name not in FACT_COLUMNS and f.name not in FEATURES)


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: str | None
    #: None only on a compacted topic: a tombstone
    value: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the input came from (kept on every output so the warehouse can order and trace)."""

    partition: int = 0
    offset: int = 0


def dead_letter(raw: bytes | None, error: InvalidEvent, origin: Origin, *, key: bytes | str | None) -> Output:
    """``events.dlq`` (:class:`~streaming.decided.DeadLetter`): the reason and the original bytes."""
    event_id = None
    if raw:
        try:
            parsed = orjson.loads(raw)
            candidate = parsed.get("event_id") if isinstance(parsed, dict) else None
            event_id = candidate if isinstance(candidate, str) else None
        except Exception:  # the bytes are invalid: that is why we are here
            event_id = None
    value = {
        "event_id": event_id,
        "reason": error.reason,
        "detail": error.detail[:500],
        "original": base64.b64encode(raw or b"").decode("ascii"),
        "received_at": iso(datetime.now(UTC)),
        "raw_partition": origin.partition,
        "raw_offset": origin.offset,
    }
    key_str = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return Output(topics.DLQ, key_str, value)


def suppression(event: Event, policy: CompiledPolicy, origin: Origin, *, reason: str, key: str,
                payload_hash: str | None, control: ControlOffsets | None = None) -> Output:
    """Stage 1's ledger-only record (:class:`~streaming.decided.Suppressed`) of an event nobody may receive (no
    payload kept, only its hash; an erased person's without identifiers or hash)."""
    ledger: dict[str, Any] = {"policy_version": policy.version, "decision": "suppressed", "reason": reason}
    if payload_hash and reason != "erased":
        ledger["payload_hash"] = payload_hash
    if control is not None:
        ledger["control"] = {"identity": control.identity, "erasure": control.erasure}
    return Output(topics.SUPPRESSED, key, {
        "event_id": event.event_id, "type": event.type, "event_name": event.event or event.name,
        "anonymous_id": None if reason == "erased" else event.anonymous_id,
        "user_id": None if reason == "erased" else event.user_id,
        "device_id": None if reason == "erased" else event.device_id,
        "event_ts": iso(event.timestamp), "received_at": iso(event.received_at),
        "policy_version": policy.version, "consent": None, "destinations": [], "is_bot": False,
        "raw_partition": origin.partition, "raw_offset": origin.offset, "features": {},
        "ledger": ledger,
    })


def decided_record(event: Event, *, link: Link, geo: Geo, device: Device, crawler_pattern: str | None,
                   session_id: str, features: dict[str, float], facts: dict[str, Any], verdict: BotVerdict,
                   scores: Scores, errors: list[dict[str, str]], consent_note: str | None, policy: CompiledPolicy,
                   origin: Origin, secret: bytes, payload_hash: str | None = None,
                   control: ControlOffsets | None = None) -> dict[str, Any]:
    """Stage 1's decided record (:class:`~streaming.decided.DeviceRecord`) with its ledger; stage 2, or the
    quarantine, adds ``consent`` and ``destinations``. Personal data leaves only hashed or truncated."""
    ip = event.context.ip
    email = event.traits.get("email") if isinstance(event.traits.get("email"), str) else None
    page = event.context.page
    ledger = Ledger(
        policy_version=policy.version,
        policy_checksum=policy.checksum,
        rules_fired=verdict.fired,
        shadow_rules_fired=verdict.shadow,
        scores=scores,
        crawler_pattern=crawler_pattern,
        ua_reasons=fact_catalog.ua_reasons(facts),
        identity=link.identity,
        consent_note=consent_note,
        errors=[RuleError(rule=e["rule"], error=e["error"]) for e in errors] if errors else None,
        payload_hash=payload_hash,
        control=control,
    )
    record = DeviceRecord(
        event_id=event.event_id,
        type=event.type,
        event_name=facts["event_name"],
        anonymous_id=event.anonymous_id,
        user_id=event.user_id,
        profile_id=link.profile_id,
        device_id=event.device_id,
        source_id=event.source_id,
        event_ts=utc(event.timestamp),
        received_at=utc(event.received_at),
        clock_skew_ms=event.clock_skew_ms,
        session_id=session_id,
        ip_hash=pii.keyed_hash(ip, secret) if ip else None,
        ip_prefix=pii.truncate_ip(ip),
        email_hash=pii.keyed_hash(email, secret) if email else None,
        user_agent=event.context.user_agent,
        country=geo.country,
        region=facts["region"],
        asn=geo.asn,
        datacenter=facts["datacenter"],
        ua_crawler=facts["ua_crawler"],
        browser=device.browser,
        os=device.os,
        device_type=device.device_type,
        page_path=pii.scrub_url(page.path or page.url, secret) if page else None,
        category=facts["category"],
        revenue=facts["revenue"],
        properties=pii.scrub(event.properties, secret),
        traits=pii.scrub(event.traits, secret),
        features=features,
        is_bot=verdict.is_bot,
        bot_reasons=verdict.fired,
        bot_score=scores.bot,
        score=scores.propensity,
        policy_version=policy.version,
        raw_partition=origin.partition,
        raw_offset=origin.offset,
        ledger=ledger,
    )
    return msgspec.to_builtins(record)  # type: ignore[no-any-return]


def quarantine(record: dict[str, Any], *, key: str) -> Output:
    """A bot's event: ``events.quarantine``, keyed by its device; it never reaches stage 2."""
    record["consent"] = None
    record["destinations"] = [topics.QUARANTINE]
    record["ledger"]["decision"] = "quarantined"
    return Output(topics.QUARANTINE, key, record)


def for_profile(record: dict[str, Any], facts: dict[str, Any], consent: ConsentDecisions | None,
                device_consent: dict[str, Any] | None) -> Output:
    """The record for stage 2, keyed by profile, with the :class:`~streaming.decided.Handoff`: the facts that are
    not columns, what the event decided, and the device's anonymous consent when this event links the device."""
    # As its JSON object, in process too: Quix copies a value by pickling it when a dataframe branches, and a Struct
    # pickles 3-4x slower than a dict (the worker's stage 1 branches); stage 2 reads it back as the Struct.
    record[HANDOFF] = msgspec.to_builtins(Handoff(facts={k: facts[k] for k in HANDOFF_FACTS}, consent=consent,
                                                  device_consent=device_consent or None))
    return Output(PROFILE, record["profile_id"], record)


def personalization(record: dict[str, Any], segment: Segment, policy: CompiledPolicy) -> Output:
    """The profile's new segment on the compacted ``decisions`` topic (:class:`~streaming.decided.ProfileDecision`)."""
    return Output(topics.DECISIONS, record["profile_id"], {
        "profile_id": record["profile_id"], "segment": segment.id, "action": segment.action,
        "score": record.get("score"), "event_id": record["event_id"], "session_id": record["session_id"],
        "policy_version": policy.version, "decided_at": iso(datetime.now(UTC)),
    })


def deliveries(record: dict[str, Any], routing: Routing, granted: dict[str, bool], errors: list[dict[str, str]],
               policy: CompiledPolicy) -> list[Output]:
    """The record once per destination that receives it; if none may, stage 2's ledger-only suppression
    (:class:`~streaming.decided.Suppressed`, without the payload: it may not be kept)."""
    if routing.chosen:
        return [Output(destination, record["profile_id"], record) for destination in routing.chosen]
    return [Output(topics.SUPPRESSED, record["profile_id"], {
        "event_id": record["event_id"], "type": record["type"], "event_name": record["event_name"],
        "anonymous_id": record["anonymous_id"], "user_id": record["user_id"],
        "profile_id": record["profile_id"], "device_id": record["device_id"], "session_id": record["session_id"],
        "event_ts": record["event_ts"], "received_at": record["received_at"], "country": record["country"],
        "category": record["category"],
        "properties": {k: record["properties"][k] for k in SESSION_INPUTS if k in record["properties"]},
        "policy_version": record["policy_version"], "consent": granted, "destinations": [], "is_bot": False,
        "raw_partition": record["raw_partition"], "raw_offset": record["raw_offset"], "features": {},
        "ledger": {"policy_version": record["policy_version"], "destinations": routing.reasons, "purposes": granted,
                   "decision": "suppressed", **({"errors": errors} if errors else {}),
                   **({"routed_by_policy_version": policy.version} if policy.version != record["policy_version"]
                      else {})},
    })]
