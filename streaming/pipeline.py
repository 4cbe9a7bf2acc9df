"""The first-mile decision, as pure functions over plain data. The Quix app (:mod:`streaming.worker`) only wires them.

Two stages, because state must live on the partition that owns its key (ARCHITECTURE.md):

* :func:`decide_device` runs keyed by device (the key of ``events.raw``): validation, erasure and client retries,
  identity, enrichment, session features, scores and bot rules. Invalid events leave here for ``events.dlq``, bots
  for ``events.quarantine``; everything else continues keyed by profile.
* :func:`decide_profile` runs keyed by profile after a repartition: consent (so a revocation on one device cuts off
  the very next event of every stitched device), routing, personalization decisions, the ledger, and the profile's
  live view for serving (:mod:`streaming.profile_view`).

Each step is a function of its own module (named for the decision it makes); the two functions below are the table
of contents. Every output is an :class:`Output` (topic name, key, value) whose value is the record
:mod:`streaming.decided` declares. Accounting: each input yields exactly one of a DLQ record, a quarantine record,
one or more destination records, or a suppression record — never none.
"""

from __future__ import annotations

import logging
from typing import Any

from streaming import bots, enrich, identity, scoring
from streaming import consent_flow as consent
from streaming import facts as fact_catalog
from streaming.admission import admit, payload_fingerprint
from streaming.consent import region_of
from streaming.contract import Event, InvalidEvent, parse_raw
from streaming.control_tables import ControlTables
from streaming.decided import Handoff, take_handoff
from streaming.keyed_state import DictState, PackedState, State
from streaming.outputs import (
    FACT_COLUMNS,
    PROFILE,
    Origin,
    Output,
    dead_letter,
    decided_record,
    deliveries,
    for_profile,
    personalization,
    quarantine,
    suppression,
)
from streaming.policy import CompiledPolicy
from streaming.profile_view import profile_outputs
from streaming.routing import Routing, route, segment_for
from streaming.sessions import SessionState, is_live, update_session

logger = logging.getLogger(__name__)

#: Where an input came from when the caller does not say (tests, replays).
NO_ORIGIN = Origin()
#: No merges, no erasures (tests, replays that do not need them).
NO_CONTROL = ControlTables()

__all__ = ["PROFILE", "DictState", "Origin", "Output", "State", "dead_letter", "decide_device", "decide_profile"]


def decide_device(raw: bytes | None, state: State, policy: CompiledPolicy, *, secret: bytes,
                  origin: Origin = NO_ORIGIN, key: bytes | str | None = None,
                  control: ControlTables = NO_CONTROL) -> Output:
    """Stage 1, keyed by device. Returns the DLQ record, the quarantine record, a suppression, or the record for
    stage 2 (topic :data:`PROFILE`). ``control``: identity merges and erasures (``control.identity``/``.erasure``)."""
    packed = PackedState(state, "device")
    out = _decide_device(raw, packed, policy, secret=secret, origin=origin, key=key, control=control)
    packed.flush()  # only once decided: an event that raised leaves the state as it was (the worker dead-letters it)
    return out


def _decide_device(raw: bytes | None, state: State, policy: CompiledPolicy, *, secret: bytes,
                   origin: Origin, key: bytes | str | None, control: ControlTables) -> Output:
    under = control.offsets  # read first: the decision saw at least every control record below these offsets
    try:
        event = parse_raw(raw)
    except InvalidEvent as exc:
        return dead_letter(raw, exc, origin, key=key)
    identity.pseudonymize(event, secret)
    device_id = event.device_id
    # what the client sent, hashed once: retries are recognised by it here and the warehouse compares payloads by it
    payload_hash = payload_fingerprint(event)
    refused = admit(event, state, control.erased, payload_hash)
    if refused:
        return suppression(event, policy, origin, reason=refused, key=device_id, payload_hash=payload_hash,
                           control=under)
    link = identity.link(event, state, control)
    if control.is_erased(link.profile_id):
        return suppression(event, policy, origin, reason="erased", key=device_id, payload_hash=None, control=under)
    geo, device = enrich.geo(event.context.ip), enrich.device(event.context.user_agent)
    crawler = bots.crawler_matcher().match(event.context.user_agent)
    session_id, features = _session(event, state, device_id)
    facts = fact_catalog.derive(
        type=event.type, event=event.event, name=event.name, properties=event.properties,
        user_agent=event.context.user_agent, source_id=event.source_id, features=features, browser=device.browser,
        os=device.os, device_type=device.device_type, country=geo.country, region=region_of(geo.country),
        asn=geo.asn, datacenter=bots.is_datacenter(geo.asn), crawler_pattern=crawler, user_id=link.user_id)
    errors: list[dict[str, str]] = []
    scores = scoring.score(policy, facts, errors)
    verdict = scoring.bot_verdict(policy, facts, scores.bot, errors)
    if verdict.is_bot:
        state.set("bot_session", session_id)
    elif state.get("bot_session") == session_id:
        verdict = scoring.BotVerdict([scoring.SESSION_QUARANTINED], verdict.shadow)
    decided, consent_note, device_consent = consent.on_device(event, state, policy, user_id=link.user_id)
    record = decided_record(event, link=link, geo=geo, device=device, crawler_pattern=crawler,
                            session_id=session_id, features=features, facts=facts, verdict=verdict, scores=scores,
                            errors=errors, consent_note=consent_note, policy=policy, origin=origin, secret=secret,
                            payload_hash=payload_hash, control=under)
    if verdict.is_bot:
        return quarantine(record, key=device_id)
    return for_profile(record, facts, decided, device_consent if link.identity.linked_now else None)


def _session(event: Event, state: State, device_id: str) -> tuple[str, dict[str, float]]:
    """Fold the event into its device's session (``streaming.sessions``): (session id, features so far).

    Like every step, it writes new values to the state instead of changing what it read: an in-memory state
    (:class:`DictState`) hands out the stored objects, and a stage that raises must leave them as they were."""
    live = is_live(event.timestamp, event.received_at)
    # history (an import, a backfill) is a session of its own: it never feeds the live session's rate or rhythm
    session = SessionState.from_dict(state.get("session")) if live else SessionState()
    session.categories = list(session.categories)  # update_session appends: never to the stored state's list
    session_id, features = update_session(session, device_id=device_id, ts=event.timestamp, type_=event.type,
                                          event_name=event.event, properties=event.properties)
    if live:
        state.set("session", session.to_dict())
    return session_id, features


def decide_profile(record: dict[str, Any], state: State, policy: CompiledPolicy,
                   control: ControlTables = NO_CONTROL) -> list[Output]:
    """Stage 2, keyed by profile: consent, routing, personalization decision, ledger. Never returns nothing.

    ``record`` is stage 1's output for :data:`PROFILE` (with its handoff as a Struct, or as JSON after the
    repartition topic); it becomes the destination records.
    """
    packed = PackedState(state, "profile")
    # A copy (the record and its ledger, which stage 2 fills): if a step raises, the worker dead-letters the record
    # exactly as stage 2 received it, handoff included, so a replay after the fix decides it whole (B13).
    outputs = _decide_profile({**record, "ledger": dict(record["ledger"])}, packed, policy, control)
    packed.flush()
    return outputs


def _decide_profile(record: dict[str, Any], state: State, policy: CompiledPolicy,
                    control: ControlTables) -> list[Output]:
    handoff = take_handoff(record)
    facts = _facts(record, handoff)
    merged_in, _ = consent.fold_merged(record["profile_id"], state, control)
    profile_consent, changed = consent.on_profile(handoff, state, source=record["type"])
    granted = consent.granted_now(profile_consent, facts.get("region"), policy)
    ledger = record["ledger"]
    if record.get("policy_version") != policy.version:
        # Stage 1's version is no longer held (a restart between the stages): say which version routed the event.
        ledger["routed_by_policy_version"] = policy.version
    errors: list[dict[str, str]] = ledger.setdefault("errors", [])
    ledger["purposes"] = granted
    ledger["consent_changed"] = changed
    if merged_in:
        ledger["consent_merged_from"] = merged_in
    erased = control.is_erased(record["profile_id"])
    routing = route(policy, facts, granted, errors, erased=erased)
    _stamp_routing(record, routing, granted)
    outputs = _personalize(record, state, policy, facts, granted, routing, errors)
    if not errors:
        del ledger["errors"]
    view = profile_outputs(record, state, policy, granted, erased=erased)
    return outputs + deliveries(record, routing, granted, errors, policy) + view


def _facts(record: dict[str, Any], handoff: Handoff) -> dict[str, Any]:
    """What stage 2's rules read: the record's fact columns, the handoff's other facts, the session features."""
    return {**{k: record.get(k) for k in FACT_COLUMNS}, **handoff.facts, **record["features"]}


def _stamp_routing(record: dict[str, Any], routing: Routing, granted: dict[str, bool]) -> None:
    """The routing decision on the record and its ledger."""
    ledger = record["ledger"]
    if routing.route_rules_fired is not None:
        ledger["route_rules_fired"] = routing.route_rules_fired
        ledger["shadow_rules_fired"] = ledger.get("shadow_rules_fired", []) + (routing.shadow_rules_fired or [])
    ledger["destinations"] = routing.reasons
    record["consent"] = granted
    record["destinations"] = routing.chosen


def _personalize(record: dict[str, Any], state: State, policy: CompiledPolicy, facts: dict[str, Any],
                 granted: dict[str, bool], routing: Routing, errors: list[dict[str, str]]) -> list[Output]:
    """A new personalization segment for the profile: only with consent, only for a delivered event, only on
    change (the ``decisions`` topic is compacted by profile)."""
    if not (granted.get("personalization") and routing.chosen):
        return []
    segment = segment_for(policy, facts, errors)
    if segment is None or state.get("segment") == segment.id:
        return []
    state.set("segment", segment.id)
    record["ledger"]["decision"] = {"segment": segment.id, "action": segment.action}
    return [personalization(record, segment, policy)]
