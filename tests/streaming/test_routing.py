"""Routing and personalization in stage 2 (streaming/routing.py): consent first, fail-closed conditions, erased
profiles, route rules and segments."""

from __future__ import annotations

from typing import Any

from streaming import settings as topics
from streaming.routing import CONDITION_ERROR, CONDITION_FALSE, ERASED_PROFILE, SENT, route, segment_for
from tests.streaming.events import policy

ALL = {"analytics": True, "personalization": True, "marketing": True, "sales": True}
FACTS: dict[str, Any] = {"event_name": "Product Viewed", "cart_value": 0.0, "revenue": None, "cart_adds": 0,
                         "product_views": 1}


def test_a_destination_gets_the_event_when_its_purposes_are_granted_and_its_condition_holds():
    routing = route(policy(), FACTS, ALL, [])
    assert routing.chosen == [topics.DEST_WAREHOUSE, topics.DEST_MARKETING]
    assert routing.reasons == {topics.DEST_WAREHOUSE: SENT, topics.DEST_MARKETING: SENT,
                               topics.DEST_SALES: CONDITION_FALSE}
    assert routing.route_rules_fired == [] and routing.shadow_rules_fired == []


def test_a_missing_purpose_withholds_the_destination_and_names_every_missing_purpose():
    pol = policy(routing={"dest.sales": {"purposes": ["sales", "marketing"], "when": True}})
    routing = route(pol, FACTS, {**ALL, "sales": False, "marketing": False}, [])
    assert routing.chosen == [] and routing.reasons == {"dest.sales": "consent_missing:sales,marketing"}


def test_a_condition_that_raises_withholds_the_destination():
    pol = policy(routing={"dest.sales": {"purposes": ["sales"],
                                         "when": {">": [{"*": [{"var": "revenue"}, 10 ** 400]}, 1]}}})
    errors: list[dict[str, str]] = []
    routing = route(pol, {**FACTS, "revenue": 900.0}, ALL, errors)
    assert routing.chosen == [] and routing.reasons == {"dest.sales": CONDITION_ERROR}
    assert [e["rule"] for e in errors] == ["routing.dest.sales"]


def test_an_erased_profile_goes_nowhere_and_no_rule_is_evaluated():
    pol = policy(rules=[{"id": "route.x", "kind": "route", "mode": "enforce", "when": True}])
    routing = route(pol, FACTS, ALL, [], erased=True)
    assert routing.chosen == [] and set(routing.reasons.values()) == {ERASED_PROFILE}
    assert routing.route_rules_fired is None and routing.shadow_rules_fired is None


def test_route_rules_are_recorded_by_mode():
    pol = policy(rules=[{"id": "route.on", "kind": "route", "mode": "enforce", "when": True},
                        {"id": "route.trial", "kind": "route", "mode": "shadow", "when": True},
                        {"id": "route.off", "kind": "route", "mode": "enforce", "when": False}])
    routing = route(pol, FACTS, ALL, [])
    assert (routing.route_rules_fired, routing.shadow_rules_fired) == (["route.on"], ["route.trial"])


def test_the_first_segment_that_holds_is_chosen_and_one_that_raises_is_skipped():
    pol = policy(segments=[{"id": "broken", "action": "a", "when": {">": [{"+": [{"var": "revenue"}, 10 ** 400]},
                                                                          0]}},
                           {"id": "cart_builder", "action": "remind", "when": {">=": [{"var": "cart_adds"}, 1]}},
                           {"id": "browser", "action": "recommend", "when": True}])
    errors: list[dict[str, str]] = []
    chosen = segment_for(pol, {**FACTS, "revenue": 1.0, "cart_adds": 2}, errors)
    assert chosen is not None and (chosen.id, chosen.action) == ("cart_builder", "remind")
    assert [e["rule"] for e in errors] == ["segment.broken"]
    assert segment_for(policy(segments=[]), FACTS, []) is None
