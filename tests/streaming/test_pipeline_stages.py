"""The two stages as tables of contents (streaming/pipeline.py): what a stage leaves in state when a step raises,
and the personalization step's conditions (consent, a delivered event, a change)."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from streaming import settings as topics
from streaming.control_tables import ControlTables
from streaming.pipeline import PROFILE, DictState, Origin, decide_device, decide_profile
from tests.streaming.events import DE_IP, policy, raw

SECRET = b"stages-secret-0123"
GRANT = {"analytics": True, "personalization": True, "marketing": True, "sales": True}


def _both(raws, pol, device=None, profile=None):
    device, profile = device or DictState(), profile or DictState()
    outs = []
    for i, r in enumerate(raws):
        out = decide_device(r, device, pol, secret=SECRET, origin=Origin(0, i), key="dev-1")
        decided = decide_profile(out.value, profile, pol) if out.topic == PROFILE else [out]
        # the live profile views (streaming.profile_view) have their own tests
        outs.append([o for o in decided if o.topic not in (topics.PROFILES, topics.PROFILE_DEVICES)])
    return outs, profile


def test_a_new_segment_is_decided_once_while_it_holds():
    pol = policy()
    adds = [raw(i, event="Product Added") for i in range(3)]
    outs, profile = _both(adds, pol)
    decisions = [[o for o in step if o.topic == topics.DECISIONS] for step in outs]
    assert [len(d) for d in decisions] == [1, 0, 0]
    first = decisions[0][0].value
    assert (first["segment"], first["action"], first["event_id"]) == ("cart_builder", "show_checkout_reminder",
                                                                      "m-dev-1-0")
    delivered = [next(o for o in step if o.topic == topics.DEST_WAREHOUSE) for step in outs]
    assert [("decision" in o.value["ledger"]) for o in delivered] == [True, False, False]
    assert profile.data["profile"]["segment"] == "cart_builder"


def test_no_segment_without_the_personalization_purpose():
    grant_analytics = raw(0, ip=DE_IP, type_="consent", consent={"analytics": True})
    outs, profile = _both([grant_analytics, raw(1, ip=DE_IP, event="Product Added")], policy())
    assert topics.DEST_WAREHOUSE in [o.topic for o in outs[1]]
    assert not any(o.topic == topics.DECISIONS for step in outs for o in step)
    assert "segment" not in profile.data["profile"]


def test_no_segment_for_an_event_nobody_receives():
    outs, _ = _both([raw(0, ip=DE_IP, event="Product Added")], policy())
    assert [o.topic for o in outs[0]] == [topics.SUPPRESSED]


class _BrokenMerges(ControlTables):
    def survivor(self, profile_id: str) -> str:
        raise TypeError("a defect in the merge lookup")


def test_a_stage_that_raises_leaves_its_state_as_it_was():
    pol = policy()
    device, profile = DictState(), DictState()
    _both([raw(0, type_="consent", consent=GRANT)], pol, device, profile)
    device_before, profile_before = copy.deepcopy(device.data), copy.deepcopy(profile.data)
    with pytest.raises(TypeError):  # raises after admission and identity wrote
        decide_device(raw(1), device, pol, secret=SECRET, origin=Origin(0, 1), key="dev-1", control=_BrokenMerges())
    assert device.data == device_before
    out = decide_device(raw(1, type_="consent", consent={"sales": False}), device, pol, secret=SECRET,
                        origin=Origin(0, 1), key="dev-1")
    broken_stage_2 = dataclasses.replace(pol, routes=None)  # raises after consent was applied
    with pytest.raises(TypeError):
        decide_profile(out.value, profile, broken_stage_2)
    assert profile.data == profile_before
