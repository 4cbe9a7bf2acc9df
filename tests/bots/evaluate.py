"""The user-agent decision as the hot path makes it, for one user agent at a time: the benchmark and the tests
measure with it.

:func:`decide` derives an event's facts exactly as stage 1 does (``streaming.facts.derive`` over
``streaming.enrich.device`` and ``streaming.bots``) for the first event of a new device from a residential address
(no datacenter network, no session history: only the user agent can give a bot away), and applies the policy's
bot rules (``streaming.scoring.bot_verdict``). A browser it quarantines is a false positive of the user-agent
decision itself; a bot it lets through may still be caught later by its network or its behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streaming import bots, enrich, facts, scoring
from streaming.policy import CompiledPolicy, bootstrap_policy, compile_policy
from streaming.sessions import SessionState, update_session

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Decision:
    quarantined: bool
    #: enforced bot rules that held
    rules: list[str]
    #: the ledger's ``ua_reasons``
    reasons: list[str]
    #: which pattern sources match at all, unweighed (``streaming.bots.CrawlerMatcher.matches``)
    raw: dict[str, bool]


def first_event_features() -> dict[str, Any]:
    _, features = update_session(SessionState(), device_id="d", ts=T0, type_="page", event_name=None,
                                 properties={})
    return features


_FEATURES = first_event_features()


def bootstrap() -> CompiledPolicy:
    return compile_policy(bootstrap_policy())


def derive(user_agent: str | None, *, datacenter: bool = False,
           features: dict[str, Any] | None = None) -> dict[str, Any]:
    device = enrich.device(user_agent)
    return facts.derive(type="page", event=None, name="Home", properties={}, user_agent=user_agent,
                        source_id="web", features=features or _FEATURES, browser=device.browser, os=device.os,
                        device_type=device.device_type, country="US", region="US",
                        asn="Comcast Cable Communications, LLC", datacenter=datacenter,
                        crawler_pattern=bots.crawler_matcher().match(user_agent), user_id=None)


def decide(user_agent: str | None, policy: CompiledPolicy, *, datacenter: bool = False,
           features: dict[str, Any] | None = None) -> Decision:
    derived = derive(user_agent, datacenter=datacenter, features=features)
    errors: list[dict[str, str]] = []
    scores = scoring.score(policy, derived, errors)
    verdict = scoring.bot_verdict(policy, derived, scores.bot, errors)
    if errors:
        raise RuntimeError(f"a rule raised on {user_agent!r}: {errors}")
    matched = bots.crawler_matcher().matches(user_agent) if user_agent else {}
    return Decision(verdict.is_bot, verdict.fired, facts.ua_reasons(derived) or [],
                    {name: bool(indices) for name, indices in matched.items()})
