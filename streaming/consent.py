"""Consent as state, fail-closed.

Consent is kept per profile and per purpose. A purpose is granted only by an explicit grant (a ``consent`` event or
an IAB TCF v2 string) or by the region's default; an unknown region falls back to the strictest default. Per
purpose the latest decision wins (by the time the collector received it), across all of a profile's devices.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from streaming.errors import FirstmileError

logger = logging.getLogger(__name__)

PURPOSES: tuple[str, ...] = ("analytics", "personalization", "marketing", "sales")

#: IAB TCF v2 purposes each firstmile purpose needs (all must be allowed). 1 = store/access information on a device,
#: 3/4 = personalised ads profile/selection, 5/6 = personalised content, 7 = measure ad performance,
#: 8 = measure content performance, 9 = market research, 10 = develop and improve products.
DEFAULT_TCF_MAPPING: dict[str, tuple[int, ...]] = {
    "analytics": (1, 8, 9),
    "personalization": (1, 5, 6),
    "marketing": (1, 3, 4, 7),
    "sales": (1, 3, 4),
}

#: Region defaults: what is granted when a profile never said anything. EU/EEA/UK: nothing (GDPR, ePrivacy).
EEA_UK = frozenset(
    ["AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU",
     "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO", "GB", "CH"]
)
DEFAULT_REGION_DEFAULTS: dict[str, dict[str, bool]] = {
    "EU": {p: False for p in PURPOSES},
    "US": {"analytics": True, "personalization": True, "marketing": True, "sales": True},
    # Unknown country (private or unresolvable IP): fail closed.
    "UNKNOWN": {p: False for p in PURPOSES},
    "OTHER": {"analytics": True, "personalization": False, "marketing": False, "sales": False},
}


def region_of(country: str | None) -> str:
    if not country:
        return "UNKNOWN"
    if country in EEA_UK:
        return "EU"
    if country == "US":
        return "US"
    return "OTHER"


@dataclass
class ConsentState:
    """Per-purpose decisions of one profile: purpose → (granted, decided_at_ms, source)."""

    purposes: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"purposes": self.purposes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ConsentState:
        return cls(purposes=dict(data.get("purposes", {}))) if data else cls()

    def apply(self, decisions: Mapping[str, bool], *, at_ms: int, source: str) -> list[str]:
        """Record decisions newer than what is known. Returns the purposes that changed."""
        changed = []
        for purpose, granted in decisions.items():
            if purpose not in PURPOSES:
                continue
            known = self.purposes.get(purpose)
            if known is None or at_ms >= known[1]:
                if known is None or bool(known[0]) != bool(granted):
                    changed.append(purpose)
                self.purposes[purpose] = [bool(granted), at_ms, source]
        return changed

    def fold(self, decisions: Mapping[str, tuple[bool, int] | list[Any]], *, source: str) -> list[str]:
        """Fold a merged profile's decisions in (purpose → (granted, at_ms)): per purpose the latest decision wins
        and a denial wins a tie, so a merge never widens consent. Returns the purposes that changed."""
        changed = []
        for purpose, decided in decisions.items():
            if purpose not in PURPOSES:
                continue
            granted, at_ms = bool(decided[0]), int(decided[1])
            known = self.purposes.get(purpose)
            if known is None or at_ms > known[1] or (at_ms == known[1] and not granted):
                if known is None or bool(known[0]) != granted:
                    changed.append(purpose)
                self.purposes[purpose] = [granted, at_ms, source]
        return changed

    def effective(self, region: str, defaults: Mapping[str, Mapping[str, bool]]) -> dict[str, bool]:
        """What is granted right now: explicit decisions, else the region's default, else denied."""
        region_default = defaults.get(region) or defaults.get("UNKNOWN") or {}
        return {p: bool(self.purposes[p][0]) if p in self.purposes else bool(region_default.get(p, False))
                for p in PURPOSES}


class InvalidConsentString(FirstmileError, ValueError):
    """A TCF consent string that cannot be decoded: it grants nothing."""


#: A TCF v2 core segment is 213+ bits before the vendor sections: ~36 base64url characters at the very least.
MIN_TCF_LENGTH = 36


@lru_cache(maxsize=4096)
def _decode_tcf(tc_string: str) -> tuple[frozenset[int], int]:
    import iab_tcf

    if len(tc_string) < MIN_TCF_LENGTH:
        raise InvalidConsentString(f"TCF string of {len(tc_string)} characters is shorter than a v2 core segment")
    try:
        consent = iab_tcf.decode(tc_string)
    except Exception as exc:  # the library raises bare Exceptions and bit-reader errors
        raise InvalidConsentString(f"undecodable TCF string: {type(exc).__name__}") from None
    # The decoder reads garbage happily (any string starting with "C" is "version 2"): check the core fields a
    # real CMP always sets, and refuse the rest (fail closed).
    problems = []
    if getattr(consent, "cmp_id", 0) < 2:
        problems.append("cmp_id")
    if getattr(consent, "vendor_list_version", 0) < 1:
        problems.append("vendor_list_version")
    if getattr(consent, "tcf_policy_version", 0) not in (2, 3, 4, 5):
        problems.append("tcf_policy_version")
    language = getattr(consent, "consent_language", b"")
    if not (isinstance(language, bytes) and len(language) == 2 and language.isalpha() and language.isupper()):
        problems.append("consent_language")
    created, updated = getattr(consent, "created", None), getattr(consent, "last_updated", None)
    if created is None or updated is None or created.year < 2018 or updated < created:
        problems.append("created/last_updated")
    if problems:
        raise InvalidConsentString(f"TCF string with invalid core fields: {', '.join(problems)}")
    allowed = frozenset(i for i in range(1, 25) if consent.is_purpose_allowed(i))
    return allowed, int(getattr(consent, "version", 0) or 0)


def purposes_from_tcf(tc_string: str, mapping: Mapping[str, tuple[int, ...]] = DEFAULT_TCF_MAPPING
                      ) -> dict[str, bool]:
    """Decode an IAB TCF v2 string to firstmile purposes. Raises :class:`InvalidConsentString` (fail closed)."""
    allowed, version = _decode_tcf(tc_string)
    if version not in (2,):
        raise InvalidConsentString(f"TCF version {version} is not supported (v2 only)")
    return {purpose: all(i in allowed for i in needed) for purpose, needed in mapping.items()}
