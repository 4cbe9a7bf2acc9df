"""Compile fidelity of the crawler matcher: the 1,504 ``crawler-user-agents`` patterns compiled into one Hyperscan
database must decide exactly what the list's own Python matcher decides, and the first-mile decision must act on it.

This is NOT a measure of bot-detection quality: the bots here are the list's own ``instances`` (the examples the
patterns were written from), so recall on them is train = test. Quality is measured on held-apart sources of real
user agents (the bot-quality issue). Fast, no broker.

* Bots: every ``instances`` user agent of the ``crawler-user-agents`` list (``crawleruseragents``, MIT).
* Browsers: the real browser user agents shipped in the ``fake-useragent`` package (its bundled ``browsers.jsonl``,
  read offline from the installed package).

Run with ``-s`` to see the figures: ``.venv/bin/python -m pytest -s tests/streaming/test_crawler_matcher_fidelity.py``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from importlib import resources

import orjson
import pytest

from streaming import bots, enrich
from streaming import settings as topics
from streaming.contract import from_segment
from streaming.pipeline import DictState, decide_device
from streaming.policy import bootstrap_policy, compile_policy

SECRET = b"bot-quality-secret"
#: A residential US address (Comcast): geo says US and not a datacenter, so only the user agent can flag a bot.
US_IP = "73.162.10.20"
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def crawler_instances() -> list[tuple[str, str]]:
    """(pattern, user agent) for every listed instance of every crawler pattern."""
    import crawleruseragents

    return [(entry["pattern"], ua) for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
            for ua in entry.get("instances") or []]


def browser_user_agents() -> tuple[int, list[str]]:
    """(rows in the file, distinct user agents) of fake-useragent's bundled browsers.jsonl (no network)."""
    text = resources.files("fake_useragent").joinpath("data", "browsers.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return len(rows), sorted({row["useragent"] for row in rows if row.get("useragent")})


def raw_event(i: int, user_agent: str) -> bytes:
    payload = {"type": "track", "event": "Product Viewed", "messageId": f"q-{i}", "anonymousId": f"dev-{i}",
               "timestamp": T0.isoformat(), "context": {"ip": US_IP, "userAgent": user_agent},
               "properties": {"category": "shoes", "price": 30}}
    return orjson.dumps(from_segment(payload, source_id="web", received_at=T0))


@pytest.fixture(scope="module")
def policy():
    enrich.warm()  # load the geo and user-agent databases and compile the crawler database before timing
    bots.crawler_matcher()
    return compile_policy(bootstrap_policy())


def decide(policy, i: int, user_agent: str):
    return decide_device(raw_event(i, user_agent), DictState(), policy, secret=SECRET)


def test_the_probe_address_is_residential_us():
    geo = enrich.geo(US_IP)
    assert geo.country == "US"
    assert not bots.is_datacenter(geo.asn), geo.asn


def test_the_compiled_matcher_decides_exactly_what_the_lists_own_python_matcher_decides():
    """Every listed instance and every bundled browser: Hyperscan's answer (match or not) equals
    ``crawleruseragents.is_crawler`` (Python ``re`` over the same patterns)."""
    import crawleruseragents

    matcher = bots.crawler_matcher()
    user_agents = sorted({ua for _, ua in crawler_instances()} | set(browser_user_agents()[1]))
    disagree = [(ua, matcher.match(ua), crawleruseragents.is_crawler(ua)) for ua in user_agents
                if (matcher.match(ua) is not None) != bool(crawleruseragents.is_crawler(ua))]
    flagged = sum(matcher.match(ua) is not None for ua in user_agents)
    print(f"\ncompiled vs Python matcher: {len(user_agents)} user agents, {flagged} flagged by the compiled matcher, "
          f"{len(disagree)} disagreements")
    assert len(user_agents) > 1500 and flagged > 1000
    assert not disagree, disagree[:10]


def test_the_first_mile_quarantines_the_instances_its_crawler_list_was_built_from(policy):
    """Train = test by construction (see the module docstring): a fidelity check of the decision path, not recall.

    Weighed, not OR-ed (``streaming.bots``): an instance whose crawler pattern is one the generated weak list names
    (it also matches real browsers: ``AP3A\\.240617\\.008``, ``Sogou`` ...) counts for the list only when the user
    agent does not parse as a known browser; otherwise another source decides, or it passes with ``weak_pattern``
    in the ledger (a datacenter network or a machine's rate would quarantine it: ``tests/streaming/test_bots.py``).
    """
    weak = bots.ua_sources.weak_patterns("crawler-user-agents")
    instances = crawler_instances()
    assert len(instances) > 1000, "the crawler-user-agents list ships its instances"
    started = time.perf_counter()
    missed, weighed = [], []
    for i, (pattern, ua) in enumerate(instances):
        out = decide(policy, i, ua)
        pattern_found = out.value["ledger"]["crawler_pattern"]
        if out.topic == topics.QUARANTINE and "bot.ua_crawler" in out.value["bot_reasons"]:
            continue
        if pattern_found in weak:
            weighed.append((pattern_found, ua, out.topic, out.value["bot_reasons"]))
            assert out.topic == topics.QUARANTINE or "weak_pattern" in out.value["ledger"]["ua_reasons"]
        else:
            missed.append((pattern, ua, out.topic))
    elapsed = time.perf_counter() - started
    print(f"\ncrawler instances (the list's own examples): {len(instances)}, quarantined by the list "
          f"{len(instances) - len(missed) - len(weighed)}, matched only by a weak pattern on a browser-shaped user "
          f"agent {len(weighed)} ({sum(1 for w in weighed if w[2] == topics.QUARANTINE)} quarantined by another "
          f"source); {elapsed / len(instances) * 1e6:.0f} us/decision (uncached user agents)")
    for pattern, ua, topic, reasons in weighed:
        print(f"  weighed: pattern {pattern!r} ua {ua!r} -> {topic} {reasons}")
    for pattern, ua, topic in missed[:10]:
        print(f"  missed: pattern {pattern!r} ua {ua!r} -> {topic}")
    assert not missed, missed[:20]
    assert len(weighed) < 0.02 * len(instances)


def test_no_bundled_fake_useragent_browser_is_flagged(policy):
    rows, uas = browser_user_agents()
    assert len(uas) > 500, "fake-useragent ships its browser data"
    started = time.perf_counter()
    flagged = []
    for i, ua in enumerate(uas):
        out = decide(policy, i, ua)
        if out.topic != "profile" or out.value.get("is_bot"):
            flagged.append((ua, out.topic, out.value.get("bot_reasons"),
                            out.value.get("ledger", {}).get("crawler_pattern")))
    elapsed = time.perf_counter() - started
    print(f"\nbrowser user agents: {rows} rows, {len(uas)} distinct, false positives {len(flagged)} (target 0); "
          f"{elapsed / len(uas) * 1e6:.0f} us/decision (uncached user agents)")
    for ua, topic, reasons, pattern in flagged[:10]:
        print(f"  flagged: {ua!r} -> {topic} {reasons} pattern {pattern!r}")
    assert not flagged, flagged[:20]


def test_uncached_matcher_is_one_hyperscan_database():
    """Randomized user agents defeat any cache: the uncached path must be the multi-pattern engine, never a
    Python regex loop (one ``re`` alternation costs ~1.5 ms on a miss; STACK-FACTS.md)."""
    import crawleruseragents
    import hyperscan

    matcher = bots.crawler_matcher()
    n = len(crawleruseragents.CRAWLER_USER_AGENTS_DATA)
    assert isinstance(matcher.db, hyperscan.Database)
    assert len(matcher.patterns) == n
    assert matcher.fallback == [], f"{len(matcher.fallback)} patterns fall back to Python re"
    # The uncached path answers from the database alone (fresh strings, so the LRU cache cannot answer).
    hits = sum(matcher._match_uncached(f"{ua} rnd/{i}") is not None
               for i, (_, ua) in enumerate(crawler_instances()[:200]))
    misses = sum(matcher._match_uncached(f"{ua} rnd/{i}") is None
                 for i, ua in enumerate(browser_user_agents()[1][:200]))
    print(f"\nmatcher: {n} patterns in one hyperscan database, {len(matcher.fallback)} Python-re fallbacks; "
          f"uncached: {hits}/200 crawler hits, {misses}/200 browser misses")
    assert hits >= 0.95 * 200 and misses == 200
