"""The simulated population: humans with hidden intent and devices, bots of every kind, the catalog, and
each person's consent state carried across days.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from streaming.simulator.events import _lognormal, _poisson, _uuid
from streaming.simulator.reference import (
    _CATEGORY_PRICE,
    CATEGORIES,
    CLOUDS,
    COUNTRIES,
    EMAIL_DOMAINS,
    EU_COUNTRIES,
    FIRST_NAMES,
    LAST_NAMES,
    OTHER_COUNTRIES,
    US_TIMEZONES,
    _pick_browser_ua,
    country_ip,
    crawler_user_agents,
    region_of,
)
from streaming.simulator.scenario import PURPOSES, Scenario

# --- population -----------------------------------------------------------------------------------------------------

@dataclass
class _Device:
    anonymous_id: str
    user_agent: str
    ip: str
    skew_s: float
    first_day: int
    login_day: int | None  # the device logs in at its first session on/after this day
    seen_before: bool  # visited before day 0 (no banner on day 0)
    logged_in_before: bool
    tcf: bool
    banner_choice: dict[str, bool]


@dataclass
class _Human:
    idx: int
    actor_id: str
    user_id: str
    country: str
    region: str
    locale: str
    timezone: str
    utc_offset: float
    currency: str
    intent: str
    affinity: tuple[str, ...]
    activity: float
    registered: bool
    initial_consent: dict[str, bool] | None
    devices: list[_Device]
    traits: dict[str, Any]


@dataclass
class _Bot:
    actor_id: str
    actor: str  # crawler | stealth_bot
    bot_kind: str  # crawler | scraper | wave
    bot_name: str
    user_agents: tuple[str, ...]
    provider: str | None
    base_interval: float


@dataclass(frozen=True)
class _Product:
    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    price: float


def _catalog(sc: Scenario) -> dict[str, tuple[_Product, ...]]:
    rng = random.Random(f"{sc.seed}:catalog")
    brands = ("Acme", "Nordlys", "Veloce", "Kumo", "Atlas", "Brio", "Lumen", "Tessa")
    out = {}
    for cat in CATEGORIES:
        items = []
        for i in range(sc.products_per_category):
            price = round(_lognormal(rng, _CATEGORY_PRICE[cat], 0.6, 1.0, 5000.0), 2)
            sku = f"{cat[:3].upper()}-{i:04d}"
            items.append(_Product(f"p_{rng.getrandbits(40):010x}", sku, f"{rng.choice(brands)} {cat} {i}", cat,
                                  rng.choice(brands), price))
        out[cat] = tuple(items)
    return out


_CHOICES_BANNER = (
    ({"analytics": True, "personalization": True, "marketing": True, "sales": True}, 0.58),
    ({"analytics": False, "personalization": False, "marketing": False, "sales": False}, 0.22),
    ({"analytics": True, "personalization": False, "marketing": False, "sales": False}, 0.12),
    ({"analytics": True, "personalization": True, "marketing": False, "sales": False}, 0.08),
)


def _population(sc: Scenario) -> tuple[list[_Human], list[_Bot]]:
    rng = random.Random(f"{sc.seed}:population")
    humans: list[_Human] = []
    for i in range(sc.users):
        r = rng.random()
        if r < sc.eu_share:
            country = rng.choices(EU_COUNTRIES, weights=[COUNTRIES[c][0] for c in EU_COUNTRIES])[0]
        elif r < sc.eu_share + sc.us_share:
            country = "US"
        else:
            country = rng.choices(OTHER_COUNTRIES, weights=[COUNTRIES[c][0] for c in OTHER_COUNTRIES])[0]
        _, locale, tz, offset, currency, phone_prefix = COUNTRIES[country]
        if country == "US":
            tz, offset = rng.choice(US_TIMEZONES)
        r = rng.random()
        intent = "high" if r < sc.intent_high_share else "low" if r < sc.intent_high_share + sc.intent_low_share \
            else "medium"
        affinity = tuple(rng.sample(CATEGORIES, 1 if rng.random() < 0.6 else 2))
        registered = rng.random() < sc.registered_share
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        digits = "".join(str(rng.randrange(10)) for _ in range(8))
        traits = {
            "email": f"{first.lower()}.{last.lower().replace(' ', '')}{rng.randrange(1, 99)}"
                     f"@{rng.choice(EMAIL_DOMAINS)}",
            "phone": f"{phone_prefix}{digits[:3]} {digits[3:]}".replace("  ", " "),
            "first_name": first,
            "last_name": last,
        }
        region = region_of(country)
        initial_consent = None
        seen_before = rng.random() < 0.5
        if region == "EU" and seen_before:
            initial_consent = dict(rng.choices([c for c, _ in _CHOICES_BANNER],
                                               weights=[w for _, w in _CHOICES_BANNER])[0])
        devices = []
        n_devices = 2 if registered and rng.random() < sc.second_device_rate else 1
        mobile_first = rng.random() < 0.6
        for d in range(n_devices):
            device_type = ("mobile" if mobile_first else "desktop") if d == 0 else \
                ("desktop" if mobile_first else "mobile")
            skew = 0.0
            if rng.random() < sc.clock_skew_rate:
                skew = rng.choice((1, -1)) * (rng.uniform(90, 900) if rng.random() < 0.6 else
                                               rng.uniform(3600, 3 * 3600))
            if d == 0:
                first_day, logged_before = 0, registered and rng.random() < 0.6
                login_day = None if not registered or logged_before else rng.randrange(sc.days)
            else:
                first_day = rng.randrange(sc.days)
                logged_before, login_day = False, first_day
            choice = dict(rng.choices([c for c, _ in _CHOICES_BANNER], weights=[w for _, w in _CHOICES_BANNER])[0])
            devices.append(_Device(
                anonymous_id=_uuid(rng), user_agent=_pick_browser_ua(rng, device_type),
                ip=country_ip(rng, sc.seed, country),
                skew_s=round(skew, 3), first_day=first_day, login_day=login_day,
                seen_before=d == 0 and seen_before, logged_in_before=logged_before,
                tcf=region == "EU" and rng.random() < sc.tcf_share, banner_choice=choice))
        humans.append(_Human(
            idx=i, actor_id=f"h{i:05d}", user_id=f"usr_{rng.getrandbits(48):012x}", country=country, region=region,
            locale=locale, timezone=tz, utc_offset=offset, currency=currency, intent=intent, affinity=affinity,
            activity=_lognormal(rng, 1.0, 0.5, 0.2, 4.0), registered=registered, initial_consent=initial_consent,
            devices=devices, traits=traits))
    bots: list[_Bot] = []
    crawlers = crawler_user_agents()
    brng = random.Random(f"{sc.seed}:bots")
    for i in range(sc.crawler_bots):
        pattern, instances = crawlers[i % len(crawlers)] if i < len(crawlers) else brng.choice(crawlers)
        name = pattern.replace("\\/", "").replace("\\", "")
        provider = "GOOGLE" if "Google" in name else "MICROSOFT" if "bing" in name else None
        bots.append(_Bot(f"c{i:03d}", "crawler", "crawler", name, (brng.choice(instances),), provider,
                         brng.uniform(2.0, 6.0)))
    for i in range(sc.stealth_bots):
        ua = _pick_browser_ua(brng, "desktop", {"Chrome", "Edge"})
        bots.append(_Bot(f"s{i:03d}", "stealth_bot", "scraper", "scraper-v1", (ua,),
                         brng.choice(sorted(CLOUDS)), brng.uniform(0.8, 1.8)))
    if sc.bot_wave_day is not None:
        for i in range(sc.wave_bots):
            uas = tuple(_pick_browser_ua(brng, "mobile") for _ in range(8))
            bots.append(_Bot(f"w{i:03d}", "stealth_bot", "wave", "hoarder-v2", uas, None, brng.uniform(3.0, 6.0)))
    return humans, bots


# --- per-day plans and cross-day state ------------------------------------------------------------------------------

@dataclass
class _SessionPlan:
    index: int
    device: int
    start_s: float  # seconds after the day's 00:00 UTC
    action: str | None  # revoke | revoke_all | grant | dns | None


def _local_start(rng: random.Random, offset_h: float) -> float:
    """Seconds after 00:00 UTC: a diurnal local-time profile (lunch and evening peaks), kept before 23:00 UTC."""
    while True:
        r = rng.random()
        local_h = rng.gauss(12.5, 1.5) if r < 0.3 else rng.gauss(20.5, 1.6) if r < 0.75 else rng.uniform(7, 23.5)
        utc_s = ((local_h - offset_h) % 24) * 3600 + rng.uniform(0, 60)
        if utc_s < 23 * 3600:
            return utc_s


def _plan(sc: Scenario, h: _Human, day: int) -> list[_SessionPlan]:
    rng = random.Random(f"{sc.seed}:plan:{h.idx}:{day}")
    n = _poisson(rng, sc.sessions_per_user_per_day * h.activity)
    active = [i for i, d in enumerate(h.devices) if d.first_day <= day]
    plans = []
    for s in range(n):
        device = active[0] if len(active) == 1 or rng.random() < 0.6 else rng.choice(active)
        start = _local_start(rng, h.utc_offset)
        action = None
        r = rng.random()
        if r < sc.consent_revocation_rate:
            action = "revoke_all" if rng.random() < 0.3 else "revoke"
        elif r < sc.consent_revocation_rate + sc.consent_grant_rate:
            action = "grant"
        elif h.region == "US" and r < sc.consent_revocation_rate + sc.consent_grant_rate + 0.02:
            action = "dns"
        plans.append(_SessionPlan(s, device, start, action))
    plans.sort(key=lambda p: (p.start_s, p.index))
    return plans


def _apply_action(state: dict[str, bool] | None, action: str, region: str) -> dict[str, bool]:
    base = dict(state) if state else _region_default(region)
    if action == "revoke":
        base.update(marketing=False, sales=False)
    elif action == "revoke_all":
        base = {p: False for p in PURPOSES}
    elif action == "grant":
        base = {p: True for p in PURPOSES}
    elif action == "dns":
        base["sales"] = False
    return base


def _region_default(region: str) -> dict[str, bool]:
    if region == "US":
        return {p: True for p in PURPOSES}
    if region == "OTHER":
        return {"analytics": True, "personalization": False, "marketing": False, "sales": False}
    return {p: False for p in PURPOSES}


@dataclass
class _PersonState:
    consent: dict[str, bool] | None
    seen: set[int]
    logged: set[int]


def _initial_state(h: _Human) -> _PersonState:
    return _PersonState(
        consent=dict(h.initial_consent) if h.initial_consent else None,
        seen={i for i, d in enumerate(h.devices) if d.seen_before},
        logged={i for i, d in enumerate(h.devices) if d.logged_in_before})


def _session_steps(h: _Human, plan: _SessionPlan, state: _PersonState, day: int) -> tuple[bool, bool]:
    """Advance the person's state by one session; returns (shows banner, logs in) for that session."""
    dev = h.devices[plan.device]
    banner = h.region == "EU" and plan.device not in state.seen
    if banner:
        state.consent = dict(dev.banner_choice)
    state.seen.add(plan.device)
    login = dev.login_day is not None and day >= dev.login_day and plan.device not in state.logged
    if login:
        state.logged.add(plan.device)
    if plan.action:
        state.consent = _apply_action(state.consent, plan.action, h.region)
    return banner, login


def _state_at(sc: Scenario, h: _Human, day: int) -> _PersonState:
    state = _initial_state(h)
    for d in range(day):
        for plan in _plan(sc, h, d):
            _session_steps(h, plan, state, d)
    return state
