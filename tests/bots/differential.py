"""Hyperscan against Python ``re``, pattern by pattern: the compiled matcher (``streaming.bots.CrawlerMatcher``)
must report, for every user agent, exactly the patterns of every source that ``re`` finds with the source's own
semantics (``streaming.ua_sources.PatternSource``: its ``re`` spelling and flags; the generic rules over the
allow-list-blanked string); and the device-browser tokens (``streaming.ua_sources.DEVICE_BROWSER``, which take the
weak patterns' power away) are found by both alike.

Where a pattern needs another spelling for ``re`` than its source publishes (isbot's JavaScript), the vendored JSON
carries the rewrite and its reason (``streaming/ua_isbot.json``, ``rewritten``); Hyperscan compiles the same
rewrite, so this check covers it too.

``re`` over every pattern for every string is slow (≈1,750 patterns): patterns are tried in chunks of
:data:`CHUNK` joined by ``|`` first (an alternation matches iff one of its alternatives does), and one by one only
inside a chunk that matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from streaming import bots, ua_sources

CHUNK = 25


def _chunks(source: ua_sources.PatternSource) -> list[tuple[re.Pattern[str], list[tuple[int, re.Pattern[str]]]]]:
    out = []
    for start in range(0, len(source.patterns), CHUNK):
        part = list(enumerate(source.patterns[start:start + CHUNK], start))
        combined = re.compile("|".join(f"(?:{p})" for _, p in part), source.flags)
        out.append((combined, [(i, re.compile(p, source.flags)) for i, p in part]))
    return out


def reference(user_agent: str, compiled: list[tuple[ua_sources.PatternSource, list]]) -> dict[str, list[int]]:  # type: ignore[type-arg]
    """Source → indices of its patterns ``re`` finds in ``user_agent``."""
    out: dict[str, list[int]] = {}
    blanked = ua_sources.blank_allowed(user_agent)
    for source, chunks in compiled:
        text = blanked if source.blank_allowed else user_agent
        found = []
        for combined, singles in chunks:
            if combined.search(text):
                found += [i for i, pattern in singles if pattern.search(text)]
        out[source.name] = found
    return out


def disagreements(user_agents: Iterable[str], matcher: bots.CrawlerMatcher | None = None) -> tuple[list[str], int]:
    """(every disagreement as a line of text, the number of pattern checks made)."""
    matcher = matcher or bots.crawler_matcher()
    compiled = [(source, _chunks(source)) for source in matcher.sources]
    n_patterns = sum(len(source.patterns) for source in matcher.sources) + len(ua_sources.DEVICE_BROWSER)
    found: list[str] = []
    checks = 0
    for ua in user_agents:
        checks += n_patterns
        expected = reference(ua, compiled)
        actual = matcher.matches(ua)
        devices = [i for i, pattern in enumerate(ua_sources.DEVICE_BROWSER_PATTERNS) if pattern.search(ua)]
        if matcher.device_browser(ua) != devices:
            found.append(f"device-browser tokens: Hyperscan {matcher.device_browser(ua)}, re {devices} on {ua!r}")
        for source in matcher.sources:
            if expected[source.name] != actual[source.name]:
                extra = sorted(set(actual[source.name]) - set(expected[source.name]))
                missing = sorted(set(expected[source.name]) - set(actual[source.name]))
                found.append(f"{source.name}: Hyperscan only {[source.patterns[i] for i in extra]}, re only "
                             f"{[source.patterns[i] for i in missing]} on {ua!r}")
    return found, checks
