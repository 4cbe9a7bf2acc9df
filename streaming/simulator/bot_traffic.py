"""One day of each bot kind (listed crawlers, stealth scrapers, the new wave) and of historical backfill.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from streaming.simulator.day import _Day, _Emitter
from streaming.simulator.events import _iso, _lognormal, _poisson, _uuid
from streaming.simulator.population import _Bot, _Human, _Product
from streaming.simulator.reference import CATEGORIES, COUNTRIES, cloud_ip, country_ip, geo_lookup, region_of
from streaming.simulator.scenario import Scenario


def _bot_truth(bot: _Bot, region: str, country: str, session: str) -> dict[str, Any]:
    return {"actor": bot.actor, "actor_id": bot.actor_id, "bot_kind": bot.bot_kind, "bot_name": bot.bot_name,
            "user_id": None, "region": region, "country": country, "intent": None, "will_convert": False,
            "device": 0, "session": session, "clock_skew_s": 0.0, "backfill": False, "consent": None}


def _crawler_day(sc: Scenario, day: _Day, catalog: dict[str, tuple[_Product, ...]], bot: _Bot) -> None:
    rng = random.Random(f"{sc.seed}:crawler:{bot.actor_id}:{day.day}")
    products = [p for cat in CATEGORIES for p in catalog[cat]]
    for s in range(_poisson(rng, sc.crawler_sessions_per_day)):
        ip, provider = cloud_ip(rng, sc.seed, bot.provider)
        country, _ = geo_lookup(ip)
        truth = _bot_truth(bot, region_of(country), country, f"{bot.actor_id}:{day.day}:{s}")
        truth["provider"] = provider
        em = _Emitter(day, rng, anonymous_id=_uuid(rng), user_id=None, ip=ip, user_agent=bot.user_agents[0],
                             locale=None, timezone=None, skew_s=0.0, truth=truth)
        t = day.day_start + timedelta(seconds=rng.uniform(0, 22 * 3600))
        for _ in range(rng.randint(15, 60)):
            r = rng.random()
            if r < 0.6:
                p = rng.choice(products)
                em.open_page(f"/p/{p.sku}", f"{p.name} | firstmile shop", "")
                ok = em.page_view(t, "Product", p.category)
            elif r < 0.9:
                cat = rng.choice(CATEGORIES)
                em.open_page(f"/c/{cat}", f"{cat.title()} | firstmile shop", "")
                ok = em.page_view(t, "Category", cat)
            else:
                em.open_page("/", "firstmile shop", "")
                ok = em.page_view(t, "Home")
            if not ok:
                break
            t += timedelta(seconds=_lognormal(rng, bot.base_interval, 0.35, 0.5, 30.0))


def _stealth_day(sc: Scenario, day: _Day, catalog: dict[str, tuple[_Product, ...]], bot: _Bot) -> None:
    """Scraper v1: browser UA, datacenter IP, a metronome rhythm (~1 s, ±4 %), no dwell, product views, no cart."""
    rng = random.Random(f"{sc.seed}:stealth:{bot.actor_id}:{day.day}")
    products = [p for cat in CATEGORIES for p in catalog[cat]]
    ip, provider = cloud_ip(rng, sc.seed, bot.provider)
    country, _ = geo_lookup(ip)
    for s in range(_poisson(rng, sc.stealth_sessions_per_day)):
        truth = _bot_truth(bot, region_of(country), country, f"{bot.actor_id}:{day.day}:{s}")
        truth["provider"] = provider
        em = _Emitter(day, rng, anonymous_id=_uuid(rng), user_id=None, ip=ip, user_agent=bot.user_agents[0],
                             locale="en-US", timezone="UTC", skew_s=0.0, truth=truth)
        t = day.day_start + timedelta(seconds=rng.uniform(0, 22 * 3600))
        start = rng.randrange(len(products))
        for k in range(rng.randint(40, 120)):
            p = products[(start + k) % len(products)]
            em.open_page(f"/p/{p.sku}", f"{p.name} | firstmile shop", "")
            if not em.page_view(t, "Product", p.category):
                break
            em.track(t + timedelta(milliseconds=rng.randint(40, 120)), "Product Viewed",
                     {"product_id": p.product_id, "sku": p.sku, "name": p.name, "category": p.category,
                      "brand": p.brand, "price": p.price, "currency": "USD"})
            t += timedelta(seconds=bot.base_interval * rng.uniform(0.96, 1.04))


def _wave_day(sc: Scenario, day: _Day, catalog: dict[str, tuple[_Product, ...]], bot: _Bot) -> None:
    """Hoarder v2 (the new wave): residential IPs and mobile UAs rotated per session, human-like irregular rhythm,
    very short sessions that land straight on a few expensive products and put several in the cart, never buy,
    never answer a consent banner; bursts in the small hours (UTC)."""
    rng = random.Random(f"{sc.seed}:wave:{bot.actor_id}:{day.day}")
    targets = sorted(catalog["electronics"], key=lambda p: -p.price)[:4] + \
        sorted(catalog["toys"], key=lambda p: -p.price)[:2]
    burst_center = rng.uniform(1.5, 5.0) * 3600
    for s in range(_poisson(rng, sc.wave_sessions_per_day)):
        country = rng.choice(("US", "US", "GB", "DE", "FR", "CA"))
        ip = country_ip(rng, sc.seed, country)
        truth = _bot_truth(bot, region_of(country), country, f"{bot.actor_id}:{day.day}:{s}")
        _, locale, tz, *_ = COUNTRIES[country]
        em = _Emitter(day, rng, anonymous_id=_uuid(rng), user_id=None, ip=ip,
                             user_agent=rng.choice(bot.user_agents), locale=locale, timezone=tz, skew_s=0.0,
                             truth=truth)
        t = day.day_start + timedelta(seconds=min(22 * 3600, max(0.0, rng.gauss(burst_center, 2400))))
        for _ in range(rng.randint(1, 3)):
            p = rng.choice(targets)
            em.open_page(f"/p/{p.sku}", f"{p.name} | firstmile shop", "")
            if not em.page_view(t, "Product", p.category):
                break
            props = {"product_id": p.product_id, "sku": p.sku, "name": p.name, "category": p.category,
                     "brand": p.brand, "price": p.price, "currency": "USD"}
            em.track(t + timedelta(milliseconds=rng.randint(300, 1500)), "Product Viewed", props)
            t += timedelta(seconds=_lognormal(rng, bot.base_interval, 0.6, 1.0, 30.0))
            em.track(t, "Product Added", {**props, "quantity": rng.randint(2, 5),
                                          "cart_id": f"cart_{(em.anonymous_id or '')[:8]}"})
            t += timedelta(seconds=_lognormal(rng, bot.base_interval, 0.6, 1.0, 30.0))
        em.open_page("/cart", "Cart | firstmile shop", em.page["url"] if em.page else "")
        em.page_view(t, "Cart")


def _backfill_day(sc: Scenario, day: _Day, catalog: dict[str, tuple[_Product, ...]], humans: list[_Human]) -> None:
    """Last year's orders imported server-side: userId only, old timestamps, no sentAt (kept as-is downstream)."""
    rng = random.Random(f"{sc.seed}:backfill")
    if not humans:
        return
    customers = [h for h in humans if h.registered] or humans
    send = day.day_start + timedelta(hours=2)
    for i in range(sc.backfill_orders):
        h = rng.choice(customers)
        days_ago = rng.uniform(sc.backfill_min_days_ago, sc.backfill_max_days_ago)
        when = datetime(sc.start_date.year, sc.start_date.month, sc.start_date.day, tzinfo=UTC) - \
            timedelta(days=days_ago)
        items = []
        for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 4)):
            p = rng.choice(catalog[rng.choice(h.affinity) if rng.random() < 0.7 else rng.choice(CATEGORIES)])
            items.append((p, 1 if rng.random() < 0.85 else 2))
        total = round(sum(p.price * q for p, q in items), 2)
        truth = {"actor": "human", "actor_id": h.actor_id, "bot_kind": None, "user_id": h.user_id,
                 "region": h.region, "country": h.country, "intent": h.intent, "will_convert": True, "device": None,
                 "session": None, "clock_skew_s": 0.0, "backfill": True, "consent": None,
                 "original_timestamp": _iso(when)}
        payload = {"type": "track", "messageId": _uuid(rng), "userId": h.user_id, "event": "Order Completed",
                   "timestamp": _iso(when),
                   "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
                   "properties": {"order_id": f"ord_{rng.getrandbits(48):012x}", "total": total, "revenue": total,
                                  "currency": h.currency, "products": [
                                      {"product_id": p.product_id, "sku": p.sku, "category": p.category,
                                       "price": p.price, "quantity": q} for p, q in items]},
                   "integrations": {"All": True}}
        day.add(payload, truth, send + timedelta(milliseconds=5 * i))
