"""A seeded, reproducible traffic simulator: humans with hidden intent, crawlers, stealth bots and a new bot wave.

It speaks the Segment wire format (what analytics.js / the server SDKs send) and keeps the ground truth of every
event *outside* the payload (:class:`SimEvent.truth`), so tests and reports can score the hot path's decisions.

* :func:`load_scenario` reads a TOML scenario (``streaming/scenarios/*.toml``, or a path) with overrides on top;
  every field has a default and a bad field is rejected with a message naming it.
* :func:`generate` yields :class:`SimEvent` in ``send_at`` order. Output is a pure function of the scenario: the
  same seed gives identical events, and ``generate(s, day=k)`` gives exactly the day-``k`` slice of the full run
  (cross-day state - consent, logins, devices - is folded from cheap per-day plans, not from earlier output).
* :func:`send_to_kafka`, :func:`send_http` and :func:`write_truth` deliver events and the ground truth.

Realism, in short. Humans browse a catalog; their hidden ``intent`` shows only through behaviour (how focused their
product views are on their favourite categories, dwell time, cart adds) and conversion is a logistic function of
that observable behaviour. Returning users log in on a second device (same ``userId``, new ``anonymousId``). EU
devices answer a consent banner (with IAB TCF v2 strings for most CMPs), users revoke or grant consent mid-session.
IPs come from real country networks of the offline geo database; user agents from ``fake-useragent``'s bundled
data. Crawlers use listed crawler user agents; stealth scrapers use browser user agents from datacenter networks
with a machine-like rhythm; from ``bot_wave_day`` a new wave of cart-hoarding bots uses residential IPs, mobile
user agents and a human-like rhythm, so a policy learned before the wave misses it.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import random
import sys
import time
import tomllib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streaming.errors import FirstmileError

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SCENARIOS: tuple[str, ...] = ("default", "bot-wave", "consent-storm", "backfill")
SITE = "https://shop.firstmile.example"
PURPOSES: tuple[str, ...] = ("analytics", "personalization", "marketing", "sales")
DAY_S = 86_400


class ScenarioError(FirstmileError, ValueError):
    """An invalid scenario; the message names the field at fault."""

    def __init__(self, field_name: str, problem: str, scenario: str = "") -> None:
        where = f"scenario {scenario!r}: " if scenario else ""
        super().__init__(f"{where}field `{field_name}`: {problem}")
        self.field = field_name


class SimulatorError(FirstmileError, RuntimeError):
    """Delivery failed (broker errors, HTTP errors after retries)."""


# --- scenario ----------------------------------------------------------------------------------------------------

def _f(default: Any, kind: type | tuple[type, ...], lo: float | None = None, hi: float | None = None,
       doc: str = "", optional: bool = False) -> Any:
    return field(default=default, metadata={"kind": kind, "lo": lo, "hi": hi, "doc": doc, "optional": optional})


@dataclass(frozen=True)
class Scenario:
    """What to simulate. Every field has a default; see ``streaming/scenarios/default.toml`` for the annotated set."""

    name: str = _f("default", str, doc="scenario name")
    description: str = _f("", str, doc="free text")
    seed: int = _f(42, int, doc="everything is derived from it")
    users: int = _f(200, int, 0, 100_000, "simulated people")
    days: int = _f(1, int, 1, 366, "simulated days")
    start_date: date = _f(date(2026, 11, 2), date, doc="day 0 (UTC); 'today' accepted in TOML/overrides")
    sessions_per_user_per_day: float = _f(1.0, (int, float), 0, 50, "mean sessions a person starts per day")
    eu_share: float = _f(0.45, (int, float), 0, 1, "share of people in the EEA/UK (consent default: denied)")
    us_share: float = _f(0.35, (int, float), 0, 1, "share of people in the US; the rest are elsewhere")
    registered_share: float = _f(0.45, (int, float), 0, 1, "share of people with an account (can log in)")
    intent_high_share: float = _f(0.2, (int, float), 0, 1, "share of people with high purchase intent")
    intent_low_share: float = _f(0.45, (int, float), 0, 1, "share with low intent; the rest are medium")
    consent_revocation_rate: float = _f(0.04, (int, float), 0, 1, "chance a session revokes consent mid-way")
    consent_grant_rate: float = _f(0.05, (int, float), 0, 1, "chance a session grants (more) consent mid-way")
    tcf_share: float = _f(0.7, (int, float), 0, 1, "share of EU devices whose CMP sends IAB TCF v2 strings")
    second_device_rate: float = _f(0.2, (int, float), 0, 1, "share of registered people who log in on a 2nd device")
    clock_skew_rate: float = _f(0.05, (int, float), 0, 1, "share of human devices with a skewed clock")
    crawler_bots: int = _f(3, int, 0, 1000, "listed crawlers (real crawler user agents)")
    crawler_sessions_per_day: float = _f(3.0, (int, float), 0, 1000, "crawl sessions per crawler per day")
    stealth_bots: int = _f(2, int, 0, 1000, "stealth scrapers (browser UAs, datacenter IPs, machine rhythm)")
    stealth_sessions_per_day: float = _f(3.0, (int, float), 0, 1000, "sessions per stealth bot per day")
    bot_wave_day: int | None = _f(None, int, 0, 365, "day a new bot wave starts (none if unset)", optional=True)
    wave_bots: int = _f(6, int, 0, 1000, "bots in the new wave (used only when bot_wave_day is set)")
    wave_sessions_per_day: float = _f(25.0, (int, float), 0, 10_000, "short sessions per wave bot per day")
    backfill_orders: int = _f(0, int, 0, 1_000_000, "historical orders imported (server-side, old timestamps)")
    backfill_day: int = _f(0, int, 0, 365, "simulated day on which the import is sent")
    backfill_min_days_ago: int = _f(30, int, 1, 3650, "newest imported order, days before start_date")
    backfill_max_days_ago: int = _f(365, int, 1, 3650, "oldest imported order, days before start_date")
    products_per_category: int = _f(30, int, 1, 10_000, "catalog size per category")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if value is None and meta.get("optional"):
                continue
            kind = meta["kind"]
            if isinstance(value, bool) or not isinstance(value, kind):
                names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
                raise ScenarioError(f.name, f"must be {names}, got {type(value).__name__} {value!r}", self.name)
            if isinstance(value, int | float) and not math.isfinite(value):
                raise ScenarioError(f.name, f"must be finite, got {value!r}", self.name)
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is not None and value < lo:
                raise ScenarioError(f.name, f"must be >= {lo}, got {value!r}", self.name)
            if hi is not None and value > hi:
                raise ScenarioError(f.name, f"must be <= {hi}, got {value!r}", self.name)
        if self.eu_share + self.us_share > 1:
            raise ScenarioError("us_share", f"eu_share + us_share must be <= 1, got {self.eu_share + self.us_share}",
                                self.name)
        if self.intent_high_share + self.intent_low_share > 1:
            raise ScenarioError("intent_low_share", "intent_high_share + intent_low_share must be <= 1", self.name)
        if self.backfill_min_days_ago > self.backfill_max_days_ago:
            raise ScenarioError("backfill_min_days_ago", "must be <= backfill_max_days_ago", self.name)
        if self.backfill_orders and self.backfill_day >= self.days:
            raise ScenarioError("backfill_day", f"must be < days ({self.days}), got {self.backfill_day}", self.name)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SCENARIO_FIELDS: dict[str, str] = {f.name: f.metadata["doc"] for f in fields(Scenario)}


def _coerce(name: str, value: Any, scenario: str) -> Any:
    if name == "start_date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, str):
            if value.strip().lower() == "today":
                return datetime.now(UTC).date()
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise ScenarioError(name, f"must be a date (YYYY-MM-DD or 'today'), got {value!r}", scenario) from None
    kind = Scenario.__dataclass_fields__[name].metadata["kind"]
    if kind == (int, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ScenarioError(name, f"must be a number, got {value!r}", scenario) from None
    if kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ScenarioError(name, f"must be an integer, got {value!r}", scenario) from None
    return value


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """Build a :class:`Scenario` from plain values (TOML table, CLI overrides). Unknown keys are rejected."""
    name = str(data.get("name", "default"))
    known = Scenario.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_n = key.replace("-", "_")
        if key_n not in known:
            raise ScenarioError(key, f"unknown field; known fields: {', '.join(known)}", name)
        values[key_n] = _coerce(key_n, value, name)
    return Scenario(**values)


def scenario_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"no scenario {name_or_path!r}: not a file and not one of {', '.join(SCENARIOS)}")


def load_scenario(name_or_path: str | Path = "default", **overrides: Any) -> Scenario:
    """Load a shipped scenario by name (``default``, ``bot-wave``, ``consent-storm``, ``backfill``) or a TOML path,
    then apply ``overrides`` (field=value; ``None`` values are ignored). Raises :class:`ScenarioError`."""
    path = scenario_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("<file>", f"{path.name} is not valid TOML: {exc}") from None
    if isinstance(data.get("scenario"), dict):  # allow an optional [scenario] table
        data = {**{k: v for k, v in data.items() if k != "scenario"}, **data["scenario"]}
    data.setdefault("name", path.stem)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return scenario_from_dict(data)


# --- events --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimEvent:
    """One wire event, its ground truth and when a client would send it."""

    payload: dict[str, Any]
    truth: dict[str, Any]
    send_at: datetime


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, median * math.exp(rng.gauss(0.0, sigma))))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- reference data: countries, user agents, networks, TCF --------------------------------------------------------

#: country → (weight inside its region, locale, timezone, UTC offset hours, currency, phone prefix)
COUNTRIES: dict[str, tuple[float, str, str, float, str, str]] = {
    "DE": (0.24, "de-DE", "Europe/Berlin", 1, "EUR", "+49 15"),
    "FR": (0.18, "fr-FR", "Europe/Paris", 1, "EUR", "+33 6"),
    "GB": (0.18, "en-GB", "Europe/London", 0, "GBP", "+44 7"),
    "NL": (0.08, "nl-NL", "Europe/Amsterdam", 1, "EUR", "+31 6"),
    "ES": (0.09, "es-ES", "Europe/Madrid", 1, "EUR", "+34 6"),
    "IT": (0.09, "it-IT", "Europe/Rome", 1, "EUR", "+39 3"),
    "PL": (0.06, "pl-PL", "Europe/Warsaw", 1, "EUR", "+48 5"),
    "SE": (0.04, "sv-SE", "Europe/Stockholm", 1, "EUR", "+46 7"),
    "IE": (0.04, "en-IE", "Europe/Dublin", 0, "EUR", "+353 8"),
    "US": (1.0, "en-US", "America/New_York", -5, "USD", "+1 "),
    "CA": (0.25, "en-CA", "America/Toronto", -5, "USD", "+1 "),
    "BR": (0.25, "pt-BR", "America/Sao_Paulo", -3, "USD", "+55 11"),
    "IN": (0.2, "en-IN", "Asia/Kolkata", 5.5, "USD", "+91 9"),
    "JP": (0.15, "ja-JP", "Asia/Tokyo", 9, "USD", "+81 90"),
    "AU": (0.15, "en-AU", "Australia/Sydney", 10, "USD", "+61 4"),
}
EU_COUNTRIES = ("DE", "FR", "GB", "NL", "ES", "IT", "PL", "SE", "IE")
OTHER_COUNTRIES = ("CA", "BR", "IN", "JP", "AU")
US_TIMEZONES = (("America/New_York", -5), ("America/Chicago", -6), ("America/Denver", -7),
                ("America/Los_Angeles", -8))
CLOUDS: dict[str, tuple[str, ...]] = {  # provider → ASN-name tokens (upper case)
    "AMAZON": ("AMAZON-02", "AMAZON-AES", "AMAZON DATA SERVICES"),
    "GOOGLE": ("GOOGLE-CLOUD-PLATFORM", "GOOGLE CLOUD", "GOOGLE"),
    "MICROSOFT": ("MICROSOFT-CORP-MSN-AS-BLOCK", "MICROSOFT-CORP"),
    "DIGITALOCEAN": ("DIGITALOCEAN",),
    "OVH": ("OVH SAS", "OVH"),
    "HETZNER": ("HETZNER",),
}
#: First octets where the big clouds hold space: probing is random inside them, the DB decides what is what.
_CLOUD_OCTETS = (3, 4, 5, 8, 13, 15, 18, 20, 23, 34, 35, 40, 44, 46, 50, 51, 52, 54, 57, 64, 65, 78, 88, 91, 94,
                 95, 104, 107, 116, 128, 130, 135, 136, 137, 138, 139, 142, 143, 144, 146, 147, 148, 157, 159, 161,
                 162, 164, 165, 167, 168, 176, 178, 188, 191, 195, 198, 206, 209)

try:  # one definition of regions and the TCF purpose mapping, if the consent module is present
    from streaming.consent import DEFAULT_TCF_MAPPING as _TCF_MAPPING
    from streaming.consent import region_of
except Exception:  # pragma: no cover - fallback keeps the simulator usable on its own
    _TCF_MAPPING = {"analytics": (1, 8, 9), "personalization": (1, 5, 6), "marketing": (1, 3, 4, 7),
                    "sales": (1, 3, 4)}
    _EEA_UK = frozenset(("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
                         "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
                         "GB", "CH"))

    def region_of(country: str | None) -> str:
        if not country:
            return "UNKNOWN"
        return "EU" if country in _EEA_UK else "US" if country == "US" else "OTHER"

TCF_MAPPING: dict[str, tuple[int, ...]] = dict(_TCF_MAPPING)
#: Real IAB Global Vendor List ids (Google Advertising Products, Criteo, Magnite, Xandr, Index Exchange).
TCF_VENDORS = (10, 32, 52, 91, 755)

FIRST_NAMES = ("Anna", "Lukas", "Marie", "Jonas", "Emma", "Noah", "Sofia", "Liam", "Mia", "Elias", "Lea", "Paul",
               "Chloe", "Hugo", "Olivia", "James", "Lucia", "Mateo", "Giulia", "Lorenzo", "Zofia", "Jakub", "Ava",
               "Ethan", "Aoife", "Sean", "Ingrid", "Erik", "Ana", "Pedro", "Priya", "Arjun", "Yuki", "Haruto")
LAST_NAMES = ("Muller", "Schmidt", "Martin", "Bernard", "Smith", "Jones", "de Vries", "Jansen", "Garcia",
              "Lopez", "Rossi", "Russo", "Nowak", "Kowalski", "Johansson", "Murphy", "Kelly", "Johnson", "Brown",
              "Silva", "Santos", "Sharma", "Patel", "Sato", "Suzuki", "Tremblay", "Wilson")
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "gmx.de", "web.de", "orange.fr",
                 "proton.me", "hotmail.co.uk", "libero.it")
CATEGORIES = ("electronics", "books", "fashion", "home", "sports", "beauty", "toys", "grocery")
_CATEGORY_PRICE = {"electronics": 180.0, "books": 16.0, "fashion": 45.0, "home": 60.0, "sports": 55.0,
                   "beauty": 22.0, "toys": 28.0, "grocery": 9.0}
REFERRERS = ("https://www.google.com/", "https://www.google.com/", "https://www.bing.com/", "",
             "", "https://duckduckgo.com/", "https://www.instagram.com/", "https://t.co/",
             "https://newsletter.firstmile.example/")
CRAWLER_FAMILIES = ("Googlebot\\/", "bingbot", "Applebot", "DuckDuckBot", "Baiduspider", "PetalBot", "GPTBot",
                    "MJ12bot", "facebookexternalhit", "Bytespider")


@lru_cache(maxsize=1)
def browser_user_agents() -> tuple[tuple[str, str, str, float], ...]:
    """(user agent, device type, browser, weight) from fake-useragent's bundled data (offline, no network)."""
    from fake_useragent.utils import load

    seen: dict[str, tuple[str, str, str, float]] = {}
    for row in load():
        ua = row["useragent"]
        if ua in seen:
            ua_, t, b, w = seen[ua]
            seen[ua] = (ua_, t, b, w + float(row.get("percent") or 0.0))
        elif row.get("browser") in {"Chrome", "Chrome Mobile", "Mobile Safari", "Safari", "Edge", "Firefox",
                                    "Chrome Mobile iOS", "Samsung Internet", "Firefox Mobile", "Opera"}:
            seen[ua] = (ua, row.get("type") or "desktop", str(row["browser"]),
                        float(row.get("percent") or 0.0) + 1e-4)
    return tuple(sorted(seen.values()))


@lru_cache(maxsize=4096)
def _is_crawler_ua(ua: str) -> bool:
    import crawleruseragents

    return bool(crawleruseragents.is_crawler(ua))


def _pick_browser_ua(rng: random.Random, device_type: str | None = None, browsers: set[str] | None = None) -> str:
    pool = [u for u in browser_user_agents() if (device_type is None or u[1] == device_type)
            and (browsers is None or u[2] in browsers)]
    for _ in range(20):
        ua = rng.choices(pool, weights=[u[3] for u in pool])[0][0]
        if not _is_crawler_ua(ua):
            return ua
    return pool[0][0]


@lru_cache(maxsize=1)
def crawler_user_agents() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(pattern, real instances) of well-known crawlers from the crawler-user-agents list."""
    import crawleruseragents

    out = []
    for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA:
        if entry["pattern"] in CRAWLER_FAMILIES and entry.get("instances"):
            out.append((entry["pattern"], tuple(entry["instances"])))
    return tuple(out)


@lru_cache(maxsize=1)
def _geo() -> Any:
    from geoip2fast import GeoIP2Fast

    return GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz")


def geo_lookup(ip: str) -> tuple[str, str]:
    """(country code, ASN name) of an IP from the offline database."""
    result = _geo().lookup(ip)
    return str(result.country_code), str(result.asn_name or "")


def _cidr_range(cidr: str) -> tuple[int, int]:
    net, bits = cidr.split("/")
    first = int.from_bytes(bytes(int(x) for x in net.split(".")), "big")
    return first, 1 << (32 - int(bits))


def _int_ip(value: int) -> str:
    return ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))


def _public_ipv4(rng: random.Random, octets: tuple[int, ...] | None = None) -> str:
    while True:
        a = rng.choice(octets) if octets else rng.randrange(1, 224)
        if a in (10, 127) or a == 0:
            continue
        ip = (a << 24) | rng.getrandbits(24)
        return _int_ip(ip)


@lru_cache(maxsize=8)
def network_pools(seed: int) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Real networks found by probing the offline geo DB, deterministically from ``seed``.

    Returns (country → CIDRs of that country's networks, cloud provider → CIDRs of its ASN networks).
    """
    rng = random.Random(f"{seed}:geo-probe")
    geo = _geo()
    want = 8
    countries: dict[str, list[str]] = {c: [] for c in COUNTRIES}
    for _ in range(120_000):
        if all(len(v) >= want for v in countries.values()):
            break
        ip = _public_ipv4(rng)
        r = geo.lookup(ip)
        cc = r.country_code
        if (cc in countries and len(countries[cc]) < want and r.cidr and r.cidr not in countries[cc]
                and _cidr_range(r.cidr)[1] >= 16
                and not any(t in (r.asn_name or "").upper() for toks in CLOUDS.values() for t in toks)):
            countries[cc].append(r.cidr)
    clouds: dict[str, list[str]] = {c: [] for c in CLOUDS}
    for _ in range(80_000):
        if all(len(v) >= 4 for v in clouds.values()):
            break
        ip = _public_ipv4(rng, _CLOUD_OCTETS)
        r = geo.lookup(ip)
        asn = (r.asn_name or "").upper()
        for provider, tokens in CLOUDS.items():
            if any(t in asn for t in tokens) and r.asn_cidr and r.asn_cidr not in clouds[provider]:
                if "FIBER" in asn or "WIFI" in asn:
                    continue
                if len(clouds[provider]) < 4 and _cidr_range(r.asn_cidr)[1] >= 16:
                    clouds[provider].append(r.asn_cidr)
                break
    return ({c: tuple(v) for c, v in countries.items() if v}, {c: tuple(v) for c, v in clouds.items() if v})


def _ip_in(rng: random.Random, cidr: str) -> str:
    first, size = _cidr_range(cidr)
    return _int_ip(first + rng.randrange(1, size - 1))


def country_ip(rng: random.Random, seed: int, country: str) -> str:
    pools = network_pools(seed)[0]
    return _ip_in(rng, rng.choice(pools.get(country) or pools["US"]))


def cloud_ip(rng: random.Random, seed: int, provider: str | None = None) -> tuple[str, str]:
    pools = network_pools(seed)[1]
    provider = provider if provider in pools else rng.choice(sorted(pools))
    return _ip_in(rng, rng.choice(pools[provider])), provider


def encode_tcf(purposes: dict[str, bool], *, at: datetime, publisher_cc: str = "DE", cmp_id: int = 28,
               language: str = "EN") -> str | None:
    """An IAB TCF v2.2 core string for firstmile purposes (mapping :data:`TCF_MAPPING`), or ``None`` when the
    state cannot be expressed in TCF terms without granting a denied purpose."""
    allowed: set[int] = set()
    for purpose, granted in purposes.items():
        if granted:
            allowed.update(TCF_MAPPING.get(purpose, ()))
    implied = {p: all(i in allowed for i in TCF_MAPPING[p]) for p in TCF_MAPPING}
    if any(implied[p] and not purposes.get(p, False) for p in implied):
        return None
    bits: list[str] = []

    def put(value: int, n: int) -> None:
        bits.append(format(value, f"0{n}b"))

    ds = int(at.timestamp() * 10)
    put(2, 6)
    put(ds, 36)
    put(ds, 36)
    put(cmp_id, 12)
    put(3, 12)  # CMP version
    put(1, 6)  # consent screen
    for ch in language.upper()[:2]:
        put(ord(ch) - 65, 6)
    put(180, 12)  # vendor list version
    put(4, 6)  # TCF policy version 4 = TCF v2.2
    put(1, 1)  # service specific
    put(0, 1)
    put(0, 12)  # special feature opt-ins
    bits.append("".join("1" if i in allowed else "0" for i in range(1, 25)))
    bits.append("0" * 24)  # no legitimate interest (v2.2 forbids it for 3-6 anyway)
    put(0, 1)
    for ch in publisher_cc.upper()[:2]:
        put(ord(ch) - 65, 6)
    vendors = TCF_VENDORS if purposes.get("marketing") else ()
    max_vendor = max(TCF_VENDORS)
    put(max_vendor, 16)
    put(0, 1)
    bits.append("".join("1" if v in vendors else "0" for v in range(1, max_vendor + 1)))
    put(0, 16)  # vendor legitimate interest: none
    put(0, 1)
    put(0, 12)  # no publisher restrictions
    raw = "".join(bits)
    raw += "0" * (-len(raw) % 8)
    data = int(raw, 2).to_bytes(len(raw) // 8, "big")
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


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


# --- the generator --------------------------------------------------------------------------------------------------

class _Day:
    """Collects one day's events; ``order`` keeps sorting deterministic."""

    def __init__(self, sc: Scenario, day: int) -> None:
        self.sc = sc
        self.day = day
        self.day_start = datetime(sc.start_date.year, sc.start_date.month, sc.start_date.day, tzinfo=UTC) + \
            timedelta(days=day)
        self.day_end = self.day_start + timedelta(days=1)
        self.items: list[tuple[datetime, int, SimEvent]] = []

    def add(self, payload: dict[str, Any], truth: dict[str, Any], send_at: datetime) -> None:
        truth["event_id"] = payload["messageId"]
        truth["day"] = self.day
        self.items.append((send_at, len(self.items), SimEvent(payload, truth, send_at)))

    def sorted(self) -> list[SimEvent]:
        self.items.sort(key=lambda x: (x[0], x[1]))
        return [e for _, _, e in self.items]


class _Emitter:
    """Builds the wire events of one device session: clock skew, sentAt, context, identity carried forward."""

    def __init__(self, day: _Day, rng: random.Random, *, anonymous_id: str | None, user_id: str | None, ip: str | None,
                 user_agent: str | None, locale: str | None, timezone: str | None, skew_s: float,
                 truth: dict[str, Any], library: str = "analytics.js") -> None:
        self.day, self.rng = day, rng
        self.anonymous_id, self.user_id = anonymous_id, user_id
        self.ip, self.user_agent, self.locale, self.timezone = ip, user_agent, locale, timezone
        self.skew = timedelta(seconds=skew_s)
        self.truth = truth
        self.library = library
        self.page: dict[str, str] | None = None
        self.tcf: str | None = None
        self.last_send: datetime | None = None
        self.count = 0

    def open_page(self, path: str, title: str, referrer: str = "") -> None:
        self.page = {"url": SITE + path, "path": path, "referrer": referrer, "title": title}

    def emit(self, t: datetime, type_: str, **body: Any) -> bool:
        """Emit one event at true time ``t``. Returns False (and emits nothing) past the day's end."""
        t = t.replace(microsecond=t.microsecond // 1000 * 1000)
        if t >= self.day.day_end:
            return False
        send_at = t + timedelta(milliseconds=self.rng.randint(15, 250))
        if self.last_send is not None and send_at <= self.last_send:
            send_at = self.last_send + timedelta(milliseconds=1)
        if send_at >= self.day.day_end:
            return False
        self.last_send = send_at
        context: dict[str, Any] = {"library": {"name": self.library, "version": "3.5.1" if self.library ==
                                               "analytics.js" else "2.3.3"}}
        if self.ip:
            context["ip"] = self.ip
        if self.user_agent:
            context["userAgent"] = self.user_agent
        if self.locale:
            context["locale"] = self.locale
        if self.timezone:
            context["timezone"] = self.timezone
        if self.page:
            context["page"] = dict(self.page)
        if self.tcf:
            context["consent"] = {"tcString": self.tcf}
        payload: dict[str, Any] = {"type": type_, "messageId": _uuid(self.rng)}
        if self.anonymous_id:
            payload["anonymousId"] = self.anonymous_id
        if self.user_id:
            payload["userId"] = self.user_id
        payload["timestamp"] = _iso(t + self.skew)
        if self.library == "analytics.js":
            payload["sentAt"] = _iso(send_at + self.skew)
        payload["context"] = context
        payload.update(body)
        self.day.add(payload, dict(self.truth), send_at)
        self.count += 1
        return True

    def page_view(self, t: datetime, name: str, category: str | None = None) -> bool:
        props = dict(self.page or {})
        if category:
            props["category"] = category
        return self.emit(t, "page", name=name, properties=props)

    def track(self, t: datetime, event: str, properties: dict[str, Any]) -> bool:
        return self.emit(t, "track", event=event, properties=properties)


_INTENT = {  # hidden intent → behaviour
    "low": {"steps": 3.0, "focus": 0.3, "dwell": 11.0, "cart": 0.02},
    "medium": {"steps": 6.0, "focus": 0.55, "dwell": 20.0, "cart": 0.05},
    "high": {"steps": 9.0, "focus": 0.8, "dwell": 30.0, "cart": 0.1},
}


def _human_session(sc: Scenario, day: _Day, catalog: dict[str, tuple[_Product, ...]], h: _Human,
                   plan: _SessionPlan, state: _PersonState) -> None:
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
        if rng.random() < _sigmoid(logit):
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


# --- delivery -------------------------------------------------------------------------------------------------------

def restamp(event: SimEvent, now: datetime) -> dict[str, Any]:
    """The payload as a client would send it at ``now``: ``sentAt`` = now on the device clock (its skew kept).

    The collector then computes ``timestamp - (sentAt - receivedAt)`` = the true simulated event time, whatever
    the real send time. Events without ``sentAt`` (server-side imports) are sent unchanged.
    """
    payload = event.payload
    if "sentAt" not in payload:
        return payload
    device_sent = datetime.fromisoformat(payload["sentAt"].replace("Z", "+00:00"))
    skew = device_sent - event.send_at
    return {**payload, "sentAt": _iso(now + skew)}


def _paced(events: Iterable[SimEvent], rate: float | None, progress: bool, desc: str) -> Iterator[SimEvent]:
    from tqdm import tqdm

    total = len(events) if hasattr(events, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(events, total=total, unit="ev", desc=desc, disable=not progress, mininterval=0.5)
    start = time.monotonic()
    for i, ev in enumerate(bar):
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        yield ev


def send_to_kafka(events: Iterable[SimEvent], *, broker_address: str, topic: str, source_id: str = "simulator",
                  rate: float | None = None, progress: bool = False, received_at: str = "now",
                  producer_config: dict[str, Any] | None = None, timeout: float = 60.0) -> int:
    """Normalize each wire event with :func:`contract.from_segment` (as the collector would) and produce it to
    ``topic`` keyed by ``anonymous_id`` (else ``user_id``), idempotent producer; flush; return the count delivered.

    ``received_at="now"``: the broker sees live traffic (sentAt is restamped to now, so event timestamps stay the
    simulated ones); ``received_at="send_at"``: backfilling simulated history, ``received_at`` is the simulated
    ``send_at``. ``rate`` in events/s (None: as fast as possible).
    """
    import orjson
    from confluent_kafka import Producer

    from streaming.contract import from_segment

    if received_at not in ("now", "send_at"):
        raise ValueError("received_at must be 'now' or 'send_at'")
    producer = Producer({"bootstrap.servers": broker_address, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 50, "compression.type": "lz4", **(producer_config or {})})
    delivered = 0
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    for ev in _paced(events, rate, progress, "kafka"):
        if received_at == "now":
            now = datetime.now(UTC)
            record = from_segment(restamp(ev, now), source_id=source_id, received_at=now)
        else:
            record = from_segment(ev.payload, source_id=source_id, received_at=ev.send_at)
        key = (record.get("anonymous_id") or record.get("user_id") or "").encode()
        value = orjson.dumps(record)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise SimulatorError(f"{remaining} events not delivered, {len(errors)} delivery errors"
                             + (f": {errors[0]}" if errors else ""))
    return delivered


class _Http:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.parts, self.timeout = parts, timeout
        path = parts.path.rstrip("/")
        self.path = path if path.endswith("/v1/batch") else path + "/v1/batch"
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
            self.conn = cls(self.parts.hostname, self.parts.port, timeout=self.timeout)  # type: ignore[arg-type]
        try:
            self.conn.request("POST", self.path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise


def send_http(events: Iterable[SimEvent], *, url: str, write_key: str, batch_size: int = 100,
              rate: float | None = None, progress: bool = False, max_retries: int = 10,
              timeout: float = 30.0) -> int:
    """POST events to the collector's ``/v1/batch`` (``url`` is the base URL or the full batch URL) with HTTP Basic
    auth (write key as user, empty password), as Segment's SDKs do. Retries 429/503 (and connection errors)
    honouring ``Retry-After``; any other non-2xx raises :class:`SimulatorError`. Returns the count accepted."""
    import orjson

    client = _Http(url, timeout)
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth, "User-Agent": "firstmile-simulator/1"}
    sent = 0

    def flush(batch: list[SimEvent]) -> int:
        now = datetime.now(UTC)
        body = orjson.dumps({"batch": [restamp(ev, now) for ev in batch], "sentAt": _iso(now)})
        for attempt in range(max_retries + 1):
            try:
                status, resp_headers, data = client.post(body, headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == max_retries:
                    raise SimulatorError(f"collector unreachable: {exc}") from exc
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
                continue
            if 200 <= status < 300:
                return len(batch)
            if status in (429, 503) and attempt < max_retries:
                try:
                    wait = float(resp_headers.get("retry-after", ""))
                except ValueError:
                    wait = min(5.0, 0.2 * 2 ** attempt)
                time.sleep(max(0.0, min(wait, 60.0)))
                continue
            raise SimulatorError(f"collector answered {status}: {data[:300].decode(errors='replace')}")
        raise SimulatorError("unreachable")

    batch: list[SimEvent] = []
    try:
        for ev in _paced(events, rate, progress, "http"):
            batch.append(ev)
            if len(batch) >= batch_size:
                sent += flush(batch)
                batch = []
        if batch:
            sent += flush(batch)
    finally:
        if client.conn is not None:
            client.conn.close()
    return sent


def truth_rows(events: Iterable[SimEvent]) -> Iterator[dict[str, Any]]:
    for ev in events:
        yield {**ev.truth, "send_at": _iso(ev.send_at), "type": ev.payload.get("type"),
               "event": ev.payload.get("event")}


def write_truth(events: Iterable[SimEvent], path: str | Path) -> None:
    """Write the ground truth side file: JSON lines for ``.jsonl``/``.json``/``.ndjson``, else Parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(truth_rows(events))
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        with path.open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, separators=(",", ":")) + "\n")
        return
    import polars as pl

    for row in rows:
        row["consent"] = json.dumps(row["consent"]) if row.get("consent") is not None else None
    schema = {"event_id": pl.Utf8, "actor": pl.Utf8, "actor_id": pl.Utf8, "bot_kind": pl.Utf8, "bot_name": pl.Utf8,
              "user_id": pl.Utf8, "region": pl.Utf8, "country": pl.Utf8, "intent": pl.Utf8,
              "will_convert": pl.Boolean, "day": pl.Int32, "device": pl.Int32, "session": pl.Utf8,
              "clock_skew_s": pl.Float64, "backfill": pl.Boolean, "consent": pl.Utf8, "provider": pl.Utf8,
              "original_timestamp": pl.Utf8, "send_at": pl.Utf8, "type": pl.Utf8, "event": pl.Utf8}
    frame = pl.DataFrame([{k: row.get(k) for k in schema} for row in rows], schema=schema, orient="row")
    frame.write_parquet(path)


def summarize(events: Iterable[SimEvent]) -> dict[int, dict[str, int]]:
    """Counts per day and actor kind (human, crawler, scraper, wave, backfill)."""
    out: dict[int, dict[str, int]] = {}
    for ev in events:
        kind = "backfill" if ev.truth.get("backfill") else ev.truth["bot_kind"] or ev.truth["actor"]
        row = out.setdefault(ev.truth["day"], {})
        row[kind] = row.get(kind, 0) + 1
    return out


# --- CLI ------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streaming.simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default", help=f"one of {', '.join(SCENARIOS)} or a TOML path")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--day", type=int, help="only this day (0-based)")
    parser.add_argument("--start-date", help="YYYY-MM-DD or 'today'")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any scenario field (repeatable)")
    parser.add_argument("--to", choices=("kafka", "http", "file", "summary"), default="summary")
    parser.add_argument("--broker", help="Kafka address (default: KAFKA_BROKER_ADDRESS)")
    parser.add_argument("--topic", help="default: events.raw with the configured prefix")
    parser.add_argument("--source-id", default="simulator")
    parser.add_argument("--received-at", choices=("now", "send_at"), default="now")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="collector base URL (--to http)")
    parser.add_argument("--write-key", help="collector write key (--to http); default FIRSTMILE_SIM_WRITE_KEY")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    parser.add_argument("--out", default="simulated-events.jsonl", help="wire events file (--to file)")
    parser.add_argument("--truth", help="write the ground truth here (.parquet or .jsonl)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {"seed": args.seed, "users": args.users, "days": args.days,
                                 "start_date": args.start_date}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value
    try:
        scenario = load_scenario(args.scenario, **overrides)
    except (ScenarioError, FileNotFoundError) as exc:
        parser.error(str(exc))
    events = list(generate(scenario, day=args.day))
    progress = not args.no_progress
    if args.truth:
        write_truth(events, args.truth)
    if args.to == "kafka":
        import os

        from streaming.settings import RAW, load_settings

        settings = load_settings()
        address = args.broker or os.environ.get("KAFKA_BROKER_ADDRESS") or settings.kafka_broker_address
        if not address:
            parser.error("--to kafka needs --broker or KAFKA_BROKER_ADDRESS")
        n = send_to_kafka(events, broker_address=address, topic=args.topic or settings.topic(RAW),
                          source_id=args.source_id, rate=args.rate, progress=progress, received_at=args.received_at)
        print(f"produced {n} events to {args.topic or settings.topic(RAW)} on {address}", file=sys.stderr)
    elif args.to == "http":
        import os

        key = args.write_key or os.environ.get("FIRSTMILE_SIM_WRITE_KEY")
        if not key:
            parser.error("--to http needs --write-key or FIRSTMILE_SIM_WRITE_KEY")
        n = send_http(events, url=args.url, write_key=key, batch_size=args.batch_size, rate=args.rate,
                      progress=progress)
        print(f"collector accepted {n} events", file=sys.stderr)
    elif args.to == "file":
        with open(args.out, "w") as fh:
            for ev in events:
                fh.write(json.dumps(ev.payload, separators=(",", ":")) + "\n")
        print(f"wrote {len(events)} wire events to {args.out}", file=sys.stderr)
    summary = summarize(events)
    print(json.dumps({"scenario": scenario.name, "seed": scenario.seed, "events": len(events),
                      "per_day": {str(k): v for k, v in sorted(summary.items())}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
