"""Reference data the simulated world is drawn from: countries, real browser and crawler user agents,
networks probed from the offline geo database, names, products, and IAB TCF v2 consent strings.

Part of :mod:`streaming.simulator`."""

from __future__ import annotations

import base64
import random
from datetime import datetime
from functools import lru_cache
from typing import Any

from streaming.errors import require_extra

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
    require_extra("fake_useragent", "simulator", "The traffic simulator")
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
