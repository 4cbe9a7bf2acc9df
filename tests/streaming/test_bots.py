"""The user-agent bot decision through stage 1 (``decide_device``): each source a reason of its own in the ledger,
weak list patterns weighed with the network and the behaviour, libraries and missing user agents, the allow-list.

The user agents are the issue's examples (browsers the crawler list quarantined, bots it missed) and a few of each
kind; the corpus-wide figures are ``test_bots_quality.py``'s and ``make bench-bots``'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streaming import bots
from streaming import settings as topics
from streaming.contract import from_segment
from streaming.facts import UA_REASONS
from streaming.pipeline import DictState, decide_device
from streaming.policy import bootstrap_policy, compile_policy

SECRET = b"bots-secret"
RESIDENTIAL = "73.162.10.20"   # Comcast
DATACENTER = "5.9.10.20"       # Hetzner
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)

#: The issue's browsers that the crawler list quarantined (its weak patterns: a build id shipped on many Android 15
#: phones, a phone model named Expanse).
ANDROID_15_WEBVIEW = ("Mozilla/5.0 (Linux; Android 15; RMX5101 Build/AP3A.240617.008; wv) AppleWebKit/537.36 (KHTML, "
                      "like Gecko) Version/4.0 Chrome/135.0.7049.111 Mobile Safari/537.36")
ANDROID_15 = ("Mozilla/5.0 (Linux; Android 15; CPH2655 Build/AP3A.240617.008) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/135.0.7049.111 Mobile Safari/537.36")
EXPANSE = ("Mozilla/5.0 (Linux; Android 8.0.0; Expanse) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/86.0.4240.99 "
           "Mobile Safari/537.36")


@pytest.fixture(scope="module")
def policy():
    return compile_policy(bootstrap_policy())


def send(policy, ua: str | None, *, ip: str | None = RESIDENTIAL, n: int = 1, seconds: float = 20.0,
         device: str = "dev-1", days_ago: float = 0.0):
    """``n`` events of one device (sent ``days_ago`` before they are received); the last one's output."""
    state = DictState()
    out = None
    for i in range(n):
        received = T0 + timedelta(seconds=seconds * i)
        at = received - timedelta(days=days_ago)
        context: dict[str, object] = {}
        if ip:
            context["ip"] = ip
        if ua is not None:
            context["userAgent"] = ua
        payload = {"type": "track", "event": "Product Viewed", "messageId": f"{device}-{i}", "anonymousId": device,
                   "timestamp": at.isoformat(), "context": context, "properties": {"category": "shoes"}}
        raw = orjson.dumps(from_segment(payload, source_id="web", received_at=received))
        out = decide_device(raw, state, policy, secret=SECRET)
    assert out is not None
    return out


def reasons(out) -> list[str]:
    return out.value["ledger"].get("ua_reasons") or []


@pytest.mark.parametrize("ua", [ANDROID_15_WEBVIEW, ANDROID_15, EXPANSE])
def test_a_browser_matched_only_by_a_weak_crawler_pattern_passes_with_the_pattern_and_the_weak_reason_recorded(
        policy, ua):
    out = send(policy, ua)
    assert out.topic == "profile", out.value["bot_reasons"]
    assert reasons(out) == ["weak_pattern"]
    assert out.value["ledger"]["crawler_pattern"] in ("AP3A\\.240617\\.008", "Expanse")
    assert out.value["ua_crawler"] is False


def test_the_same_weak_pattern_from_a_datacenter_network_is_quarantined(policy):
    out = send(policy, ANDROID_15, ip=DATACENTER)
    assert out.topic == topics.QUARANTINE
    assert out.value["bot_reasons"] == ["bot.ua_weak_pattern"]


def test_the_same_weak_pattern_with_a_machines_rate_is_quarantined(policy):
    """Behaviour corroborates: 12 events a second apart (60 a minute) from a residential address."""
    out = send(policy, ANDROID_15, n=12, seconds=1.0)
    assert out.topic == topics.QUARANTINE
    assert out.value["bot_reasons"] == ["bot.ua_weak_pattern"]


def test_a_weak_pattern_on_a_user_agent_that_parses_as_no_known_browser_counts_on_its_own(policy):
    """``Sogou`` is weak (Sogou's own browser carries it); a bare agent string parses as no browser."""
    assert "Sogou" in {e["pattern"] for e in bots.ua_sources.weak_document()["weak"]["crawler-user-agents"]}
    out = send(policy, "Sogou Pic Spider/3.0")
    assert out.topic == topics.QUARANTINE
    assert "crawler" in reasons(out)


@pytest.mark.parametrize(("ua", "reason", "rule"), [
    # the missed bots: a generic crawler naming itself, site monitors
    ("AmorankSpider/0.1; +http://amorank.com/webcrawler.html", "self_identified", None),
    ("AppSignalBot/1.0 (+https://appsignal.com)", "self_identified", None),
    ("collectd/5.5.1", "isbot", "bot.ua_isbot"),
    # a scanner and an AI agent
    ("Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)", "self_identified", None),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
     "crawler", "bot.ua_crawler"),
])
def test_bots_the_crawler_list_missed_are_quarantined_with_their_own_reason(policy, ua, reason, rule):
    out = send(policy, ua)
    assert out.topic == topics.QUARANTINE
    assert reason in reasons(out)
    if rule:
        assert out.value["bot_reasons"] == [rule]


@pytest.mark.parametrize("ua", ["curl/8.4.0", "python-requests/2.31.0", "Go-http-client/1.1", "okhttp/4.12.0",
                                "Java/17.0.2", "libwww-perl/6.72", "axios/1.6.2", "node-fetch/1.0",
                                "Scrapy/2.11.0 (+https://scrapy.org)", "Wget/1.21.4",
                                "Apache-HttpClient/4.5.14 (Java/17.0.8)"])
def test_http_libraries_and_command_line_clients_are_the_library_reason(policy, ua):
    out = send(policy, ua)
    assert out.topic == topics.QUARANTINE
    assert "library" in reasons(out)
    assert bots.user_agent_evidence(ua, None).library


def test_no_user_agent_is_its_own_reason_and_quarantines_only_from_a_datacenter(policy):
    home = send(policy, None)
    assert home.topic == "profile" and reasons(home) == ["missing"]
    cloud = send(policy, None, ip=DATACENTER)
    assert cloud.topic == topics.QUARANTINE and cloud.value["bot_reasons"] == ["bot.ua_missing"]


def test_a_server_side_import_without_user_agent_or_address_is_not_quarantined(policy):
    """What a backfill sends (analytics-python: no userAgent, no ip, last year's timestamps, many a second)."""
    out = send(policy, None, ip=None, n=12, seconds=0.1, days_ago=300)
    assert out.topic == "profile"
    assert reasons(out) == ["missing"]


@pytest.mark.parametrize("ua", [
    "Mozilla/5.0 (Linux; Android 10; CUBOT J9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.0.4324.152 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; Android 7.0; M bot 60 Build/NRD90M; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/67.0.3396.87 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 4.4.2; Forward Ruby Build/KOT49H) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/67.0.3396.87 Mobile Safari/537.36",
])
def test_device_names_with_a_bot_or_library_word_are_allow_listed_not_self_identification(policy, ua):
    out = send(policy, ua)
    assert out.topic == "profile", (out.value["bot_reasons"], reasons(out))
    assert "self_identified" not in reasons(out) and "library" not in reasons(out)


def test_every_reason_has_a_fact_and_each_fact_of_a_crawler_is_recorded(policy):
    out = send(policy, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    assert out.topic == topics.QUARANTINE
    # the rules run in order: the first source that holds decides, the ledger keeps every source
    assert out.value["bot_reasons"] == ["bot.ua_crawler"]
    assert set(reasons(out)) == {"crawler", "isbot", "self_identified"}
    assert set(reasons(out)) <= set(UA_REASONS.values())
    assert out.value["ledger"]["crawler_pattern"] == "Googlebot\\/"


def test_a_plain_browser_has_no_reason_and_no_ledger_key(policy):
    out = send(policy, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                       "Version/17.4 Safari/605.1.15")
    assert out.topic == "profile"
    assert "ua_reasons" not in out.value["ledger"]


#: A TV browser ua-parser does not know: one bare token, the shape isbot's weak "one product only" pattern describes.
FIRE_TV = "smarttv_AFTMM_Build_535062120_Chromium_59.0.2883.91"


def test_a_tv_browser_that_only_a_weak_pattern_matches_passes_because_it_names_its_device_platform(policy):
    assert bots.crawler_matcher().scan(FIRE_TV).never_alone, "a weak list pattern matches, and never alone here"
    out = send(policy, FIRE_TV)
    assert out.topic == "profile", out.value["bot_reasons"]
    assert reasons(out) == ["weak_pattern"]
    # with other evidence it still counts
    assert send(policy, FIRE_TV, ip=DATACENTER).value["bot_reasons"] == ["bot.ua_weak_pattern"]


def test_the_same_weak_pattern_on_an_agent_that_names_no_device_platform_counts_on_its_own(policy):
    out = send(policy, "FDM 5.1.38")
    assert out.topic == topics.QUARANTINE
    assert out.value["bot_reasons"] == ["bot.ua_isbot"]


@pytest.mark.parametrize(("ua", "reason"), [
    # contact markers: an unconfigured crawler's local address, the "+" of a compatible comment
    ("mirror-tool/2.0 (webmaster@localhost)", "self_identified"),
    ("Mozilla/5.0 (compatible; Prospect/1.0; +adtech team) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 "
     "Safari/537.36", "self_identified"),
    # a compatible comment appended after a browser's tokens
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 "
     "Mobile/15E148 Safari/604.1 (compatible; SiteAudit)", "self_identified"),
    # agents that fetch for something other than a reader: a translation proxy, a cache preloader
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
     "Safari/537.36 Example.Translate", "self_identified"),
    ("SiteCache/Homepage Preload", "self_identified"),
    # .NET's SOAP client, Office for Mac's link probe, a lone product token
    ("Mozilla/4.0 (compatible; MSIE 6.0; MS Web Services Client Protocol 4.0.30319.42000)", "library"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X) PowerPoint/16.78.0", "library"),
    ("ImageTool/v2.x", "library"),
])
def test_generic_rules_catch_agents_no_list_names(policy, ua, reason):
    out = send(policy, ua)
    assert out.topic == topics.QUARANTINE, reasons(out)
    assert reason in reasons(out)


def test_a_lone_product_token_is_a_shape_that_does_not_count_on_a_known_browser():
    """``Firefox/124.0`` alone parses as Firefox: the shape is weak, as a list's weak pattern is."""
    assert bots.user_agent_evidence("ImageTool/2.0", None).library
    assert not bots.user_agent_evidence("Firefox/124.0", "Firefox").library
