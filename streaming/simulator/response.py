"""How a simulated visitor responds to the action a website shows it in-session: the hidden-intent response model.

The generator decides a session's checkout with a logistic function of observable behaviour (cart size, focus,
dwell, being logged in) and one uniform draw: it converts when ``draw < p_baseline``. The live mode
(:mod:`streaming.simulator.live`) keeps that baseline and that draw, and lets the action the website was shown move
the probability::

    p = p_baseline + (1 - p_baseline) * offer_uplift * INTENT_RESPONSE[intent] * ACTION_RELEVANCE[action]

that is, an action closes a share of the visitor's remaining chance to abandon the cart: all of ``offer_uplift``
for a high-intent visitor shown a cart action (a checkout reminder, free shipping), a tenth of it for a low-intent
one, nothing without an action. ``offer_uplift`` is a scenario field (default 0.3). The same draw decides every
counterfactual (no action, the batch's next-session action), so an action can only add conversions to a session,
never remove them, and two worlds compared on the same sessions differ only by what they showed.

Only sessions that built a cart reach a checkout decision (as in the generator): an action cannot make a visitor
without a cart convert; the browsing before the decision is the generator's, whatever was shown.

Part of :mod:`streaming.simulator`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: How strongly each hidden intent responds to a relevant action (a share of ``offer_uplift``).
INTENT_RESPONSE: dict[str, float] = {"high": 1.0, "medium": 0.4, "low": 0.1}
#: How relevant each action the policy can choose is to a visitor deciding whether to check out a cart. The
#: bootstrap policy's actions are checked against this table by a test (tests/streaming/test_live.py).
ACTION_RELEVANCE: dict[str, float] = {
    "show_checkout_reminder": 1.0,  # cart_builder: acts on the cart itself
    "offer_free_shipping": 1.0,     # a price incentive on the cart
    "show_recommendations": 0.5,    # browser: more reasons to buy, not a nudge to finish
}
#: An action the table does not know (a learned policy's new segment): a weak, generic nudge.
UNKNOWN_RELEVANCE = 0.25


@dataclass(frozen=True, slots=True)
class Response:
    """One checkout decision: the action that counted (the strongest shown), the probability it gave, the outcome."""

    action: str | None
    probability: float
    converted: bool


def lift(action: str | None, *, intent: str, offer_uplift: float) -> float:
    """The share of the remaining chance to abandon that ``action`` closes for a visitor of ``intent``."""
    if not action:
        return 0.0
    return offer_uplift * INTENT_RESPONSE[intent] * ACTION_RELEVANCE.get(action, UNKNOWN_RELEVANCE)


def conversion_probability(p_baseline: float, action: str | None, *, intent: str, offer_uplift: float) -> float:
    """``p_baseline`` moved by ``action`` (``None``: no action shown, the baseline)."""
    return p_baseline + (1.0 - p_baseline) * lift(action, intent=intent, offer_uplift=offer_uplift)


def respond(p_baseline: float, draw: float, shown: Iterable[str | None], *, intent: str,
            offer_uplift: float) -> Response:
    """The visitor's checkout decision after being shown ``shown`` (in order; ``None`` entries: nothing shown).
    The strongest action counts (ties: the first shown); converts when ``draw < p``."""
    best: str | None = None
    for action in shown:
        if action and lift(action, intent=intent, offer_uplift=offer_uplift) > lift(
                best, intent=intent, offer_uplift=offer_uplift):
            best = action
    p = conversion_probability(p_baseline, best, intent=intent, offer_uplift=offer_uplift)
    return Response(best, p, draw < p)
