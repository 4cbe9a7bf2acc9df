"""PII never leaves the first mile in clear: keyed hashes and truncation.

Emails, phone numbers and configured trait fields are replaced by an HMAC-SHA256 keyed with
``FIRSTMILE_PII_SECRET`` (so the warehouse can still join on them); IP addresses are hashed and truncated to a
network prefix (/24 for IPv4, /48 for IPv6). Free-text values anywhere in properties/traits that look like an email
or a phone number are hashed too: trackers put PII where nobody expects it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE_RE = re.compile(r"^\+?[\d\s().-]{7,20}$")
#: A phone number inside free text: 9+ digits with the usual separators (a bare order number of 9+ digits is
#: hashed too: deterministic, so joins on it still work; never let a phone through).
PHONE_IN_TEXT_RE = re.compile(r"(?<![\w.])(?:\+?\(?\d[\d\s()-]{7,18}\d|\d{3}\.\d{3}\.\d{4})(?![\w.])")
ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")
IPV4_RE = re.compile(r"(?<![\d.])(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?![\d.])")
IPV6_CANDIDATE_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
URL_QUERY_RE = re.compile(r"(https?://[^\s?#]*)[?#][^\s]*")
DEFAULT_PII_FIELDS = frozenset({"email", "phone", "phone_number", "mobile", "first_name", "last_name", "name",
                                "firstName", "lastName", "address", "street", "ip", "birthday"})
HASH_PREFIX = "h:"


@lru_cache(maxsize=65536)
def keyed_hash(value: str, secret: bytes) -> str:
    digest = hmac.new(secret, value.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{HASH_PREFIX}{digest[:32]}"


@lru_cache(maxsize=65536)
def truncate_ip(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _looks_like_phone(value: str) -> bool:
    """A whole value that is a phone number: 9+ digits with phone separators, not an ISO date."""
    return bool(PHONE_RE.match(value)) and _digits(value) >= 9 and not ISO_DATE_RE.match(value)


def scrub(value: Any, secret: bytes, fields: Iterable[str] = DEFAULT_PII_FIELDS, *, _key: str = "") -> Any:
    """Return a copy of ``value`` with PII hashed: configured fields by name, emails/phones by shape."""
    field_set = fields if isinstance(fields, frozenset | set) else frozenset(fields)
    if isinstance(value, dict):
        return {k: scrub(v, secret, field_set, _key=k) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secret, field_set, _key=_key) for v in value]
    if isinstance(value, str):
        if _key in field_set:
            return keyed_hash(value, secret)
        return _scrub_string(value, secret) if len(value) <= CACHED_LENGTH else _scrub_string.__wrapped__(value, secret)
    if _key in field_set and value is not None and not isinstance(value, bool):
        return keyed_hash(str(value), secret)
    return value


#: Strings up to this length have their scrubbed form cached (product names, categories, titles repeat a lot:
#: scrubbing was a quarter of the hot path's compute before the cache, bench_hotpath.py).
CACHED_LENGTH = 256


@lru_cache(maxsize=65536)
def _scrub_string(value: str, secret: bytes) -> str:
    """A string value of an unconfigured field: hashed whole if it is a phone number, else scrubbed as text."""
    if _looks_like_phone(value):
        return keyed_hash(value, secret)
    return scrub_text(value, secret)


_DIGIT_RE = re.compile(r"\d")


def _digits(text: str) -> int:
    return len(_DIGIT_RE.findall(text))


def scrub_text(text: str, secret: bytes) -> str:
    """Hash emails, phone numbers and IP addresses found anywhere in free text; drop URL query strings
    (``?email=…&phone=…``). Cheap for the common case: each pattern runs only if its trigger character is there."""
    if "://" in text and ("?" in text or "#" in text):
        text = URL_QUERY_RE.sub(lambda m: m.group(1), text)
    if "@" in text:
        text = EMAIL_RE.sub(lambda m: keyed_hash(m.group(0), secret), text)
    if _digits(text) >= 4:
        if "." in text:
            text = IPV4_RE.sub(lambda m: keyed_hash(m.group(0), secret), text)
        if _digits(text) >= 9 and not ISO_DATE_RE.match(text):
            text = PHONE_IN_TEXT_RE.sub(
                lambda m: keyed_hash(m.group(0), secret) if _digits(m.group(0)) >= 9 else m.group(0), text)
    if text.count(":") >= 2:
        text = IPV6_CANDIDATE_RE.sub(lambda m: keyed_hash(m.group(0), secret) if _is_ipv6(m.group(0))
                                     else m.group(0), text)
    return text


def _is_ipv6(candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate).version == 6
    except ValueError:
        return False


def pseudonymous_id(value: str | None, secret: bytes) -> str | None:
    """An identifier that is itself PII (an email or a phone number used as ``userId``, which many trackers do) is
    replaced by its keyed hash; any other identifier is kept. Deterministic: stitching and joins still work."""
    if not value:
        return value
    if ("@" in value and EMAIL_RE.fullmatch(value.strip())) or _looks_like_phone(value):
        return keyed_hash(value, secret)
    return value


def scrub_url(url: str | None, secret: bytes) -> str | None:
    """URLs carry PII in query strings (``?email=``): keep scheme, host and path only."""
    if not url:
        return url
    return url.split("?", 1)[0].split("#", 1)[0]
