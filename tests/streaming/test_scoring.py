"""Rules and models over an event's facts (streaming/scoring.py): contained failures, the scores, the bot
verdict."""

from __future__ import annotations

import dataclasses
from typing import Any

from streaming.decided import Scores
from streaming.scoring import BOT_MODEL, bot_verdict, holds, model_score, score
from tests.streaming.events import logistic, policy


def _raises(facts: Any) -> bool:
    raise ZeroDivisionError("x" * 500)


def test_a_rule_that_holds_or_not_records_nothing():
    errors: list[dict[str, str]] = []
    assert holds(lambda f: f["n"] > 1, {"n": 2}, "r", errors) is True
    assert holds(lambda f: f["n"] > 1, {"n": 0}, "r", errors) is False
    assert errors == []


def test_a_rule_that_raises_is_false_and_recorded_short():
    errors: list[dict[str, str]] = []
    assert holds(_raises, {}, "bot.broken", errors) is False
    assert errors[0]["rule"] == "bot.broken" and errors[0]["error"].startswith("ZeroDivisionError: xxx")
    assert len(errors[0]["error"]) == 200


class _Model:
    name = "propensity"

    def __init__(self, value: Any) -> None:
        self.value = value

    def score(self, facts: Any) -> Any:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def test_a_model_score_is_skipped_and_flagged_when_it_raises_or_is_not_finite():
    errors: list[dict[str, str]] = []
    assert model_score(None, {}, errors) is None and errors == []
    assert model_score(_Model(0.25), {}, errors) == 0.25  # type: ignore[arg-type]
    assert model_score(_Model(RuntimeError("down")), {}, errors) is None  # type: ignore[arg-type]
    assert model_score(_Model(float("nan")), {}, errors) is None  # type: ignore[arg-type]
    assert errors == [{"rule": "model.propensity", "error": "RuntimeError: down"},
                      {"rule": "model.propensity", "error": "ValueError: score is nan"}]


def test_the_bot_model_scores_first_and_the_propensity_model_may_read_its_score():
    pol = policy(models={"bot": logistic(["page_views"], coef=1.0, threshold=1.0),
                         "propensity": logistic(["bot_score"], coef=-50.0)})
    facts: dict[str, Any] = {"page_views": 3.0}
    scores = score(pol, facts, [])
    assert isinstance(scores, Scores)
    assert scores.bot is not None and scores.bot > 0.9 and facts["bot_score"] == scores.bot
    assert scores.propensity is not None and scores.propensity < 0.01 and facts["score"] == scores.propensity


def test_without_models_the_scores_are_none():
    facts: dict[str, Any] = {}
    assert score(policy(), facts, []) == Scores(propensity=None, bot=None)
    assert facts == {"bot_score": None, "score": None}


def test_enforced_rules_fire_and_shadow_rules_are_only_recorded():
    pol = policy(rules=[
        {"id": "bot.a", "kind": "bot", "mode": "enforce", "when": {">": [{"var": "page_views"}, 1]}},
        {"id": "bot.b", "kind": "bot", "mode": "shadow", "when": {">": [{"var": "page_views"}, 1]}},
        {"id": "bot.c", "kind": "bot", "mode": "enforce", "when": {">": [{"var": "page_views"}, 100]}}])
    verdict = bot_verdict(pol, {"page_views": 5}, None, [])
    assert (verdict.fired, verdict.shadow, verdict.is_bot) == (["bot.a"], ["bot.b"], True)
    calm = bot_verdict(pol, {"page_views": 0}, None, [])
    assert (calm.fired, calm.shadow, calm.is_bot) == ([], [], False)


def test_the_bot_model_threshold_fires_in_its_mode():
    shadow = policy(models={"bot": logistic(["page_views"], threshold=0.9, mode="shadow")})
    assert bot_verdict(shadow, {}, 0.95, []).shadow == [BOT_MODEL]
    assert bot_verdict(shadow, {}, 0.5, []).shadow == []
    assert bot_verdict(shadow, {}, None, []).shadow == []
    assert shadow.bot_model is not None
    enforced = dataclasses.replace(shadow, bot_model=dataclasses.replace(shadow.bot_model, mode="enforce"))
    assert bot_verdict(enforced, {}, 0.9, []).fired == [BOT_MODEL]


def test_a_bot_rule_that_raises_does_not_fire_and_is_flagged():
    pol = policy(rules=[{"id": "bot.overflow", "kind": "bot", "mode": "enforce",
                         "when": {">": [{"+": [{"var": "revenue"}, 10 ** 400]}, 0]}}])
    errors: list[dict[str, str]] = []
    assert bot_verdict(pol, {"revenue": 1.0}, None, errors).is_bot is False
    assert [e["rule"] for e in errors] == ["bot.overflow"]
