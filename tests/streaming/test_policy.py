"""The policy loader: valid, invalid, newer and older documents."""

import json

import pytest

from streaming.errors import PolicyError
from streaming.policy import PolicyHolder, bootstrap_policy, compile_policy, parse_policy, seal


def _v(version: int, **changes):
    doc = bootstrap_policy()
    doc.update(changes)
    doc["policy_version"] = version
    return seal(doc)


def test_bootstrap_policy_compiles_with_its_rules_and_routes():
    policy = compile_policy(bootstrap_policy())
    assert policy.version == 1
    assert [r.id for r in policy.bot_rules] == ["bot.ua_crawler", "bot.ua_isbot", "bot.ua_self_identified",
                                                "bot.ua_library", "bot.ua_weak_pattern", "bot.ua_missing",
                                                "bot.rate_flood"]
    assert {r.destination for r in policy.routes} == {"dest.warehouse", "dest.marketing", "dest.sales"}


def test_edited_document_is_rejected_by_checksum():
    doc = bootstrap_policy()
    doc["rules"][0]["mode"] = "shadow"
    with pytest.raises(PolicyError, match="policy.checksum"):
        compile_policy(doc)


@pytest.mark.parametrize(("change", "field"), [
    ({"rules": [{"id": "r1", "kind": "bot", "when": {"regex": ["a", "b"]}}]}, "unknown operator"),
    ({"rules": [{"id": "r1", "kind": "bot", "when": {">": [{"var": "no_such_fact"}, 1]}}]}, "no_such_fact"),
    ({"rules": [{"id": "r1", "kind": "bot", "mode": "sometimes", "when": True}]}, "rules[0] (id='r1').mode"),
    ({"rules": [{"id": "r1", "kind": "bot", "when": True}, {"id": "r1", "kind": "bot", "when": True}]}, "duplicate"),
    ({"routing": {"dest.warehouse": {"purposes": ["telepathy"]}}}, "routing['dest.warehouse'].purposes"),
    ({"consent": {"region_defaults": {"EU": {"analytics": True}}}}, "region_defaults['EU']"),
    ({"models": {"propensity": {"kind": "logistic", "features": ["cart_value"], "mean": [0], "scale": [0],
                                "coef": [1], "intercept": 0}}}, "models.propensity.scale"),
])
def test_invalid_policy_is_rejected_naming_the_field(change, field):
    with pytest.raises(PolicyError) as info:
        compile_policy(_v(2, **change))
    assert field in str(info.value)


def test_holder_swaps_newer_ignores_older_and_keeps_last_good_on_invalid():
    holder = PolicyHolder()
    assert holder.offer(json.dumps(_v(3)))
    assert holder.current.version == 3
    assert not holder.offer(_v(2))
    assert holder.current.version == 3
    bad = _v(4)
    bad["rules"] = []  # checksum no longer matches
    assert not holder.offer(bad)
    assert not holder.offer(b"{not json")
    assert holder.current.version == 3
    assert [v for v, _ in holder.rejected] == [2, 4, None]
    assert holder.offer(_v(4))
    assert holder.current.version == 4


def test_parse_policy_rejects_non_json():
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_policy(b"\xff")
