"""The generator: one day of traffic for every actor, in ``send_at`` order (a pure function of the scenario).

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from streaming.simulator.bot_traffic import _backfill_day, _crawler_day, _stealth_day, _wave_day
from streaming.simulator.day import _Day, _Emitter
from streaming.simulator.events import SimEvent, _lognormal, _poisson, _sigmoid
from streaming.simulator.population import (
    _apply_action,
    _Bot,
    _catalog,
    _Human,
    _PersonState,
    _plan,
    _population,
    _Product,
    _session_steps,
    _SessionPlan,
    _state_at,
)
from streaming.simulator.reference import CATEGORIES, REFERRERS, encode_tcf
from streaming.simulator.scenario import SITE, Scenario

_INTENT = {  # hidden intent → behaviour
    "low": {"steps": 3.0, "focus": 0.3, "dwell": 11.0, "cart": 0.02},
    "medium": {"steps": 6.0, "focus": 0.55, "dwell": 20.0, "cart": 0.05},
    "high": {"steps": 9.0, "focus": 0.8, "dwell": 30.0, "cart": 0.1},
}


#: Takes a session's checkout decision out of the generator's hands: called with the baseline conversion probability
#: and the session's uniform draw; the session then emits its checkout events whatever the draw, and the caller
#: (the live mode) plays them only if the visitor converts (:mod:`streaming.simulator.response`).
CheckoutHook = Callable[[float, float], None]


def _human_session(sc: Scenario, day: _Day, catalog: dict[str, tuple[_Product, ...]], h: _Human,
                   plan: _SessionPlan, state: _PersonState, checkout_hook: CheckoutHook | None = None) -> None:
    rng = random.Random(f"{sc.seed}:session:{h.idx}:{day.day}:{plan.index}")
    dev = h.devices[plan.device]
    consent_before = dict(state.consent) if state.consent else None
    logged_before = plan.device in state.logged
    banner, login = _session_steps(h, plan, state, day.day)
    params = _INTENT[h.intent]
    truth = {"actor": "human", "actor_id": h.actor_id, "bot_kind": None, "user_id": h.user_id,
             "region": h.region, "country": h.country, "intent": h.intent, "will_convert": False,
             "device": plan.device, "session": f"{h.actor_id}:{day.day}:{plan.index}", "clock_skew_s": dev.skew_s,
             "backfill": False}
    em = _Emitter(day, rng, anonymous_id=dev.anonymous_id, user_id=h.user_id if logged_before else None,
                         ip=dev.ip, user_agent=dev.user_agent, locale=h.locale, timezone=h.timezone,
                         skew_s=dev.skew_s, truth=truth)
    if dev.tcf and consent_before:
        em.tcf = encode_tcf(consent_before, at=day.day_start, publisher_cc=h.country)
    consent_now = consent_before

    def set_consent(new: dict[str, bool], source: str, action: str, t: datetime) -> None:
        nonlocal consent_now
        tc = encode_tcf(new, at=t, publisher_cc=h.country) if dev.tcf else None
        em.tcf = tc
        consent_now = new
        em.truth["consent"] = new
        em.emit(t, "consent", consent=dict(new), properties={"source": source, "action": action})

    em.truth["consent"] = consent_now
    t = day.day_start + timedelta(seconds=plan.start_s)
    # landing
    referrer = rng.choice(REFERRERS)
    r = rng.random()
    landing_cat = rng.choice(h.affinity) if rng.random() < params["focus"] else rng.choice(CATEGORIES)
    if r < 0.45:
        em.open_page("/", "firstmile shop", referrer)
        em.page_view(t, "Home")
    elif r < 0.75:
        em.open_page(f"/c/{landing_cat}", f"{landing_cat.title()} | firstmile shop", referrer)
        em.page_view(t, "Category", landing_cat)
    else:
        em.open_page("/search?q=" + landing_cat, "Search | firstmile shop", referrer)
        em.page_view(t, "Search")
    t += timedelta(seconds=_lognormal(rng, 4.0, 0.6, 1.0, 40.0))
    scheduled_action = plan.action
    if banner:
        choice = dict(dev.banner_choice)
        action = "grant" if all(choice.values()) else "deny" if not any(choice.values()) else "custom"
        set_consent(choice, "banner", action, t)
        t += timedelta(seconds=_lognormal(rng, 3.0, 0.5, 0.8, 20.0))
    if login:
        em.open_page("/account/login", "Sign in | firstmile shop", em.page["url"] if em.page else "")
        em.page_view(t, "Sign In")
        t += timedelta(seconds=_lognormal(rng, 14.0, 0.5, 4.0, 90.0))
        em.user_id = h.user_id
        em.emit(t, "identify", traits={**h.traits, "logged_in_via": "password"})
        em.track(t + timedelta(milliseconds=rng.randint(20, 200)), "Signed In", {"method": "password"})
        t += timedelta(seconds=_lognormal(rng, 2.0, 0.5, 0.5, 10.0))
    elif em.user_id and rng.random() < 0.25:
        em.emit(t, "identify", traits=dict(h.traits))
    steps = 1 + _poisson(rng, params["steps"])
    action_step = rng.randrange(0, max(1, min(steps, 3)))
    cart: list[tuple[_Product, int]] = []
    focus_views = product_views = 0
    dwell_sum = 0.0
    for step in range(steps):
        if scheduled_action and step == action_step:
            new = _apply_action(consent_now, scheduled_action, h.region)
            set_consent(new, "preference_center", scheduled_action, t)
            scheduled_action = None
            t += timedelta(seconds=_lognormal(rng, 3.0, 0.5, 0.8, 20.0))
        r = rng.random()
        if r < 0.68:
            cat = rng.choice(h.affinity) if rng.random() < params["focus"] else rng.choice(CATEGORIES)
            product = rng.choice(catalog[cat])
            prev = em.page["url"] if em.page else ""
            em.open_page(f"/p/{product.sku}", f"{product.name} | firstmile shop", prev)
            if not em.page_view(t, "Product", cat):
                break
            props = {"product_id": product.product_id, "sku": product.sku, "name": product.name,
                     "category": cat, "brand": product.brand, "price": product.price, "currency": h.currency}
            em.track(t + timedelta(milliseconds=rng.randint(150, 1200)), "Product Viewed", props)
            favourite = cat in h.affinity
            dwell = _lognormal(rng, params["dwell"] * (1.5 if favourite else 0.7), 0.85, 2.0, 900.0)
            product_views += 1
            focus_views += favourite
            dwell_sum += dwell
            p_cart = params["cart"] * (2.0 if favourite else 0.6) * (1.5 if dwell > params["dwell"] else 0.8)
            if rng.random() < p_cart:
                qty = 1 if rng.random() < 0.85 else rng.randint(2, 3)
                cart.append((product, qty))
                em.track(t + timedelta(seconds=dwell * rng.uniform(0.4, 0.9)), "Product Added",
                         {**props, "quantity": qty, "cart_id": f"cart_{dev.anonymous_id[:8]}"})
            t += timedelta(seconds=dwell)
        elif r < 0.9:
            cat = rng.choice(h.affinity) if rng.random() < params["focus"] else rng.choice(CATEGORIES)
            em.open_page(f"/c/{cat}", f"{cat.title()} | firstmile shop", em.page["url"] if em.page else "")
            if not em.page_view(t, "Category", cat):
                break
            t += timedelta(seconds=_lognormal(rng, 9.0, 0.7, 1.5, 240.0))
        else:
            q = rng.choice(h.affinity)
            em.open_page(f"/search?q={q}", "Search | firstmile shop", em.page["url"] if em.page else "")
            if not em.page_view(t, "Search"):
                break
            em.track(t + timedelta(milliseconds=rng.randint(100, 600)), "Products Searched", {"query": q})
            t += timedelta(seconds=_lognormal(rng, 7.0, 0.7, 1.5, 120.0))
    if cart and t < day.day_end - timedelta(minutes=15):
        mean_dwell = dwell_sum / max(1, product_views)
        logit = (-4.4 + 0.8 * min(len(cart), 4) + 0.22 * min(focus_views, 10) + 0.02 * min(mean_dwell, 150.0)
                 + (0.6 if em.user_id else 0.0) + rng.gauss(0, 0.5))
        draw = rng.random()  # drawn before the probability, as always: the ahead-of-time output stays identical
        p_baseline = _sigmoid(logit)
        if checkout_hook is not None:
            checkout_hook(p_baseline, draw)
            _checkout(em, rng, h, cart, t)
        elif draw < p_baseline:
            _checkout(em, rng, h, cart, t)


def _checkout(em: _Emitter, rng: random.Random, h: _Human, cart: list[tuple[_Product, int]],
              t: datetime) -> None:
    # mark the whole session (already emitted events too) as converting
    for _, _, ev in em.day.items:
        if ev.truth.get("session") == em.truth["session"]:
            ev.truth["will_convert"] = True
    em.truth["will_convert"] = True
    cart_id = f"cart_{(em.anonymous_id or '')[:8]}"
    products = [{"product_id": p.product_id, "sku": p.sku, "name": p.name, "category": p.category,
                 "price": p.price, "quantity": q} for p, q in cart]
    total = round(sum(p.price * q for p, q in cart), 2)
    em.open_page("/cart", "Cart | firstmile shop", em.page["url"] if em.page else "")
    em.page_view(t, "Cart")
    em.track(t + timedelta(milliseconds=rng.randint(100, 500)), "Cart Viewed",
             {"cart_id": cart_id, "products": products})
    t += timedelta(seconds=_lognormal(rng, 12.0, 0.6, 3.0, 120.0))
    em.open_page("/checkout", "Checkout | firstmile shop", SITE + "/cart")
    em.page_view(t, "Checkout")
    em.track(t + timedelta(milliseconds=rng.randint(100, 500)), "Checkout Started",
             {"cart_id": cart_id, "value": total, "currency": h.currency, "products": products})
    t += timedelta(seconds=_lognormal(rng, 45.0, 0.5, 10.0, 600.0))
    if not em.user_id:  # guest checkout: identify with traits on the anonymous device
        em.emit(t, "identify", traits={**h.traits, "guest": True})
        t += timedelta(milliseconds=rng.randint(200, 900))
    shipping = 0.0 if total > 50 else 4.99
    tax = round(total * 0.19 / 1.19, 2) if h.currency == "EUR" else round(total * 0.07, 2)
    em.track(t, "Order Completed", {"order_id": f"ord_{rng.getrandbits(48):012x}", "checkout_id": cart_id,
                                    "total": round(total + shipping, 2), "revenue": total, "shipping": shipping,
                                    "tax": tax, "currency": h.currency, "products": products})
    em.open_page("/order/confirmation", "Thank you | firstmile shop", SITE + "/checkout")
    em.page_view(t + timedelta(seconds=rng.uniform(0.8, 2.5)), "Order Confirmation")


@dataclass
class _World:
    sc: Scenario
    catalog: dict[str, tuple[_Product, ...]]
    humans: list[_Human]
    bots: list[_Bot]


@lru_cache(maxsize=8)
def _world(sc: Scenario) -> _World:
    humans, bots = _population(sc)
    return _World(sc, _catalog(sc), humans, bots)


def _generate_day(world: _World, day: int) -> list[SimEvent]:
    sc = world.sc
    d = _Day(sc, day)
    for h in world.humans:
        state = _state_at(sc, h, day)
        for plan in _plan(sc, h, day):
            _human_session(sc, d, world.catalog, h, plan, state)
    for bot in world.bots:
        if bot.bot_kind == "crawler":
            _crawler_day(sc, d, world.catalog, bot)
        elif bot.bot_kind == "scraper":
            _stealth_day(sc, d, world.catalog, bot)
        elif sc.bot_wave_day is not None and day >= sc.bot_wave_day:
            _wave_day(sc, d, world.catalog, bot)
    if sc.backfill_orders and day == sc.backfill_day:
        _backfill_day(sc, d, world.catalog, world.humans)
    return d.sorted()


def generate(scenario: Scenario, *, day: int | None = None) -> Iterator[SimEvent]:
    """Yield the scenario's events in ``send_at`` order: all days (``day=None``) or only day ``day`` (0-based).

    Pure function of the scenario: same seed → identical output, and ``day=k`` equals the day-k slice of the full
    run. Payloads are fresh copies: mutating them does not affect later calls.
    """
    if day is not None and not 0 <= day < scenario.days:
        raise ValueError(f"day must be in 0..{scenario.days - 1}, got {day}")
    world = _world(scenario)
    for d in ([day] if day is not None else range(scenario.days)):
        yield from _generate_day(world, d)
