"""The labelled user-agent corpus the bot detection is tuned and measured on (``tests/bots/data/corpus.jsonl.gz``).

One row per distinct user agent: its label (``bot`` or ``browser``; ``app`` for human non-browser clients and
``other`` for what a source calls "not a crawler" without it being shaped like a browser, both kept apart), the bot
kind, the sources that carry it and, for browsers, the device class when the source says it.
``tests/bots/build_corpus.py`` assembles it from public labelled sources (provenance and licences in
``tests/bots/data/SOURCES.md``). A user agent two sources label differently is left out (listed there).

Tuning and evaluation are separate: :func:`split_of` puts every user agent in ``tune`` or ``eval`` by a hash of
the string, so the weak-pattern list (``tests/bots/generate_weak_patterns.py``) is generated from the tuning half
only and every figure the benchmark and the tests quote is measured on the evaluation half.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "corpus.jsonl.gz"
#: The fixed sample the test suite asserts the targets on (a stratified draw from the evaluation half).
SAMPLE = DATA / "sample.jsonl.gz"

Label = Literal["bot", "browser", "app", "other"]
Split = Literal["tune", "eval"]
KINDS = ("crawler", "ai", "monitor", "scanner", "library", "feed", "social", "service")

#: Sources whose bots are the very examples one of the matched lists was written from (train = test for that
#: list): their recall is reported apart and never counted in the headline figures.
TRAIN_OF: dict[str, str] = {
    "crawler-user-agents": "crawler-user-agents",
    "isbot-fixtures": "isbot",
    "isbot-downloaded": "isbot",
}


@dataclass(frozen=True, slots=True)
class Sample:
    ua: str
    label: Label
    #: the bot kind (:data:`KINDS`); None for browsers and apps
    kind: str | None
    sources: tuple[str, ...]
    #: smartphone / tablet / desktop / ... for browsers when the source says it
    device: str | None = None

    @property
    def split(self) -> Split:
        return split_of(self.ua)

    @property
    def independent(self) -> bool:
        """Carried by at least one source that is not the training data of a list the detector matches with."""
        return any(source.split(":")[0] not in TRAIN_OF for source in self.sources)


def split_of(ua: str) -> Split:
    """``tune`` or ``eval``, half each, by the first byte of the string's SHA-256 (stable across runs)."""
    return "tune" if hashlib.sha256(ua.encode("utf-8", "surrogatepass")).digest()[0] < 128 else "eval"


def load(path: Path = CORPUS) -> list[Sample]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [Sample(row["ua"], row["label"], row.get("kind"), tuple(row["sources"]), row.get("device"))
                for row in map(json.loads, fh)]


def write(samples: Iterable[Sample], path: Path) -> int:
    rows = sorted(samples, key=lambda s: (s.label, s.ua))
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as raw:
        for s in rows:
            row = {"ua": s.ua, "label": s.label, "kind": s.kind, "sources": list(s.sources)}
            if s.device:
                row["device"] = s.device
            raw.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return len(rows)


#: Bot kind from the user agent, for sources that do not categorise their bots (first match wins; a source's own
#: category, where it has one, is used instead). For reporting only: detection never reads it.
_KIND_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(pattern, re.I)) for kind, pattern in (
    ("ai", r"gptbot|chatgpt|oai-searchbot|openai|claude|anthropic|perplexity|bytespider|ccbot|cohere|diffbot|"
           r"google-extended|googleother|gemini|amazonbot|applebot-extended|meta-externalagent|meta-externalfetcher|"
           r"youbot|ai2bot|mistral|timpibot|omgili|imagesift|petalbot|kangaroo bot|velenpublic|webzio|duckassist|"
           r"iaskspider|friendlycrawler|scrapy-ai|crawl4ai|firecrawl|novaact|operator|manus|\bai\b|llm"),
    ("library", r"^(?:curl|wget|python|go-http-client|okhttp|java/|apache-httpclient|libwww|lwp|axios|node-fetch|"
                r"undici|node|got|scrapy|guzzle|php|ruby|faraday|postman|insomnia|httpie|reqwest|dart|winhttp|"
                r"mechanize|aiohttp|httpx|urllib|pycurl|httplib|restsharp|unirest|rest-client|typhoeus|http\.rb|"
                r"jakarta|powershell|libcurl|cpp-httplib|grequests|requests)|windowspowershell|python-requests|"
                r"python-urllib|go-http-client|okhttp|libwww-perl|apache-httpclient"),
    ("scanner", r"scan|nmap|nikto|sqlmap|masscan|zgrab|nessus|qualys|acunetix|burp|censys|shodan|netcraft|"
                r"openvas|nuclei|wpscan|security|vuln|expanse|internet-measurement|leakix|detectify|probe"),
    ("monitor", r"monitor|uptime|pingdom|statuscake|site24x7|check|health|nagios|zabbix|collectd|datadog|newrelic|"
                r"synthetic|gomez|catchpoint|keynote|alertra|watch|ping|status|lighthouse|pagespeed|gtmetrix"),
    ("feed", r"feed|rss|atom|podcast|newsblur|inoreader|feedly|tiny tiny|miniflux|netnewswire|reader"),
    ("social", r"facebookexternalhit|facebookcatalog|twitterbot|slackbot|slack-imgproxy|discordbot|linkedinbot|"
               r"whatsapp|telegrambot|pinterest|skypeuripreview|redditbot|embedly|iframely|vkshare|tumblr|"
               r"mastodon|bluesky|snapchat|preview"),
    ("service", r"validator|linkcheck|link checker|w3c|archive|wayback|heritrix|proxy|translate|transcoder"),
))

#: A source's own categories → kinds (Matomo's Device Detector, AI Crawler Index, uap-core's ``Spider``).
CATEGORY_KIND: dict[str, str] = {
    "search bot": "crawler", "crawler": "crawler", "search tools": "crawler", "security search bot": "scanner",
    "": "crawler", "site monitor": "monitor", "network monitor": "monitor", "benchmark": "monitor",
    "security checker": "scanner", "feed fetcher": "feed", "feed reader": "feed", "feed parser": "feed",
    "read-it-later service": "feed", "ai data scraper": "ai", "ai search crawler": "ai", "ai assistant": "ai",
    "ai agent": "ai", "social media agent": "social", "service agent": "service", "service bot": "service",
    "validator": "service",
    # AI Crawler Index
    "ai-training": "ai", "ai-search": "ai", "user-fetch": "ai", "dataset": "ai", "search": "crawler",
    "seo": "crawler", "archive": "service", "tool": "service", "preview": "social",
}


def kind_of(ua: str, category: str | None = None) -> str:
    """The bot kind: the source's category when it has one, else the first :data:`_KIND_RULES` match, else
    ``crawler``."""
    if category in KINDS:
        return category
    if category is not None and category.lower() in CATEGORY_KIND:
        return CATEGORY_KIND[category.lower()]
    for kind, pattern in _KIND_RULES:
        if pattern.search(ua):
            return kind
    return "crawler"
