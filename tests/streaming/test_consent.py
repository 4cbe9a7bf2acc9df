"""Consent as state, fail-closed (streaming/consent.py): region defaults, TCF strings, apply/effective, and the
order in which decisions win."""

from __future__ import annotations

import pytest

from streaming.consent import (
    DEFAULT_REGION_DEFAULTS,
    PURPOSES,
    ConsentState,
    InvalidConsentString,
    purposes_from_tcf,
    region_of,
)

#: IAB TCF v2.2 core strings a CMP writes (made by streaming.simulator.encode_tcf, kept literal here).
TCF_ALL = ("CQtDjkAQtDjkAAcADBENC0EgAL-AAAAAAAYgF5gBAAAEAABAAAAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA")
TCF_ANALYTICS = ("CQtDjkAQtDjkAAcADBENC0EgAIGAAAAAAAYgF5gAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
NOTHING = {p: False for p in PURPOSES}


@pytest.mark.parametrize(("country", "region"), [
    ("DE", "EU"), ("FR", "EU"), ("GB", "EU"), ("NO", "EU"), ("CH", "EU"), ("US", "US"), ("BR", "OTHER"),
    ("JP", "OTHER"), (None, "UNKNOWN"), ("", "UNKNOWN"),
])
def test_region_of_a_country(country, region):
    assert region_of(country) == region


def test_region_defaults_deny_everything_in_the_eu_and_for_an_unknown_region():
    assert DEFAULT_REGION_DEFAULTS["EU"] == NOTHING
    assert DEFAULT_REGION_DEFAULTS["UNKNOWN"] == NOTHING
    assert all(DEFAULT_REGION_DEFAULTS["US"].values())
    assert DEFAULT_REGION_DEFAULTS["OTHER"] == {**NOTHING, "analytics": True}


def test_without_any_decision_the_region_default_applies():
    state = ConsentState()
    assert state.effective("EU", DEFAULT_REGION_DEFAULTS) == NOTHING
    assert state.effective("US", DEFAULT_REGION_DEFAULTS) == {p: True for p in PURPOSES}


def test_an_unlisted_region_falls_back_to_the_unknown_default():
    assert ConsentState().effective("MARS", DEFAULT_REGION_DEFAULTS) == NOTHING
    assert ConsentState().effective("MARS", {}) == NOTHING  # no defaults at all: denied


def test_an_explicit_decision_overrides_the_region_default():
    state = ConsentState()
    state.apply({"analytics": True}, at_ms=1, source="consent")
    state.apply({"marketing": False}, at_ms=1, source="consent")
    assert state.effective("EU", DEFAULT_REGION_DEFAULTS) == {**NOTHING, "analytics": True}
    assert state.effective("US", DEFAULT_REGION_DEFAULTS)["marketing"] is False


def test_a_revocation_after_a_grant_wins_and_a_late_older_grant_does_not_undo_it():
    state = ConsentState()
    assert state.apply({"marketing": True}, at_ms=100, source="consent") == ["marketing"]
    assert state.apply({"marketing": False}, at_ms=200, source="device") == ["marketing"]
    assert state.apply({"marketing": True}, at_ms=150, source="consent") == []  # arrived late: older
    assert state.effective("US", DEFAULT_REGION_DEFAULTS)["marketing"] is False
    assert state.purposes["marketing"] == [False, 200, "device"]


def test_a_decision_at_the_same_instant_is_applied_and_repeating_one_changes_nothing():
    state = ConsentState()
    state.apply({"sales": True}, at_ms=100, source="consent")
    assert state.apply({"sales": False}, at_ms=100, source="consent") == ["sales"]
    assert state.apply({"sales": False}, at_ms=300, source="consent") == []
    assert state.purposes["sales"][1] == 300  # the newer time is kept even when nothing flips


def test_unknown_purposes_are_ignored():
    state = ConsentState()
    assert state.apply({"telepathy": True, "analytics": True}, at_ms=1, source="consent") == ["analytics"]
    assert set(state.purposes) == {"analytics"}


def test_consent_state_round_trips_through_its_dict():
    state = ConsentState()
    state.apply({"analytics": True, "sales": False}, at_ms=7, source="consent")
    again = ConsentState.from_dict(state.to_dict())
    assert again == state
    assert ConsentState.from_dict(None) == ConsentState()


def test_a_tcf_string_grants_the_purposes_whose_tcf_purposes_are_all_allowed():
    assert purposes_from_tcf(TCF_ALL) == {p: True for p in PURPOSES}
    assert purposes_from_tcf(TCF_ANALYTICS) == {**NOTHING, "analytics": True}


def test_a_custom_mapping_is_applied():
    assert purposes_from_tcf(TCF_ANALYTICS, {"analytics": (1, 8, 9), "marketing": (1, 3)}) == \
        {"analytics": True, "marketing": False}


@pytest.mark.parametrize("tc_string", ["", "short", "CO-garbage", "C" + "A" * 60, "not a tcf string at all!" * 3])
def test_a_malformed_tcf_string_is_refused(tc_string):
    with pytest.raises(InvalidConsentString):
        purposes_from_tcf(tc_string)
