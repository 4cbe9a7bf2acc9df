"""The first-mile decision as pure functions: validation, bots, identity, consent, PII, routing, ledger."""

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streaming import settings as topics
from streaming.consent import ConsentState
from streaming.contract import from_segment
from streaming.control_tables import merge_value
from streaming.pipeline import NO_CONTROL, DictState, Origin, decide_device, decide_profile
from streaming.policy import bootstrap_policy, compile_policy, seal
from tests.streaming.events import control

SECRET = b"test-secret-123"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
US_IP, DE_IP = "8.8.8.8", "85.214.132.117"
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
SERVING = (topics.PROFILES, topics.PROFILE_DEVICES)


@pytest.fixture(scope="module")
def policy():
    return compile_policy(bootstrap_policy())


def wire(i, *, anon="dev-1", user=None, ip=US_IP, ua=CHROME, type_="track", event="Product Viewed", t=None,
         consent=None, traits=None, properties=None, tcf=None):
    payload = {"type": type_, "messageId": f"m-{anon}-{i}", "anonymousId": anon, "userId": user,
               "timestamp": (t or T0 + timedelta(seconds=20 * i)).isoformat(),
               "context": {"ip": ip, "userAgent": ua, **({"consent": {"tcString": tcf}} if tcf else {})},
               "properties": properties or {"category": "shoes", "price": 30}, "traits": traits or {}}
    if type_ == "track":
        payload["event"] = event
    if consent is not None:
        payload["consent"] = consent
    received = t or T0 + timedelta(seconds=20 * i)
    return orjson.dumps(from_segment(payload, source_id="web", received_at=received))


class Hot:
    """Both stages with their keyed state, as the worker runs them (one state per device and per profile)."""

    def __init__(self, policy, control=NO_CONTROL):
        self.policy = policy
        self.control = control
        self.served = []  # the live profile views (streaming.profile_view), kept apart from the decisions
        self.devices: dict[str, DictState] = {}
        self.profiles: dict[str, DictState] = {}
        self.offset = 0

    def send(self, raw, key="dev-1"):
        self.offset += 1
        out = decide_device(raw, self.devices.setdefault(key, DictState()), self.policy, secret=SECRET,
                            origin=Origin(0, self.offset), key=key, control=self.control)
        if out.topic != "profile":
            return [out]
        outs = decide_profile(out.value, self.profiles.setdefault(out.key, DictState()), self.policy, self.control)
        self.served += [o for o in outs if o.topic in SERVING]
        return [o for o in outs if o.topic not in SERVING]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xff\xfe\x00", "not_utf8"),
    (b"{not json", "invalid_json"),
    (b'{"type":"track","event":"x","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z",'
     b'"anonymous_id":"a"}', "missing_id"),
    (b'{"type":"track","event":"x","event_id":7,"timestamp":"2026-01-01T00:00:00Z",'
     b'"received_at":"2026-01-01T00:00:00Z","anonymous_id":"a"}', "schema"),
    (b"x" * 40_000, "too_large"),
    (b'{"type":"page","event_id":"e","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z",'
     b'"anonymous_id":"a","properties":' + b'{"a":' * 20 + b"1" + b"}" * 21, "too_deep"),
    (b'{"type":"page","event_id":"e","timestamp":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}',
     "missing_identity"),
])
def test_invalid_events_go_to_the_dlq_with_a_reason_and_the_original_bytes(policy, raw, reason):
    out = Hot(policy).send(raw)
    assert [o.topic for o in out] == [topics.DLQ]
    assert out[0].value["reason"] == reason
    assert base64.b64decode(out[0].value["original"]) == raw


def test_listed_crawler_is_quarantined_with_the_rule_that_fired(policy):
    out = Hot(policy).send(wire(0, ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"))
    assert [o.topic for o in out] == [topics.QUARANTINE]
    assert out[0].value["bot_reasons"] == ["bot.ua_crawler"]
    assert out[0].value["ledger"]["crawler_pattern"] == "Googlebot\\/"


def test_us_visitor_routes_by_default_and_every_output_carries_the_ledger(policy):
    out = Hot(policy).send(wire(0))
    assert sorted(o.topic for o in out) == [topics.DEST_MARKETING, topics.DEST_WAREHOUSE]
    ledger = out[0].value["ledger"]
    assert ledger["policy_version"] == 1 and ledger["policy_checksum"].startswith("sha256:")
    assert ledger["destinations"][topics.DEST_SALES] == "condition_false"
    assert ledger["purposes"]["analytics"] is True


def test_eu_visitor_without_consent_is_suppressed_without_payload(policy):
    out = Hot(policy).send(wire(0, ip=DE_IP, traits={"email": "jane@example.com"}))
    assert [o.topic for o in out] == [topics.SUPPRESSED]
    value = out[0].value
    assert value["ledger"]["destinations"][topics.DEST_WAREHOUSE] == "consent_missing:analytics"
    assert "traits" not in value and set(value["properties"]) <= {"category", "price", "quantity"}


def test_revocation_on_one_device_cuts_off_the_next_event_of_the_stitched_device(policy):
    hot = Hot(policy)
    grant = {"analytics": True, "marketing": True, "personalization": True, "sales": True}
    hot.send(wire(0, anon="phone", user="u1", ip=DE_IP, type_="consent", consent=grant), key="phone")
    assert topics.DEST_WAREHOUSE in [o.topic for o in hot.send(wire(1, anon="laptop", user="u1", ip=DE_IP),
                                                                key="laptop")]
    hot.send(wire(2, anon="phone", ip=DE_IP, type_="consent", consent={"marketing": False}), key="phone")
    out = hot.send(wire(3, anon="laptop", ip=DE_IP), key="laptop")
    topics_out = [o.topic for o in out]
    assert topics.DEST_WAREHOUSE in topics_out and topics.DEST_MARKETING not in topics_out
    assert out[0].value["ledger"]["destinations"][topics.DEST_MARKETING] == "consent_missing:marketing"


def test_consent_given_while_anonymous_follows_the_device_into_its_profile(policy):
    hot = Hot(policy)
    hot.send(wire(0, anon="d9", ip=DE_IP, type_="consent", consent={"analytics": True}), key="d9")
    out = hot.send(wire(1, anon="d9", user="u9", ip=DE_IP, type_="identify"), key="d9")
    assert [o.topic for o in out] == [topics.DEST_WAREHOUSE]
    assert out[0].value["profile_id"] == "u9"


@pytest.mark.parametrize("tcf", ["not-a-tcf-string", "CO-garbage", "C" + "A" * 60])
def test_malformed_tcf_string_grants_nothing(policy, tcf):
    # "CO-garbage" decodes as "version 2" with random purpose bits: found by the consent property test.
    out = Hot(policy).send(wire(0, ip=DE_IP, type_="consent", tcf=tcf, consent=None, properties={}), key="dev-1")
    assert [o.topic for o in out] == [topics.SUPPRESSED]
    assert out[0].value["ledger"]["purposes"] == {p: False for p in ("analytics", "personalization", "marketing",
                                                                      "sales")}


def test_pii_is_hashed_before_any_destination(policy):
    out = Hot(policy).send(wire(0, type_="identify", user="u5", traits={"email": "Jane@Example.com",
                                                                        "phone": "+1 415 555 0100", "plan": "pro"},
                                properties={"note": "mail me at jane@example.com"}))
    text = orjson.dumps([o.value for o in out]).decode()
    for canary in ("Jane@Example.com", "jane@example.com", "555 0100", US_IP):
        assert canary not in text
    value = out[0].value
    assert value["traits"]["plan"] == "pro" and value["traits"]["email"].startswith("h:")
    assert value["ip_prefix"] == "8.8.8.0/24"


def test_identity_link_keeps_later_anonymous_events_on_the_profile(policy):
    hot = Hot(policy)
    hot.send(wire(0, anon="d1", user="u1", type_="identify"), key="d1")
    out = hot.send(wire(1, anon="d1"), key="d1")
    assert out[0].value["profile_id"] == "u1"
    assert out[0].value["ledger"]["identity"]["via"] == "device_link"


def test_regular_fast_session_is_caught_by_the_rate_rule(policy):
    hot = Hot(policy)
    outs = [hot.send(wire(i, t=T0 + timedelta(seconds=0.3 * i))) for i in range(12)]
    assert outs[-1][0].topic == topics.QUARANTINE
    assert outs[-1][0].value["bot_reasons"] == ["bot.rate_flood"]
    assert outs[0][0].topic != topics.QUARANTINE


def test_a_session_caught_by_an_enforced_rule_stays_caught_and_the_next_session_starts_clean():
    doc = bootstrap_policy()
    doc["rules"].append({"id": "bot.mined.add", "kind": "bot", "mode": "enforce", "description": "test",
                         "when": {"==": [{"var": "event_name"}, "Product Added"]}})
    doc["policy_version"] = 2
    hot = Hot(compile_policy(seal(doc)))
    assert hot.send(wire(0, event="Product Viewed"))[0].topic != topics.QUARANTINE
    caught = hot.send(wire(1, event="Product Added"))[0]
    later = hot.send(wire(2, event="Product Viewed"))[0]  # the rule does not hold here: the session's verdict does
    assert caught.topic == topics.QUARANTINE and caught.value["bot_reasons"] == ["bot.mined.add"]
    assert later.topic == topics.QUARANTINE and later.value["bot_reasons"] == ["bot.session_quarantined"]
    assert later.value["session_id"] == caught.value["session_id"]
    # more than the session gap later: a new session, decided on its own
    fresh = hot.send(wire(3, event="Product Viewed", t=T0 + timedelta(hours=2)))[0]
    assert fresh.topic != topics.QUARANTINE


def _policy_with(**changes):
    from streaming.policy import seal

    doc = bootstrap_policy()
    doc.update(changes)
    doc["policy_version"] = 2
    return compile_policy(seal(doc))


def test_a_client_retry_is_suppressed_and_not_folded_into_the_session(policy):
    hot = Hot(policy)
    first = hot.send(wire(0))
    retry = hot.send(wire(0))
    third = hot.send(wire(1))
    assert first[0].topic == topics.DEST_WAREHOUSE
    assert [o.topic for o in retry] == [topics.SUPPRESSED]
    assert retry[0].value["ledger"]["reason"] == "duplicate_event_id"
    assert third[0].value["features"]["session_event_count"] == 2.0
    # the hash that recognised the retry is on both records: the warehouse compares payloads with it (payload_hash)
    assert retry[0].value["ledger"]["payload_hash"] == first[0].value["ledger"]["payload_hash"]
    assert third[0].value["ledger"]["payload_hash"] != first[0].value["ledger"]["payload_hash"]


def test_erased_people_are_suppressed_at_the_first_mile_without_identifiers(policy):
    hot = Hot(policy, control(erased=["u-gone"]))
    out = hot.send(wire(0, anon="d-x", user="u-gone", traits={"email": "gone@example.com"}), key="d-x")
    assert [o.topic for o in out] == [topics.SUPPRESSED]
    assert out[0].value["ledger"]["reason"] == "erased"
    assert out[0].value["ledger"]["control"] == {"identity": 0, "erasure": 1}  # decided under erasure record 0
    value = out[0].value
    assert value["anonymous_id"] is value["user_id"] is value["device_id"] is None
    assert "u-gone" not in orjson.dumps(value).decode() and "gone@example.com" not in orjson.dumps(value).decode()
    # the device stays erased after the identify: a later anonymous event is still suppressed
    later = hot.send(wire(1, anon="d-x"), key="d-x")
    assert [o.topic for o in later] == [topics.SUPPRESSED]


def test_an_erasure_applies_to_the_next_event_of_every_device_linked_to_the_subject(policy):
    tables = control()
    hot = Hot(policy, tables)
    hot.send(wire(0, anon="d-1", user="u-9"), key="d-1")
    hot.send(wire(1, anon="d-2", user="u-9"), key="d-2")
    assert hot.send(wire(2, anon="d-2"), key="d-2")[0].topic == topics.DEST_WAREHOUSE
    tables.apply("erasure", "u-9", b"{}", 0)  # what a worker's ControlReader does with a control.erasure record
    for i, device in enumerate(("d-1", "d-2")):  # anonymous events: erased through the device's link
        out = hot.send(wire(3 + i, anon=device), key=device)
        assert [o.topic for o in out] == [topics.SUPPRESSED] and out[0].value["ledger"]["reason"] == "erased"


def test_warehouse_merges_move_a_device_to_the_surviving_profile_through_chains(policy):
    tables = control(merges={"anon-a": "u-1", "u-old": "anon-a"})
    out = Hot(policy, tables).send(wire(0, anon="anon-a"), key="anon-a")
    assert out[0].value["profile_id"] == "u-1"
    assert out[0].value["ledger"]["identity"]["merged_from"] == "anon-a"
    assert out[0].value["ledger"]["control"] == {"identity": 2, "erasure": 0}
    chained = Hot(policy, tables).send(wire(0, anon="x", user="u-old"), key="x")
    assert chained[0].value["profile_id"] == "u-1"
    assert tables.survivor("u-1") == "u-1"  # the survivor's id never moves


def test_a_merge_that_closes_a_cycle_is_rejected_and_the_rest_still_applies():
    tables = control(merges={"a": "b", "b": "c", "c": "a", "d": "c"})
    assert tables.rejected == [("identity", "c")]
    assert [tables.survivor(x) for x in "abcd"] == ["c", "c", "c", "c"]
    assert tables.offsets.identity == 4  # a rejected record is still read past (and logged)


def test_consent_never_widens_on_a_merge(policy):
    """The survivor granted marketing on an EU device; the merged profile had denied it later: after the merge,
    the survivor's next event (and the merged device's) is not delivered to marketing. A tie: the denial wins."""
    grant = {"analytics": True, "marketing": True, "sales": True, "personalization": True}
    later_ms = int((T0 + timedelta(hours=1)).timestamp() * 1000)
    tables = control()
    hot = Hot(policy, tables)
    hot.send(wire(0, anon="d-b", user="u-b", ip=DE_IP, type_="consent", consent=grant), key="d-b")
    before = hot.send(wire(1, anon="d-b", ip=DE_IP), key="d-b")
    assert topics.DEST_MARKETING in [o.topic for o in before]
    tables.load_many("identity", [("u-a", merge_value("u-b", consent={"marketing": [False, later_ms],
                                                                        "sales": [True, later_ms]}))])
    after = hot.send(wire(2, anon="d-b", ip=DE_IP), key="d-b")
    assert topics.DEST_MARKETING not in [o.topic for o in after]
    assert topics.DEST_WAREHOUSE in [o.topic for o in after]
    assert after[0].value["ledger"]["consent_merged_from"] == ["u-a"]
    assert after[0].value["consent"]["marketing"] is False
    merged_device = hot.send(wire(3, anon="d-a", user="u-a", ip=DE_IP), key="d-a")
    assert merged_device[0].value["profile_id"] == "u-b" and merged_device[0].value["consent"]["marketing"] is False
    # a tie between a grant and a denial: the denial wins
    consent_state = ConsentState(purposes={"sales": [True, 5, "event"]})
    assert consent_state.fold({"sales": (False, 5)}, source="merge") == ["sales"]
    assert consent_state.fold({"sales": (True, 5)}, source="merge") == []


def _without_event_id(doc):
    return {k: v for k, v in doc.items() if k != "event_id"}


def test_an_email_or_phone_used_as_user_id_never_leaves_in_clear(policy):
    hot = Hot(policy)
    outs = hot.send(wire(1, anon="dev-1", user="Jane.Doe@Example.com", type_="identify"), key="dev-1")
    outs += hot.send(wire(2, anon="dev-2", user="jane.doe@example.com"), key="dev-2")
    outs += hot.send(wire(3, anon="+1 (555) 123-4567", user=None), key="+1 (555) 123-4567")
    profiles = {o.value["profile_id"] for o in outs[:2] if o.topic in topics.DESTINATIONS}
    assert len(profiles) == 1 and next(iter(profiles)).startswith("h:")  # one person, stitched, pseudonymous
    phone_out = [o for o in outs if o.value.get("anonymous_id") and o.value["anonymous_id"].startswith("h:")]
    assert phone_out and all(o.key.startswith("h:") for o in phone_out)
    outs += hot.served
    assert {o.topic for o in hot.served} == set(SERVING)
    # (the test's message ids embed the anonymous id: real ones are UUIDs)
    dumped = orjson.dumps([{k: (_without_event_id(v) if k == "last_event" else v) for k, v in o.value.items()
                            if k != "event_id"} for o in outs] + [o.key for o in outs]).lower()
    state = orjson.dumps([s.data for s in (*hot.devices.values(), *hot.profiles.values())]).lower()
    for clear in (b"jane.doe@example.com", b"555", b"123-4567"):
        assert clear not in dumped and clear not in state


def test_a_rule_or_route_that_raises_is_contained_and_flagged():
    doc = bootstrap_policy()
    doc["policy_version"] = 2
    doc["rules"].append({"id": "bot.overflow", "kind": "bot", "mode": "enforce",
                         "when": {">": [{"+": [{"var": "revenue"}, 10 ** 400]}, 0]}})
    doc["routing"]["dest.sales"] = {"purposes": ["sales"], "when": {">": [{"*": [{"var": "revenue"}, 10 ** 400]}, 1]}}
    hot = Hot(compile_policy(seal(doc)))
    order = hot.send(wire(1, event="Order Completed", properties={"revenue": 900.0}))
    view = hot.send(wire(2, event="Product Viewed"))
    assert {o.topic for o in order} == {topics.DEST_WAREHOUSE, topics.DEST_MARKETING}  # not quarantined, no sales
    ledger = order[0].value["ledger"]
    assert {e["rule"] for e in ledger["errors"]} == {"bot.overflow", "routing.dest.sales"}
    assert all(e["error"].startswith("OverflowError") for e in ledger["errors"])
    assert ledger["destinations"]["dest.sales"] == "condition_error"
    assert "bot.overflow" not in ledger["rules_fired"]
    assert all("errors" not in o.value["ledger"] for o in view)  # events the rule does not break are unflagged


def test_a_model_that_raises_is_skipped_and_flagged(policy):
    import dataclasses

    class Broken:
        name = "propensity"

        def score(self, facts):
            raise ZeroDivisionError("simulated")

    hot = Hot(dataclasses.replace(policy, propensity=Broken()))
    outs = hot.send(wire(1))
    assert outs[0].topic in topics.DESTINATIONS and outs[0].value["score"] is None
    assert outs[0].value["ledger"]["errors"] == [{"rule": "model.propensity", "error": "ZeroDivisionError: simulated"}]


def test_both_stages_decide_an_event_with_one_policy_version_across_a_swap():
    """Stage 1 under v1, then v2 is swapped in before stage 2: the event is routed by v1 (the version its ledger
    names), not by v2. A version the process no longer holds (a restart between the stages) falls back to the
    current one and the ledger names both."""
    from streaming.policy import PolicyHolder

    v1 = bootstrap_policy()
    v1["policy_version"] = 1
    holder = PolicyHolder(compile_policy(seal(v1)))
    doc = bootstrap_policy()
    doc["routing"] = {**doc["routing"], "dest.warehouse": {"purposes": ["analytics"], "when": False}}
    doc["policy_version"] = 2
    stage1 = decide_device(wire(1), DictState(), holder.current, secret=SECRET, origin=Origin(0, 1), key="dev-1")
    assert stage1.topic == "profile" and stage1.value["ledger"]["policy_version"] == 1
    assert holder.offer(seal(doc)) and holder.current.version == 2

    routed = [o for o in decide_profile(dict(stage1.value), DictState(), holder.version(stage1.value["policy_version"]))
              if o.topic not in SERVING]
    assert topics.DEST_WAREHOUSE in [o.topic for o in routed]
    assert all(o.value["ledger"]["policy_version"] == 1 for o in routed)
    assert all("routed_by_policy_version" not in o.value["ledger"] for o in routed)

    forgotten = {**stage1.value, "policy_version": -5, "ledger": {**stage1.value["ledger"], "policy_version": -5}}
    fallback = [o for o in decide_profile(forgotten, DictState(), holder.version(-5)) if o.topic not in SERVING]
    assert topics.DEST_WAREHOUSE not in [o.topic for o in fallback]  # v2's routing: the warehouse route is off
    assert all(o.value["ledger"]["policy_version"] == -5 and o.value["ledger"]["routed_by_policy_version"] == 2
               for o in fallback)


def test_the_live_view_keeps_the_profiles_user_id_and_devices_after_an_anonymous_event(policy):
    hot = Hot(policy)
    hot.send(wire(0, anon="d-v", user="u-view", type_="identify"), key="d-v")
    hot.send(wire(1, anon="d-v"), key="d-v")  # anonymous, after the login: same profile
    views = [o.value for o in hot.served if o.topic == topics.PROFILES]
    devices = [o for o in hot.served if o.topic == topics.PROFILE_DEVICES]
    assert [v["user_id"] for v in views] == ["u-view", "u-view"] and views[-1]["devices"] == ["d-v"]
    assert len(devices) == 1 and devices[0].value["profile_id"] == "u-view"  # published once per device
    assert views[-1]["offsets"] == {"0": 2}
