"""Bot detection at the first mile: the user agent's evidence, datacenter networks and behaviour.

* User agent (:func:`user_agent_evidence`): four sources (:mod:`streaming.ua_sources`: the crawler-user-agents
  list, isbot's pattern list, a generic self-identification rule, HTTP libraries) compiled once into one Hyperscan
  database (one scan per new user agent, a few µs, bounded for randomized user agents) with an LRU cache on top,
  and weighed, not OR-ed: a list pattern known to also match real browsers (the generated weak list) counts only on
  a user agent that does not parse as a known browser nor names an embedded device's browser platform (a TV's, a
  feature phone's: :data:`streaming.ua_sources.DEVICE_BROWSER`), and never on its own when it also matched a real
  browser that parses as none; otherwise it is ``weak_pattern`` evidence, which the policy's rules combine with the
  network or the behaviour. No user agent at all is a reason of its own. Each reason is a fact (``ua_crawler``,
  ``ua_isbot``, ``ua_self_identified``, ``ua_library``, ``ua_missing``, ``ua_weak_pattern``) and the ledger lists
  those that hold (``ua_reasons``), so the warehouse can score each source.
* Datacenter networks: the ASN name of the client IP (offline geo database) against known hosting providers.
* Behaviour: session-so-far features (rate, regularity, no dwell) — the thresholds come from the policy's rules,
  so what the warehouse learns can tighten them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import NamedTuple

from streaming import ua_sources
from streaming.ua_sources import PatternSource

logger = logging.getLogger(__name__)

DATACENTER_ASN_TOKENS: tuple[str, ...] = (
    "amazon", "aws", "google cloud", "google llc", "microsoft", "azure", "digitalocean", "ovh", "hetzner",
    "linode", "akamai", "vultr", "choopa", "contabo", "scaleway", "online s.a.s", "oracle", "alibaba", "tencent",
    "leaseweb", "hostinger", "m247", "cloudflare", "datacamp", "ionos", "hostwinds", "colocrossing",
)

#: Bits of :attr:`UaScan.strong` / :attr:`UaScan.weak`, one per source, in :func:`ua_sources.all_sources` order.
CRAWLER, ISBOT, SELF_IDENTIFIED, LIBRARY = 1, 2, 4, 8
_BIT: dict[str, int] = {"crawler-user-agents": CRAWLER, "isbot": ISBOT, "self_identified": SELF_IDENTIFIED,
                        "library": LIBRARY}
#: Per-user-agent cache entries (the worker's traffic repeats user agents heavily; a randomizing bot defeats it).
CACHE_SIZE = 32768


class UaScan(NamedTuple):
    """What the patterns say about one user agent, before any weighing (bits: one per source)."""

    #: the crawler-user-agents pattern matched (a strong one when there is one), for the ledger
    crawler_pattern: str | None
    #: sources with a pattern that holds on its own
    strong: int
    #: list sources without a strong match, matched by a weak pattern (counts unless the user agent parses as a
    #: known browser); none when the user agent names a device browser's platform (those are ``never_alone``)
    weak: int
    #: list sources without a strong or weak match, matched by a pattern that never counts on its own
    never_alone: int


_NOTHING = UaScan(None, 0, 0, 0)
#: :attr:`_Compiled.strength` values
_STRONG, _WEAK, _NEVER_ALONE = 0, 1, 2


#: The database id's kind: the source's pattern is exact, is a prefilter its ``re`` confirms, or is exact unless an
#: allow-listed token is present (the generic rules read the blanked string); or an allow-list token itself; or a
#: device-browser token (:data:`ua_sources.DEVICE_BROWSER`: the weak patterns' matches do not count alone).
_EXACT, _PREFILTERED, _BLANKED, _ALLOW, _DEVICE = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class _Compiled:
    """Where a database id points: its source, its index there, how much it counts, and how a hit is confirmed."""

    bit: int
    index: int
    #: ``_STRONG``, ``_WEAK`` or ``_NEVER_ALONE`` (the generated weak-pattern list)
    strength: int
    #: ``_EXACT``, ``_PREFILTERED``, ``_BLANKED``, ``_ALLOW`` or ``_DEVICE``
    kind: int
    #: the source's ``re`` pattern (what a prefiltered or blanked hit is confirmed with)
    regex: re.Pattern[str] | None


class CrawlerMatcher:
    """Every pattern of every user-agent source in one multi-pattern Hyperscan database.

    ``patterns`` are the crawler-user-agents list's (the default: the installed package's); the other sources come
    from :func:`streaming.ua_sources.all_sources`. A pattern Hyperscan cannot compile exactly (look-arounds) is
    compiled as a prefilter and each hit confirmed with ``re``; one it rejects even so falls back to ``re`` alone
    (scanned for every user agent: the tests require there be none). The generic rules read the user agent with
    allow-listed browser tokens blanked: those tokens are in the database too, and only when one of them is present
    is a generic rule's hit confirmed with ``re`` over the blanked string (blanking can only remove matches). The
    device-browser tokens are in it too: where one is present, a weak pattern's match never counts on its own."""

    def __init__(self, patterns: Sequence[str] | None = None, *,
                 sources: Sequence[PatternSource] | None = None) -> None:
        import hyperscan

        if sources is None:
            crawler = ua_sources.crawler_user_agents()
            if patterns is not None:
                crawler = PatternSource("crawler-user-agents", tuple(patterns), 0, tuple(patterns))
            sources = (crawler, ua_sources.isbot(), ua_sources.self_identified(), ua_sources.library())
        self.sources = tuple(sources)
        self.patterns: list[str] = list(next(s.patterns for s in self.sources if s.name == "crawler-user-agents"))
        weak = {s.name: ua_sources.weak_patterns(s.name) for s in self.sources}
        strengths = {"weak": _WEAK, "never_alone": _NEVER_ALONE}
        self.entries: list[_Compiled] = []
        expressions: list[bytes] = []
        flags: list[int] = []
        caseless = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS
        for source in self.sources:
            # crawler-user-agents is matched as its own Python matcher does (Unicode classes, case-sensitive);
            # isbot and the generic rules caseless with ASCII classes (JavaScript's "i" without "u")
            base = caseless if source.flags & re.IGNORECASE else (
                hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_UCP)
            for i, pattern in enumerate(source.patterns):
                strength = strengths.get(weak.get(source.name, {}).get(source.originals[i], ""), _STRONG)
                self.entries.append(_Compiled(_BIT[source.name], i, strength,
                                              _BLANKED if source.blank_allowed else _EXACT,
                                              re.compile(pattern, source.flags)))
                expressions.append(pattern.encode())
                flags.append(base)
        if any(source.blank_allowed for source in self.sources):
            for i, pattern in enumerate(ua_sources.SELF_IDENTIFIED_ALLOW):
                self.entries.append(_Compiled(0, i, _STRONG, _ALLOW, None))
                expressions.append(pattern.encode())
                flags.append(caseless)
        for i, pattern in enumerate(ua_sources.DEVICE_BROWSER):
            self.entries.append(_Compiled(0, i, _STRONG, _DEVICE, None))
            expressions.append(pattern.encode())
            flags.append(caseless)
        #: (id, pattern) matched with ``re`` alone: Hyperscan rejected even its prefilter
        self.fallback: list[tuple[int, re.Pattern[str]]] = []
        self.db = self._compile(expressions, flags)
        self.scratch = hyperscan.Scratch(self.db)
        # per database id, as plain lists: the scan reads them for every hit
        self._kind = [e.kind for e in self.entries]
        self._bit = [e.bit for e in self.entries]
        self._strength = [e.strength for e in self.entries]
        self._index = [e.index for e in self.entries]
        self._match = lru_cache(maxsize=CACHE_SIZE)(self._scan_uncached)

    def _compile(self, expressions: list[bytes], flags: list[int]):  # type: ignore[no-untyped-def]
        import hyperscan

        db = hyperscan.Database()
        ids = list(range(len(expressions)))
        try:
            db.compile(expressions=expressions, ids=ids, elements=len(ids), flags=flags)
            return db
        except hyperscan.error:  # type: ignore[attr-defined]
            pass
        # Some pattern has a construct Hyperscan does not support exactly: find each, compile it as a prefilter
        # (a superset) and confirm its hits with `re`.
        kept: list[int] = []
        for i in ids:
            try:
                hyperscan.Database().compile(expressions=[expressions[i]], ids=[i], flags=flags[i])
                kept.append(i)
                continue
            except hyperscan.error:  # type: ignore[attr-defined]
                pass
            entry = self.entries[i]
            tokens = ua_sources.DEVICE_BROWSER if entry.kind == _DEVICE else ua_sources.SELF_IDENTIFIED_ALLOW
            regex = entry.regex or re.compile(tokens[entry.index], ua_sources.CASELESS_ASCII)
            if entry.kind == _EXACT:  # a blanked rule's hits are confirmed anyway, over the blanked string
                self.entries[i] = _Compiled(entry.bit, entry.index, entry.strength, _PREFILTERED, regex)
            try:
                hyperscan.Database().compile(expressions=[expressions[i]], ids=[i],
                                             flags=flags[i] | hyperscan.HS_FLAG_PREFILTER)
                if entry.kind in (_BLANKED, _ALLOW, _DEVICE):
                    raise ValueError("a generic rule, allow-list or device-browser token must compile exactly: "
                                     "without look-arounds")
                flags[i] |= hyperscan.HS_FLAG_PREFILTER
                kept.append(i)
            except hyperscan.error as exc:  # type: ignore[attr-defined]
                logger.warning("user-agent pattern %d falls back to re: %s", i, exc)
                self.fallback.append((i, regex))
        db.compile(expressions=[expressions[i] for i in kept], ids=kept, elements=len(kept),
                   flags=[flags[i] for i in kept])
        return db

    def _found(self, user_agent: str) -> list[int]:
        """Database ids Hyperscan reports (candidates for prefiltered and blanked ones), in its report order."""
        found: list[int] = []
        self.db.scan(user_agent.encode("utf-8", "replace"), match_event_handler=_collect, context=found,
                     scratch=self.scratch)
        if self.fallback:
            found.extend(i for i, pattern in self.fallback if pattern.search(user_agent))
        return found

    def _confirmed(self, i: int, user_agent: str, blanked: str | None) -> bool:
        """Whether candidate ``i`` holds: ``blanked`` is the blanked user agent when an allow-listed token is
        present, else None."""
        kind = self._kind[i]
        if kind == _EXACT or (kind == _BLANKED and blanked is None):
            return True
        regex = self.entries[i].regex
        return regex is not None and regex.search(user_agent if kind == _PREFILTERED else blanked or "") is not None

    def _blanked(self, found: list[int], user_agent: str) -> str | None:
        kind = self._kind
        allowed = [self._index[i] for i in found if kind[i] == _ALLOW]
        if allowed and any(kind[i] == _BLANKED for i in found):
            return ua_sources.blank_allowed(user_agent, allowed)
        return None

    def _hits(self, user_agent: str) -> list[int]:
        """Every database id whose pattern holds (candidates confirmed; allow-list and device-browser tokens left
        out)."""
        found = self._found(user_agent)
        if not found:
            return found
        blanked = self._blanked(found, user_agent)
        return [i for i in found if self._kind[i] not in (_ALLOW, _DEVICE) and self._confirmed(i, user_agent, blanked)]

    def _scan_uncached(self, user_agent: str) -> UaScan:
        found = self._found(user_agent)
        if not found:
            return _NOTHING
        # bits per strength (strong, weak, never alone), and the first crawler-user-agents pattern per strength
        strong = weak = never = 0
        crawler: list[str | None] = [None, None, None]
        pending: list[int] = []
        allowed = device = False
        kind, bit, strength, index = self._kind, self._bit, self._strength, self._index
        for i in found:  # exact hits first: they settle most sources without an `re` confirm
            k = kind[i]
            if k != _EXACT:
                if k == _ALLOW:
                    allowed = True
                elif k == _DEVICE:
                    device = True
                else:
                    pending.append(i)
                continue
            b, level = bit[i], strength[i]
            if level == _STRONG:
                strong |= b
            elif level == _WEAK:
                weak |= b
            else:
                never |= b
            if b == CRAWLER and crawler[level] is None:
                crawler[level] = self.patterns[index[i]]
        blanked: str | None = None
        for i in pending:
            b, level = bit[i], strength[i]
            # a source with a match at least as strong already: this one changes nothing, unconfirmed
            settled = strong if level == _STRONG else strong | weak if level == _WEAK else strong | weak | never
            if settled & b:
                continue
            if kind[i] == _PREFILTERED:
                if not self.entries[i].regex.search(user_agent):  # type: ignore[union-attr]
                    continue
            elif allowed:  # a generic rule where an allow-listed token is present: read the blanked string
                if blanked is None:
                    blanked = ua_sources.blank_allowed(
                        user_agent, [index[j] for j in found if kind[j] == _ALLOW])
                if not self.entries[i].regex.search(blanked):  # type: ignore[union-attr]
                    continue
            if level == _STRONG:
                strong |= b
            elif level == _WEAK:
                weak |= b
            else:
                never |= b
            if b == CRAWLER and crawler[level] is None:
                crawler[level] = self.patterns[index[i]]
        if not strong | weak | never:
            return _NOTHING
        if device:  # an embedded device's browser ua-parser may not know: a weak match is no more than a hint
            never, weak = never | weak, 0
        return UaScan(crawler[0] or crawler[1] or crawler[2], strong, weak & ~strong, never & ~strong & ~weak)

    def scan(self, user_agent: str | None) -> UaScan:
        """What every source's patterns say about ``user_agent`` (cached per string)."""
        if not user_agent:
            return _NOTHING
        return self._match(user_agent)

    def _match_uncached(self, user_agent: str) -> int | None:
        """The database scan alone, uncached: the index of a matching crawler-user-agents pattern, or None."""
        for i in self._hits(user_agent):
            if self.entries[i].bit == CRAWLER:
                return self.entries[i].index
        return None

    def match(self, user_agent: str | None) -> str | None:
        """The crawler-user-agents pattern ``user_agent`` matches (a strong one when there is one), or None."""
        return self._match(user_agent).crawler_pattern if user_agent else None

    def device_browser(self, user_agent: str) -> list[int]:
        """Indices of the :data:`ua_sources.DEVICE_BROWSER` tokens the database finds (uncached; the differential
        test's view)."""
        return sorted({self._index[i] for i in self._found(user_agent) if self._kind[i] == _DEVICE})

    def matches(self, user_agent: str) -> dict[str, list[int]]:
        """Source name → indices of its patterns that match (uncached; the differential test's view)."""
        out: dict[str, list[int]] = {s.name: [] for s in self.sources}
        names = {_BIT[s.name]: s.name for s in self.sources}
        for i in self._hits(user_agent):
            out[names[self.entries[i].bit]].append(self.entries[i].index)
        return {name: sorted(set(indices)) for name, indices in out.items()}


def _collect(pattern_id: int, start: int, end: int, flags: int, context: list[int]) -> None:
    context.append(pattern_id)


@cache
def crawler_matcher() -> CrawlerMatcher:
    """The process-wide matcher of every user-agent source (~1 s to compile: ``enrich.warm`` does it at start)."""
    return CrawlerMatcher()


class UaEvidence(NamedTuple):
    """The user agent's evidence, weighed: each field is the fact of the same name with ``ua_`` before it."""

    #: a crawler-user-agents pattern that holds on its own, or a weak one on a user agent that does not parse as
    #: a known browser
    crawler: bool
    #: the same for isbot's patterns
    isbot: bool
    #: the user agent names itself an agent or carries a contact URL or e-mail (allow-listed tokens blanked)
    self_identified: bool
    #: an HTTP library or command-line client
    library: bool
    #: no user agent at all
    missing: bool
    #: only list patterns known to match real browsers, that do not count on their own here (the user agent parses
    #: as a known browser or names a device browser's platform, or the pattern also matched a browser that parses
    #: as none): evidence only together with other evidence (the network, the behaviour)
    weak_pattern: bool


_MISSING = UaEvidence(False, False, False, False, True, False)
_NOTHING_FOUND = UaEvidence(False, False, False, False, False, False)


@cache
def _weigh(strong: int, weak: int, never_alone: int, known_browser: bool) -> UaEvidence:
    """The evidence of a scan's bits (a few hundred combinations: computed once each)."""
    counted = strong | (0 if known_browser else weak)
    crawler, listed = bool(counted & CRAWLER), bool(counted & ISBOT)
    uncounted = (weak | never_alone) & ~counted & (CRAWLER | ISBOT)
    return UaEvidence(crawler, listed, bool(counted & SELF_IDENTIFIED), bool(counted & LIBRARY), False,
                      bool(uncounted) and not crawler and not listed)


@cache
def _known_browsers() -> frozenset[str]:
    return ua_sources.browser_families()


def user_agent_evidence(user_agent: str | None, browser: str | None) -> UaEvidence:
    """The user agent's weighed evidence; ``browser`` is ua-parser's family for it (``streaming.enrich.device``,
    which the hot path computes anyway). The scan is the matcher's, cached per user agent (the hot path has just
    asked :meth:`CrawlerMatcher.match` for the same string)."""
    if not user_agent or user_agent.isspace():
        return _MISSING
    scan = crawler_matcher().scan(user_agent)
    if scan is _NOTHING:
        return _NOTHING_FOUND
    return _weigh(scan.strong, scan.weak, scan.never_alone, browser in _known_browsers())


def is_datacenter(asn: str | None) -> bool:
    if not asn:
        return False
    lowered = asn.lower()
    return any(token in lowered for token in DATACENTER_ASN_TOKENS)
