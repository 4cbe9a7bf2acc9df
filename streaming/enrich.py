"""Enrichment: country and ASN from the offline geo database, device/browser/OS from the user agent.

Both lookups are cached per input string (bounded LRU): traffic repeats user agents and networks heavily.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache, lru_cache

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Geo:
    country: str | None
    asn: str | None


@dataclass(frozen=True, slots=True)
class Device:
    browser: str | None
    os: str | None
    device_type: str | None


@cache
def _geo_db():  # type: ignore[no-untyped-def]
    from geoip2fast import GeoIP2Fast

    return GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz", verbose=False)


@lru_cache(maxsize=65536)
def geo(ip: str | None) -> Geo:
    """Country code and ASN name of an IP (``Geo(None, None)`` for private, invalid or unknown addresses)."""
    if not ip:
        return Geo(None, None)
    result = _geo_db().lookup(ip)
    country = getattr(result, "country_code", "") or None
    if country and (len(country) != 2 or not country.isalpha()):
        country = None  # geoip2fast reports private/reserved ranges with codes such as "--"
    asn = getattr(result, "asn_name", "") or None
    return Geo(country, asn)


@lru_cache(maxsize=65536)
def device(user_agent: str | None) -> Device:
    if not user_agent:
        return Device(None, None, None)
    from ua_parser import parse

    result = parse(user_agent)
    browser = result.user_agent.family if result.user_agent else None
    os_name = result.os.family if result.os else None
    dev = result.device.family if result.device else None
    lowered = user_agent.lower()
    if "mobile" in lowered or "android" in lowered or "iphone" in lowered:
        device_type = "mobile"
    elif "ipad" in lowered or "tablet" in lowered:
        device_type = "tablet"
    elif dev in (None, "Other"):
        device_type = "desktop"
    else:
        device_type = "other"
    return Device(browser, os_name, device_type)


def warm() -> None:
    """Load the databases and compile the crawler list before the first event (~1 s in all)."""
    from streaming.bots import crawler_matcher

    _geo_db()
    device("Mozilla/5.0")
    crawler_matcher()
