"""How an event's consent reaches its profile (streaming/consent_flow.py): decided by the event, remembered on an
anonymous device, carried at link time, applied in stage 2."""

from __future__ import annotations

from streaming.consent import PURPOSES
from streaming.consent_flow import decided_by, granted_now, on_device, on_profile
from streaming.decided import ConsentDecisions, Handoff, epoch_ms
from streaming.keyed_state import DictState
from tests.streaming.events import T0, event, policy
from tests.streaming.test_consent import TCF_ANALYTICS

MAPPING = policy().tcf_purposes


def test_a_tcf_string_decides_and_the_consent_map_wins_over_it():
    decisions, note = decided_by(event(0, type_="consent", tcf=TCF_ANALYTICS, consent={"analytics": False}), MAPPING)
    assert decisions == {"analytics": False, "personalization": False, "marketing": False, "sales": False}
    assert note is None


def test_a_malformed_tcf_string_decides_nothing_and_says_why():
    decisions, note = decided_by(event(0, type_="consent", tcf="CO-garbage", consent=None), MAPPING)
    assert decisions == {} and note is not None and note.startswith("tcf_invalid: ")


def test_an_anonymous_device_remembers_what_it_decided():
    state = DictState()
    consent = event(0, anon="d", type_="consent", consent={"marketing": True})
    decided, note, device = on_device(consent, state, policy(), user_id=None)
    at = epoch_ms(consent.received_at)
    assert decided == ConsentDecisions(decisions={"marketing": True}, at_ms=at) and note is None
    assert state.data["device_consent"] == device == {"marketing": [True, at]}


def test_a_linked_device_does_not_remember_and_other_events_decide_nothing():
    state = DictState()
    decided, _, device = on_device(event(0, type_="consent", consent={"sales": False}), state, policy(),
                                   user_id="u1")
    assert decided is not None and device == {} and "device_consent" not in state.data
    nothing = on_device(event(1), state, policy(), user_id=None)
    assert nothing == (None, None, {})


def test_stage_two_applies_what_the_device_carried_then_what_the_event_decided():
    state = DictState()
    at = int(T0.timestamp() * 1000)
    handoff = Handoff(facts={}, consent=ConsentDecisions(decisions={"marketing": False}, at_ms=at + 10),
                      device_consent={"marketing": (True, at), "analytics": (True, at)})
    consent, changed = on_profile(handoff, state, source="consent")
    assert changed == ["marketing", "analytics", "marketing"]
    assert consent.purposes == {"marketing": [False, at + 10, "consent"], "analytics": [True, at, "device"]}
    assert state.data["consent"] == consent.to_dict()


def test_stage_two_writes_no_state_when_nothing_was_decided():
    state = DictState()
    consent, changed = on_profile(Handoff(facts={}), state, source="track")
    assert changed == [] and consent.purposes == {} and state.data == {}


def test_what_is_granted_now_falls_back_to_the_region_and_fails_closed():
    consent, _ = on_profile(Handoff(facts={}, consent=ConsentDecisions(decisions={"analytics": True}, at_ms=1)),
                            DictState(), source="consent")
    assert granted_now(consent, "EU", policy()) == {**{p: False for p in PURPOSES}, "analytics": True}
    assert granted_now(consent, None, policy()) == granted_now(consent, "UNKNOWN", policy())
