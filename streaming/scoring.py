"""Rules and models evaluated over an event's facts: the scores, and the bot verdict of stage 1.

A rule or model that raises (a bad rule, never bad input) is contained: it counts as not fired (a model is
skipped), the event is still decided, and the failure is recorded in the ledger's ``errors``. A model that returns
a value that is not finite is a failure too. A rule in ``shadow`` mode is recorded, never enforced.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from streaming.decided import Scores
from streaming.policy import CompiledPolicy, LinearModel
from streaming.rules import Predicate

#: What stage 1 records for the bot model's threshold (``ml.candidate`` reads it back from the ledger).
BOT_MODEL = "model.bot"
#: The reason an event is quarantined because an earlier event of its session was (by an enforced rule or model):
#: a session is one actor, so the verdict holds for the rest of it.
SESSION_QUARANTINED = "bot.session_quarantined"


def rule_error(rule_id: str, exc: Exception) -> dict[str, str]:
    """A ledger ``errors`` entry (``streaming.decided.RuleError``)."""
    return {"rule": rule_id, "error": f"{type(exc).__name__}: {exc}"[:200]}


def holds(predicate: Predicate, facts: dict[str, Any], rule_id: str, errors: list[dict[str, str]]) -> bool:
    """A rule's verdict; a rule that raises is false and recorded in ``errors``."""
    try:
        return bool(predicate(facts))
    except Exception as exc:  # noqa: BLE001 - contained: the event is decided without this rule, and flagged
        errors.append(rule_error(rule_id, exc))
        return False


def model_score(model: LinearModel | None, facts: dict[str, Any], errors: list[dict[str, str]]) -> float | None:
    """A model's score, or None (the model is skipped and the event flagged) if it raises or is not finite."""
    if model is None:
        return None
    try:
        value = model.score(facts)
        if not math.isfinite(value):
            raise ValueError(f"score is {value}")
        return float(value)
    except Exception as exc:  # noqa: BLE001
        errors.append(rule_error(f"model.{model.name}", exc))
        return None


def score(policy: CompiledPolicy, facts: dict[str, Any], errors: list[dict[str, str]]) -> Scores:
    """The policy's bot model, then its propensity model (which may read ``bot_score``); each score is added to
    ``facts`` (``bot_score``, ``score``) for the rules after it. Returns them as the ledger's ``scores``."""
    bot = model_score(policy.bot_model, facts, errors)
    facts["bot_score"] = bot
    propensity = model_score(policy.propensity, facts, errors)
    facts["score"] = propensity
    return Scores(propensity=propensity, bot=bot)


class BotVerdict(msgspec.Struct, frozen=True):
    #: enforced rules (and :data:`BOT_MODEL`) that held: any one makes the event a bot's
    fired: list[str]
    #: the same in shadow mode: recorded only
    shadow: list[str]

    @property
    def is_bot(self) -> bool:
        return bool(self.fired)


def bot_verdict(policy: CompiledPolicy, facts: dict[str, Any], bot_score: float | None,
                errors: list[dict[str, str]]) -> BotVerdict:
    """The policy's bot rules over the facts, in order, then the bot model's threshold."""
    fired: list[str] = []
    shadow: list[str] = []
    for rule in policy.bot_rules:
        if holds(rule.predicate, facts, rule.id, errors):
            (fired if rule.mode == "enforce" else shadow).append(rule.id)
    model = policy.bot_model
    if model and bot_score is not None and model.threshold is not None and bot_score >= model.threshold:
        (fired if model.mode == "enforce" else shadow).append(BOT_MODEL)
    return BotVerdict(fired, shadow)
