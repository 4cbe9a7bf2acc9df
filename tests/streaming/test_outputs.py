"""What the stages emit (streaming/outputs.py): dead letters, suppressions without payload, the quarantine, the
record for stage 2 with its handoff, and stage 2's deliveries."""

from __future__ import annotations

import base64

import msgspec

from streaming import settings as topics
from streaming.contract import InvalidEvent
from streaming.decided import HANDOFF, ConsentDecisions, DeadLetter, Handoff, Suppressed, take_handoff
from streaming.outputs import (
    HANDOFF_FACTS,
    PROFILE,
    SESSION_INPUTS,
    Origin,
    dead_letter,
    deliveries,
    for_profile,
    quarantine,
    suppression,
)
from streaming.routing import Routing
from tests.streaming.events import event, policy


def test_a_dead_letter_keeps_the_original_bytes_the_reason_and_the_id_when_it_parses():
    raw = b'{"event_id": "e-1", "type": 5}'
    out = dead_letter(raw, InvalidEvent("schema", "x" * 900), Origin(2, 40), key=b"dev-1")
    assert (out.topic, out.key) == (topics.DLQ, "dev-1")
    assert base64.b64decode(out.value["original"]) == raw
    assert out.value["event_id"] == "e-1" and len(out.value["detail"]) == 500
    assert (out.value["raw_partition"], out.value["raw_offset"]) == (2, 40)
    msgspec.convert(out.value, DeadLetter, strict=True)
    assert dead_letter(b"\xff\x00", InvalidEvent("not_utf8"), Origin(), key=None).value["event_id"] is None


def test_an_erased_persons_suppression_holds_no_identifier():
    e = event(0, anon="d-x", user="u-gone")
    out = suppression(e, policy(), Origin(0, 1), reason="erased", key="d-x", payload_hash="0a1b2c3d")
    assert out.value["anonymous_id"] is out.value["user_id"] is out.value["device_id"] is None
    assert out.value["ledger"] == {"policy_version": 1, "decision": "suppressed", "reason": "erased"}
    retry = suppression(e, policy(), Origin(0, 1), reason="duplicate_event_id", key="d-x", payload_hash="0a1b2c3d")
    assert retry.value["user_id"] == "u-gone" and retry.value["ledger"]["payload_hash"] == "0a1b2c3d"
    msgspec.convert(retry.value, Suppressed, strict=True)


def test_a_quarantined_record_names_the_quarantine_and_no_consent():
    record = {"ledger": {"policy_version": 1}}
    out = quarantine(record, key="dev-1")
    assert (out.topic, out.key) == (topics.QUARANTINE, "dev-1")
    assert record == {"ledger": {"policy_version": 1, "decision": "quarantined"}, "consent": None,
                      "destinations": [topics.QUARANTINE]}


def test_the_record_for_stage_2_carries_the_handoff_and_device_consent_only_when_given():
    facts = {name: True for name in HANDOFF_FACTS} | {"browser": "Chrome"}
    decided = ConsentDecisions(decisions={"analytics": True}, at_ms=5)
    out = for_profile({"profile_id": "u1"}, facts, decided, {"marketing": [True, 3]})
    assert (out.topic, out.key) == (PROFILE, "u1")
    assert take_handoff(dict(out.value)) == Handoff(facts={name: True for name in HANDOFF_FACTS}, consent=decided,
                                                    device_consent={"marketing": (True, 3)})
    assert out.value[HANDOFF] == {"facts": {name: True for name in HANDOFF_FACTS},
                                  "consent": {"decisions": {"analytics": True}, "at_ms": 5},
                                  "device_consent": {"marketing": [True, 3]}}  # as on the repartition topic
    assert take_handoff(dict(for_profile({"profile_id": "u1"}, facts, None, {}).value)).device_consent is None


def _record() -> dict:
    return {"event_id": "e", "type": "track", "event_name": "Product Viewed", "anonymous_id": "d", "user_id": None,
            "profile_id": "p", "device_id": "d", "session_id": "d:1", "event_ts": "2026-11-02T10:00:00Z",
            "received_at": "2026-11-02T10:00:01Z", "country": "DE", "category": "shoes",
            "properties": {"category": "shoes", "price": 30, "email_typed": "h:abc", "quantity": 2},
            "traits": {"plan": "pro"}, "policy_version": 1, "raw_partition": 0, "raw_offset": 7}


def test_deliveries_are_one_record_per_chosen_destination():
    record = _record()
    outs = deliveries(record, Routing([topics.DEST_WAREHOUSE, topics.DEST_SALES], {}), {}, [], policy())
    assert [(o.topic, o.key) for o in outs] == [(topics.DEST_WAREHOUSE, "p"), (topics.DEST_SALES, "p")]
    assert all(o.value is record for o in outs)


def test_an_event_nobody_may_receive_leaves_only_its_ledger_and_the_session_inputs():
    reasons = {topics.DEST_WAREHOUSE: "consent_missing:analytics"}
    granted = {"analytics": False}
    (out,) = deliveries(_record(), Routing([], reasons), granted, [], policy())
    assert out.topic == topics.SUPPRESSED
    assert out.value["properties"] == {"category": "shoes", "price": 30, "quantity": 2}
    assert set(out.value["properties"]) <= set(SESSION_INPUTS) and "traits" not in out.value
    assert out.value["ledger"] == {"policy_version": 1, "destinations": reasons, "purposes": granted,
                                   "decision": "suppressed"}
    msgspec.convert(out.value, Suppressed, strict=True)


def test_a_suppression_routed_by_another_version_names_it_and_keeps_the_errors():
    errors = [{"rule": "routing.dest.sales", "error": "OverflowError: x"}]
    (out,) = deliveries(_record(), Routing([], {}), {}, errors, policy(segments=[]))  # version 2
    assert out.value["ledger"]["routed_by_policy_version"] == 2 and out.value["ledger"]["errors"] == errors
