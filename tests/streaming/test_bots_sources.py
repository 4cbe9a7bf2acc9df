"""The user-agent sources as the hot path compiles them: Hyperscan agrees with Python ``re`` pattern by pattern, the
vendored isbot list and the generated weak-pattern list are what their scripts produce from what is installed.

* Differential: every pattern of every source (crawler-user-agents, isbot, the generic rules), compiled into the
  one Hyperscan database, reports exactly what ``re`` finds with the source's own semantics, on the fixed sample and
  every crawler-user-agents instance (``make bench-bots`` runs it on the whole evaluation half: 0 disagreements).
  Rewrites a pattern needed for ``re`` are listed in ``streaming/ua_isbot.json`` with their reason.
* Generated, not hand-kept: ``streaming/ua_weak_patterns.json`` names the versions and the corpus it was generated
  from; a new crawler-user-agents, isbot, ua-parser or corpus fails here until ``tests/bots/generate_weak_patterns.py``
  is run again.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib.metadata import version

import pytest

from streaming import bots, ua_sources
from tests.bots import corpus
from tests.bots.differential import disagreements


@pytest.fixture(scope="module")
def matcher() -> bots.CrawlerMatcher:
    return bots.crawler_matcher()


def test_every_pattern_of_every_source_is_in_the_one_database_and_none_falls_back_to_re(matcher):
    sources = {s.name: len(s.patterns) for s in matcher.sources}
    assert set(sources) == {"crawler-user-agents", "isbot", "self_identified", "library"}
    assert (sum(sources.values()) + len(ua_sources.SELF_IDENTIFIED_ALLOW) + len(ua_sources.DEVICE_BROWSER)
            == len(matcher.entries))
    assert matcher.fallback == []
    # only look-arounds need a confirming `re` (isbot's (?<!lib)http, (?<! cu)bots?, java(?!;) ...)
    prefiltered = [matcher.sources[1].patterns[e.index] for e in matcher.entries if e.kind == 1]
    assert prefiltered and all("(?<" in p or "(?!" in p for p in prefiltered), prefiltered


def test_hyperscan_and_python_re_agree_on_every_pattern_over_the_sample_and_the_lists_instances(matcher):
    import crawleruseragents

    user_agents = [s.ua for s in corpus.load(corpus.SAMPLE)]
    user_agents += [ua for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA for ua in entry.get("instances") or []]
    found, checks = disagreements(user_agents, matcher)
    print(f"\n{len(user_agents)} user agents, {checks} pattern checks, {len(found)} disagreements")
    assert checks > 20_000_000
    assert not found, found[:10]


def test_isbot_is_vendored_with_its_licence_and_every_rewrite_says_why():
    doc = ua_sources.isbot_document()
    assert doc["license"] == "Unlicense" and "public domain" in doc["license_text"]
    assert doc["version"] and doc["integrity"].startswith("sha512-") and doc["checked_against_node_list"]
    assert len(doc["patterns"]) > 150
    for entry in doc["patterns"]:
        python = entry.get("python", entry["pattern"])
        re.compile(python, ua_sources.CASELESS_ASCII)
        assert ("python" in entry) == ("rewritten" in entry)
        if "python" in entry:
            assert entry["python"] != entry["pattern"] and entry["rewritten"]


def test_the_weak_pattern_list_was_generated_from_what_is_installed_and_the_committed_corpus():
    doc = ua_sources.weak_document()
    made = doc["generated_with"]
    assert made["crawler-user-agents"] == version("crawler-user-agents")
    assert made["isbot"] == ua_sources.isbot_document()["version"]
    assert made["ua-parser"] == version("ua-parser") and made["ua-parser-builtins"] == version("ua-parser-builtins")
    assert made["corpus_sha256"] == hashlib.sha256(corpus.CORPUS.read_bytes()).hexdigest()
    listed = {s.name: set(s.originals) for s in (ua_sources.crawler_user_agents(), ua_sources.isbot())}
    for source, entries in doc["weak"].items():
        assert entries, source
        assert {e["pattern"] for e in entries} <= listed[source], f"{source}: a weak pattern the list no longer has"
    # the examples: a build id shipped on many Android 15 phones, a phone model, a browser's own name
    crawler_weak = ua_sources.weak_patterns("crawler-user-agents")
    assert {"AP3A\\.240617\\.008", "Sogou", "Butterfly", "Expanse"} <= set(crawler_weak)
    assert len(doc["browser_families"]) > 50 and "Chrome Mobile" in doc["browser_families"]
    assert "Googlebot" not in doc["browser_families"]


def test_blanking_allow_listed_tokens_can_only_remove_matches(matcher):
    """What lets the matcher trust Hyperscan's answer on the original string when no allow-listed token is there."""
    generic = [s for s in matcher.sources if s.blank_allowed]
    for s in corpus.load(corpus.SAMPLE):
        blanked = ua_sources.blank_allowed(s.ua)
        assert len(blanked) == len(s.ua)
        for source in generic:
            for pattern in source.patterns:
                if re.search(pattern, blanked, source.flags):
                    assert re.search(pattern, s.ua, source.flags), (pattern, s.ua)


def test_the_committed_corpus_records_where_each_source_came_from():
    text = (corpus.DATA / "SOURCES.md").read_text(encoding="utf-8")
    for source in ("matomo", "crawlerdetect", "isbot-fixtures", "crawler-user-agents", "fake-useragent", "user-agents",
                   "top-user-agents", "ai-crawler-index", "uap-core"):
        assert f"`{source}`" in text
    for licence in ("LGPL-3.0", "MIT", "Unlicense", "Apache-2.0", "BSD-2-Clause", "CC0-1.0"):
        assert licence in text
    assert json.loads(gzip_first_line())["ua"]


def gzip_first_line() -> str:
    import gzip

    with gzip.open(corpus.CORPUS, "rt", encoding="utf-8") as fh:
        return fh.readline()
