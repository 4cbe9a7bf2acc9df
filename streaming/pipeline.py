"""The first-mile decision, as pure functions over plain data. The Quix app (:mod:`streaming.worker`) only wires them.

Two stages, because state must live on the partition that owns its key (ARCHITECTURE.md):

* :func:`decide_device` runs keyed by device (the key of ``events.raw``): validation, identity lookup, enrichment,
  session features, scores and bot rules. Invalid events leave here for ``events.dlq``, bots for
  ``events.quarantine``; everything else continues keyed by profile.
* :func:`decide_profile` runs keyed by profile after a repartition: consent (so a revocation on one device cuts off
  the very next event of every stitched device), routing, personalization decisions and the ledger.

Every output is an :class:`Output` (topic name, key, value). Accounting: each input yields exactly one of a DLQ
record, a quarantine record, one or more destination records, or a suppression record — never none.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from streaming import bots, enrich, pii
from streaming import facts as fact_catalog
from streaming import settings as topics
from streaming.consent import ConsentState, InvalidConsentString, purposes_from_tcf, region_of
from streaming.contract import Event, InvalidEvent, parse_raw
from streaming.policy import CompiledPolicy
from streaming.sessions import SessionState, update_session
from warehouse.lake import DECIDED_SCHEMA

logger = logging.getLogger(__name__)

SESSION_INPUTS = ("category", "price", "quantity")
#: Event ids remembered per device to recognise client retries (they come seconds apart, not days).
RECENT_IDS = 32
#: Facts that travel to stage 2 as columns of the decided record itself (the rest travel in ``_facts``; session
#: features in ``features``).
FACT_COLUMNS = tuple(f.name for f in fact_catalog.CATALOG if f.name in DECIDED_SCHEMA)


class State(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...


class DictState:
    """A plain-dict :class:`State` for tests and batch replays."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: str | None
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the input came from (kept on every output so the warehouse can order and trace)."""

    partition: int = 0
    offset: int = 0


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _consent_decisions(event: Event, policy: CompiledPolicy) -> tuple[dict[str, bool], str | None]:
    """Purposes an event decides: its ``consent`` map and/or its TCF string. Malformed TCF decides nothing."""
    decisions: dict[str, bool] = {}
    note = None
    if event.context.tcf:
        try:
            decisions.update(purposes_from_tcf(event.context.tcf, policy.tcf_purposes))
        except InvalidConsentString as exc:
            note = f"tcf_invalid: {exc}"
    if event.consent:
        decisions.update({k: bool(v) for k, v in event.consent.items()})
    return decisions, note


def dead_letter(raw: bytes | None, error: InvalidEvent, origin: Origin, *, key: bytes | str | None) -> Output:
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
        "received_at": _iso(datetime.now(UTC)),
        "raw_partition": origin.partition,
        "raw_offset": origin.offset,
    }
    key_str = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return Output(topics.DLQ, key_str, value)


def suppression(event: Event, policy: CompiledPolicy, origin: Origin, *, reason: str, key: str) -> Output:
    """A ledger-only record for an event decided in stage 1 that nobody may receive (no payload kept)."""
    return Output(topics.SUPPRESSED, key, {
        "event_id": event.event_id, "type": event.type, "event_name": event.event or event.name,
        "anonymous_id": None if reason == "erased" else event.anonymous_id,
        "user_id": None if reason == "erased" else event.user_id,
        "device_id": None if reason == "erased" else event.device_id,
        "event_ts": _iso(event.timestamp), "received_at": _iso(event.received_at),
        "policy_version": policy.version, "consent": None, "destinations": [], "is_bot": False,
        "raw_partition": origin.partition, "raw_offset": origin.offset, "features": {},
        "ledger": {"policy_version": policy.version, "decision": "suppressed", "reason": reason},
    })


class PackedState:
    """All of one key's state under a single state entry: one read and at most one write per event.

    Quix stores every entry in RocksDB and its changelog; five small keys cost five reads and up to three writes
    per event (≈ 15% of the worker's time, measured by bench_hotpath.py).
    """

    def __init__(self, state: State, name: str) -> None:
        self._state, self._name = state, name
        self.data: dict[str, Any] = dict(state.get(name) or {})
        self.dirty = False

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self._state.set(self._name, {k: v for k, v in self.data.items() if v is not None})


def _event_fingerprint(event_id: str) -> str:
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).hexdigest()


def _payload_fingerprint(event: Event) -> str:
    """What a client retry repeats exactly (not received_at, which the collector stamps anew on each attempt)."""
    body = orjson.dumps([event.type, event.event, event.name, event.user_id,
                         (event.original_timestamp or event.timestamp).isoformat(), event.properties, event.traits],
                        option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(body, digest_size=4).hexdigest()


def _rule_error(rule_id: str, exc: Exception) -> dict[str, str]:
    return {"rule": rule_id, "error": f"{type(exc).__name__}: {exc}"[:200]}


def _holds(predicate: Any, facts: dict[str, Any], rule_id: str, errors: list[dict[str, str]]) -> bool:
    """A rule's verdict; a rule that raises (a bad rule, never bad input) is false and recorded in ``errors``."""
    try:
        return bool(predicate(facts))
    except Exception as exc:  # noqa: BLE001 - contained: the event is decided without this rule, and flagged
        errors.append(_rule_error(rule_id, exc))
        return False


def _score(model: Any, facts: dict[str, Any], errors: list[dict[str, str]]) -> float | None:
    """A model's score, or None (the model is skipped and the event flagged) if it raises or is not finite."""
    if model is None:
        return None
    try:
        value = model.score(facts)
        if not math.isfinite(value):
            raise ValueError(f"score is {value}")
        return float(value)
    except Exception as exc:  # noqa: BLE001
        errors.append(_rule_error(f"model.{model.name}", exc))
        return None


def decide_device(raw: bytes | None, state: State, policy: CompiledPolicy, *, secret: bytes,
                  origin: Origin = Origin(), key: bytes | str | None = None) -> Output:
    """Stage 1, keyed by device. Returns the DLQ record, the quarantine record, or the record for stage 2."""
    packed = PackedState(state, "device")
    out = _decide_device(raw, packed, policy, secret=secret, origin=origin, key=key)
    packed.flush()  # only once decided: an event that raised leaves the state as it was (the worker dead-letters it)
    return out


def _decide_device(raw: bytes | None, state: State, policy: CompiledPolicy, *, secret: bytes,
                   origin: Origin, key: bytes | str | None) -> Output:
    try:
        event = parse_raw(raw)
    except InvalidEvent as exc:
        return dead_letter(raw, exc, origin, key=key)
    # An email or phone number used as an identifier is PII too: hashed before it reaches state, keys or outputs.
    event.anonymous_id = pii.pseudonymous_id(event.anonymous_id, secret)
    event.user_id = pii.pseudonymous_id(event.user_id, secret)
    event.previous_id = pii.pseudonymous_id(event.previous_id, secret)

    device_id = event.device_id
    if state.get("erased") or (policy.erased_ids and (event.anonymous_id in policy.erased_ids
                                                       or event.user_id in policy.erased_ids)):
        # The device of an erased person stays erased, including its later anonymous events.
        state.set("erased", True)
        for key_name in ("identity", "session", "device_consent", "recent_ids"):
            state.set(key_name, None)
        return suppression(event, policy, origin, reason="erased", key=device_id)
    # A client retry re-sends the same event_id: decided once, never folded into the session twice.
    recent = state.get("recent_ids") or []
    id_print = _event_fingerprint(event.event_id)
    fingerprint = f"{id_print}:{_payload_fingerprint(event)}"
    seen = next((r for r in recent if r.startswith(id_print)), None)
    if seen is not None:
        # Same id and payload: a client retry. Same id, other payload: a reused id (robots do it) - decided once
        # too, but flagged so the warehouse lists it as a conflict instead of taking it for a retry.
        reason = "duplicate_event_id" if seen == fingerprint else "event_id_reused"
        return suppression(event, policy, origin, reason=reason, key=device_id)
    recent.append(fingerprint)
    state.set("recent_ids", recent[-RECENT_IDS:])
    # Identity at the edge: a device that identified once keeps its profile for later events.
    identity = state.get("identity") or {}
    newly_linked = False
    if event.user_id and identity.get("user_id") != event.user_id:
        identity = {"user_id": event.user_id, "linked_at": _iso(event.received_at)}
        state.set("identity", identity)
        newly_linked = True
    user_id = event.user_id or identity.get("user_id")
    profile_id = user_id or event.anonymous_id or device_id
    merged_from = profile_id if profile_id in policy.identity_merges else None
    profile_id = policy.identity_merges.get(profile_id, profile_id)
    if profile_id in policy.erased_ids:
        return suppression(event, policy, origin, reason="erased", key=device_id)

    geo = enrich.geo(event.context.ip)
    dev = enrich.device(event.context.user_agent)
    session_state = SessionState.from_dict(state.get("session"))
    session_id, features = update_session(session_state, device_id=device_id, ts=event.timestamp, type_=event.type,
                                          event_name=event.event, properties=event.properties)
    state.set("session", session_state.to_dict())

    crawler = bots.crawler_matcher().match(event.context.user_agent)
    facts = fact_catalog.derive(
        type=event.type, event=event.event, name=event.name, properties=event.properties,
        user_agent=event.context.user_agent, source_id=event.source_id, features=features, browser=dev.browser,
        os=dev.os, device_type=dev.device_type,
        country=geo.country, region=region_of(geo.country), asn=geo.asn, datacenter=bots.is_datacenter(geo.asn),
        crawler_pattern=crawler, user_id=user_id)
    errors: list[dict[str, str]] = []
    bot_score = _score(policy.bot_model, facts, errors)
    facts["bot_score"] = bot_score
    score = _score(policy.propensity, facts, errors)
    facts["score"] = score

    fired: list[str] = []
    shadow: list[str] = []
    for rule in policy.bot_rules:
        if _holds(rule.predicate, facts, rule.id, errors):  # a rule that raises counts as not fired, and is flagged
            (fired if rule.mode == "enforce" else shadow).append(rule.id)
    if policy.bot_model and bot_score is not None and policy.bot_model.threshold is not None \
            and bot_score >= policy.bot_model.threshold:
        (fired if policy.bot_model.mode == "enforce" else shadow).append("model.bot")
    is_bot = bool(fired)

    # Consent decided on this device while anonymous travels with the event that links it to a profile.
    decisions, tcf_note = _consent_decisions(event, policy) if (event.type == "consent" or event.context.tcf) \
        else ({}, None)
    device_consent = state.get("device_consent") or {}
    if decisions and not user_id:
        for purpose, granted in decisions.items():
            device_consent[purpose] = [granted, _ms(event.received_at)]
        state.set("device_consent", device_consent)

    secret_bytes = secret
    traits = pii.scrub(event.traits, secret_bytes)
    email = event.traits.get("email") if isinstance(event.traits.get("email"), str) else None
    page = event.context.page
    record: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "event_name": facts["event_name"],
        "anonymous_id": event.anonymous_id,
        "user_id": event.user_id,
        "profile_id": profile_id,
        "device_id": device_id,
        "source_id": event.source_id,
        "event_ts": _iso(event.timestamp),
        "received_at": _iso(event.received_at),
        "clock_skew_ms": event.clock_skew_ms,
        "session_id": session_id,
        "ip_hash": pii.keyed_hash(event.context.ip, secret_bytes) if event.context.ip else None,
        "ip_prefix": pii.truncate_ip(event.context.ip),
        "email_hash": pii.keyed_hash(email, secret_bytes) if email else None,
        "user_agent": event.context.user_agent,
        "country": geo.country,
        "region": facts["region"],
        "asn": geo.asn,
        "datacenter": facts["datacenter"],
        "ua_crawler": facts["ua_crawler"],
        "browser": dev.browser,
        "os": dev.os,
        "device_type": dev.device_type,
        "page_path": pii.scrub_url(page.path or page.url, secret_bytes) if page else None,
        "category": facts["category"],
        "revenue": facts["revenue"],
        "properties": pii.scrub(event.properties, secret_bytes),
        "traits": traits,
        "features": features,
        "is_bot": is_bot,
        "bot_reasons": fired,
        "bot_score": bot_score,
        "score": score,
        "policy_version": policy.version,
        "raw_partition": origin.partition,
        "raw_offset": origin.offset,
        "ledger": {
            "policy_version": policy.version,
            "policy_checksum": policy.checksum,
            "rules_fired": fired,
            "shadow_rules_fired": shadow,
            "scores": {"propensity": score, "bot": bot_score},
            "crawler_pattern": crawler,
            "identity": {"profile_id": profile_id, "linked_now": newly_linked, "merged_from": merged_from,
                         "via": "user_id" if event.user_id else "device_link" if user_id else "anonymous"},
        },
    }
    if tcf_note:
        record["ledger"]["consent_note"] = tcf_note
    if errors:
        record["ledger"]["errors"] = errors
    if is_bot:
        record["consent"] = None
        record["destinations"] = [topics.QUARANTINE]
        record["ledger"]["decision"] = "quarantined"
        return Output(topics.QUARANTINE, device_id, record)
    # What stage 2 needs besides the record: facts for routing, and consent carried over at link time.
    record["_facts"] = {k: v for k, v in facts.items() if k not in record["features"] and k not in record}
    record["_consent"] = {"decisions": decisions, "at_ms": _ms(event.received_at)} if decisions else None
    if newly_linked and device_consent:
        record["_device_consent"] = device_consent
    return Output("profile", profile_id, record)


def decide_profile(record: dict[str, Any], state: State, policy: CompiledPolicy) -> list[Output]:
    """Stage 2, keyed by profile: consent, routing, personalization decision, ledger. Never returns nothing."""
    packed = PackedState(state, "profile")
    outputs = _decide_profile(record, packed, policy)
    packed.flush()
    return outputs


def _decide_profile(record: dict[str, Any], state: State, policy: CompiledPolicy) -> list[Output]:
    facts = {**{k: record.get(k) for k in FACT_COLUMNS}, **record.pop("_facts", {}), **record["features"]}
    carried = record.pop("_device_consent", None)
    own = record.pop("_consent", None)
    consent = ConsentState.from_dict(state.get("consent"))
    changed: list[str] = []
    if carried:
        for purpose, (granted, at_ms) in carried.items():
            changed += consent.apply({purpose: granted}, at_ms=at_ms, source="device")
    if own:
        changed += consent.apply(own["decisions"], at_ms=own["at_ms"], source=record["type"])
    if carried or own:
        state.set("consent", consent.to_dict())
    granted = consent.effective(facts.get("region") or "UNKNOWN", policy.region_defaults)

    ledger = record["ledger"]
    if record.get("policy_version") != policy.version:
        # Stage 1's version is no longer held (a restart between the stages): say which version routed the event.
        ledger["routed_by_policy_version"] = policy.version
    errors: list[dict[str, str]] = ledger.setdefault("errors", [])
    ledger["purposes"] = granted
    ledger["consent_changed"] = changed
    chosen: list[str] = []
    reasons: dict[str, str] = {}
    if record["profile_id"] in policy.erased_ids:
        reasons = {route.destination: "erased_profile" for route in policy.routes}
    else:
        extra = {r.id: r for r in policy.route_rules if _holds(r.predicate, facts, r.id, errors)}
        ledger["route_rules_fired"] = [rid for rid, r in extra.items() if r.mode == "enforce"]
        ledger["shadow_rules_fired"] = ledger.get("shadow_rules_fired", []) + \
            [rid for rid, r in extra.items() if r.mode == "shadow"]
        for route in policy.routes:
            missing = [p for p in route.purposes if not granted.get(p)]
            if missing:
                reasons[route.destination] = "consent_missing:" + ",".join(missing)
            elif _holds(route.predicate, facts, f"routing.{route.destination}", errors):
                chosen.append(route.destination)
                reasons[route.destination] = "sent"
            elif errors and errors[-1]["rule"] == f"routing.{route.destination}":
                reasons[route.destination] = "condition_error"  # fail-closed: never delivered on an error
            else:
                reasons[route.destination] = "condition_false"
    ledger["destinations"] = reasons
    record["consent"] = granted
    record["destinations"] = chosen

    outputs: list[Output] = []
    # Personalization decision (compacted `decisions` topic keyed by profile): only with consent, only on change.
    if granted.get("personalization") and chosen:
        segment = next((s for s in policy.segments if _holds(s.predicate, facts, f"segment.{s.id}", errors)), None)
        if segment is not None and state.get("segment") != segment.id:
            state.set("segment", segment.id)
            ledger["decision"] = {"segment": segment.id, "action": segment.action}
            outputs.append(Output(topics.DECISIONS, record["profile_id"], {
                "profile_id": record["profile_id"], "segment": segment.id, "action": segment.action,
                "score": record.get("score"), "event_id": record["event_id"], "session_id": record["session_id"],
                "policy_version": policy.version, "decided_at": _iso(datetime.now(UTC)),
            }))

    if not errors:
        del ledger["errors"]
    if chosen:
        for destination in chosen:
            outputs.append(Output(destination, record["profile_id"], record))
        return outputs
    # Nothing may receive it: record the suppression, without the payload (it may not be kept).
    return outputs + [Output(topics.SUPPRESSED, record["profile_id"], {
        "event_id": record["event_id"], "type": record["type"], "event_name": record["event_name"],
        "anonymous_id": record["anonymous_id"], "user_id": record["user_id"],
        "profile_id": record["profile_id"], "device_id": record["device_id"], "session_id": record["session_id"],
        "event_ts": record["event_ts"], "received_at": record["received_at"], "country": record["country"],
        "category": record["category"],
        # Only the product fields session features read (no personal data), so the warehouse can recompute the
        # features of the session's later, consented events exactly (one definition, two engines).
        "properties": {k: record["properties"][k] for k in SESSION_INPUTS if k in record["properties"]},
        "policy_version": record["policy_version"], "consent": granted, "destinations": [], "is_bot": False,
        "raw_partition": record["raw_partition"], "raw_offset": record["raw_offset"], "features": {},
        "ledger": {"policy_version": record["policy_version"], "destinations": reasons, "purposes": granted,
                   "decision": "suppressed", **({"errors": errors} if errors else {}),
                   **({"routed_by_policy_version": policy.version} if policy.version != record["policy_version"]
                      else {})},
    })]
