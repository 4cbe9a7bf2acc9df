"""Generate ``streaming/ua_weak_patterns.json``: the list patterns known to match real browsers, and the ua-parser
browser families real browsers parse as. Run it after the corpus, the crawler-user-agents package, isbot's
vendored list or ua-parser change (``tests/streaming/test_bots_sources.py`` fails until it is run).

From the *tuning* half of the labelled corpus only (``tests/bots/corpus.py``: the evaluation half stays unseen):

1. Browser families: ua-parser's family (``streaming.enrich.device``) of every tuning user agent; a family is a
   known browser's when at least 3 tuning browsers parse as it and browsers outnumber bots at least two to one.
2. Weak patterns: every pattern of both lists (crawler-user-agents, isbot) run over every tuning browser; a
   pattern that matches one is weak (a build id, a phone model, a browser's own name): it counts on its own only on
   a user agent that does not parse as a known browser nor names an embedded device's browser platform
   (``streaming.ua_sources.DEVICE_BROWSER``: a TV's, a feature phone's). One that also matches tuning browsers that
   parse as no known browser (a feature phone's WAP browser, a TV's, a device named "M bot"; also where it names a
   device platform: a pattern that hits one unknown device is likely to hit others that name none) never counts on
   its own (``never_alone``: only with the network or the behaviour), unless on the tuning user agents that parse as no
   known browser it alone catches at least :data:`BOTS_PER_BROWSER` bots per browser it matches.

    .venv/bin/python tests/bots/generate_weak_patterns.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streaming import enrich, ua_sources  # noqa: E402
from streaming.bots import CrawlerMatcher  # noqa: E402
from tests.bots import corpus  # noqa: E402

OUT = ROOT / "streaming" / "ua_weak_patterns.json"
#: A family is a known browser's with at least this many tuning browsers ...
MIN_BROWSERS = 3
#: ... and at least this many browsers per bot.
MIN_BROWSER_SHARE = 2.0
#: A weak pattern that also matches tuning browsers that parse as no known browser still counts on its own there if
#: it alone catches at least this many such bots per such browser: the targets (0.03 % of ~100k browsers against
#: 3 % of ~22k bots) trade one quarantined browser for about twenty missed bots; ten keeps a margin for recall.
BOTS_PER_BROWSER = 10


def versions() -> dict[str, str]:
    """What the generated lists depend on: a change to any of them calls for a new run."""
    return {"crawler-user-agents": version("crawler-user-agents"),
            "isbot": ua_sources.isbot_document()["version"],
            "ua-parser": version("ua-parser"), "ua-parser-builtins": version("ua-parser-builtins"),
            "corpus_sha256": hashlib.sha256(corpus.CORPUS.read_bytes()).hexdigest()}


def browser_families(samples: list[corpus.Sample]) -> tuple[list[str], Counter[str], Counter[str]]:
    browsers: Counter[str] = Counter()
    bots: Counter[str] = Counter()
    for s in samples:
        family = enrich.device(s.ua).browser
        if family is not None and s.label in ("browser", "bot"):
            (browsers if s.label == "browser" else bots)[family] += 1
    known = sorted(f for f, n in browsers.items() if n >= MIN_BROWSERS and n >= MIN_BROWSER_SHARE * bots[f])
    return known, browsers, bots


def generate() -> dict[str, object]:
    tune = [s for s in corpus.load() if s.split == "tune"]
    known, browser_counts, bot_counts = browser_families(tune)
    known_set = set(known)
    matcher = CrawlerMatcher()
    by_name = {s.name: s for s in matcher.sources}
    hits: dict[str, dict[int, list[str]]] = {name: defaultdict(list) for name in by_name}
    unparsed: dict[str, dict[int, list[str]]] = {name: defaultdict(list) for name in by_name}
    unparsed_bots: list[dict[str, list[int]]] = []
    for s in tune:
        parsed_known = enrich.device(s.ua).browser in known_set
        found = matcher.matches(s.ua)
        if s.label == "bot":
            if not parsed_known:
                unparsed_bots.append(found)
            continue
        if s.label != "browser":
            continue
        for name, indices in found.items():
            for i in indices:
                (hits if parsed_known else unparsed)[name][i].append(s.ua)
    weak: dict[str, list[dict[str, object]]] = {}
    # a pattern that matches tuning browsers that parse as no known browser: how many such bots it alone catches
    # (no other pattern of any source matches them)
    candidates = {(name, i) for name in ua_sources.LISTS for i in unparsed[name]}
    alone: Counter[tuple[str, int]] = Counter()
    for found in unparsed_bots:
        matched = {(name, i) for name, indices in found.items() for i in indices}
        if len(matched) == 1 and matched <= candidates:
            alone[next(iter(matched))] += 1
    for name in ua_sources.LISTS:
        indices = sorted(set(hits[name]) | set(unparsed[name]),
                         key=lambda i: (-len(hits[name][i]) - len(unparsed[name][i]), i))
        weak[name] = [{"pattern": by_name[name].originals[i], "browsers": len(hits[name][i]),
                       "unparsed_browsers": len(unparsed[name][i]), "unparsed_bots_alone": alone[(name, i)],
                       "never_alone": bool(unparsed[name][i])
                       and alone[(name, i)] < BOTS_PER_BROWSER * len(unparsed[name][i]),
                       "example": min(hits[name][i] + unparsed[name][i], key=len)} for i in indices]
    doc = {
        "about": "Generated by tests/bots/generate_weak_patterns.py from the tuning half of "
                 "tests/bots/data/corpus.jsonl.gz; do not edit. weak: list patterns that match real browsers "
                 "(browsers: that parse as a known browser; unparsed_browsers: that parse as none; never_alone: "
                 "it never counts on its own); browser_families: ua-parser families real browsers parse as.",
        "generated_with": versions(),
        "rules": {"min_browsers": MIN_BROWSERS, "min_browser_share": MIN_BROWSER_SHARE,
                  "bots_per_browser": BOTS_PER_BROWSER},
        "weak": weak,
        "browser_families": known,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(known)} known browser families (of {len(browser_counts)} families tuning browsers parse as); "
          + ", ".join(f"{name}: {len(entries)} weak patterns ({sum(1 for e in entries if e['never_alone'])} "
                      "never alone)" for name, entries in weak.items()), file=sys.stderr)
    for name in ("self_identified", "library"):
        for i, uas in sorted({**hits[name], **unparsed[name]}.items()):
            print(f"  {name} rule {i} matches {len(uas)} tuning browsers, e.g. {uas[0]!r}: extend the allow-list "
                  "(streaming/ua_sources.py) or narrow the rule", file=sys.stderr)
    return doc


if __name__ == "__main__":
    generate()
