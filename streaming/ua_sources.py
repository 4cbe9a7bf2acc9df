"""The user-agent evidence sources the bot decision weighs (:mod:`streaming.bots` compiles them), each with the
semantics its reference matcher gives it in Python ``re``.

* ``crawler-user-agents``: the list's patterns (PyPI ``crawler-user-agents``, MIT), case-sensitive, as the list's
  own ``is_crawler`` matches them.
* ``isbot``: the npm package's pattern list, vendored in ``ua_isbot.json`` with its licence and provenance
  (Unlicense; refreshed from the npm registry by ``tests/bots/refresh_isbot.py``), case-insensitive and ASCII like
  isbot's ``RegExp(..., "i")``.
* ``self_identified``: the generic rule of this module: a user agent that names itself a bot, crawler, spider,
  scanner, monitor ..., or carries a contact URL or e-mail address. Before it reads the user agent, tokens of real
  browsers and devices that contain such words are blanked (:data:`SELF_IDENTIFIED_ALLOW`: the device model slot
  of an Android user agent, ``CUBOT`` phones, old browsers that print their home page ...).
* ``library``: an HTTP library or command-line client (curl, python-requests, Go-http-client, okhttp, Java,
  libwww-perl, axios, node-fetch, Scrapy, wget, ...), Office's link probes, a lone ``Name/version`` product token,
  read after the same blanking.

A generic rule that describes a shape a browser can also have (:data:`SHAPES`) counts like a list's weak pattern;
and a user agent that names an embedded device's browser platform (:data:`DEVICE_BROWSER`: a TV's, a feature
phone's, which ua-parser mostly does not know) takes the weak patterns' power to count on their own away.

Two lists are generated, not hand-kept (``ua_weak_patterns.json``, by ``tests/bots/generate_weak_patterns.py`` from
the tuning half of the labelled corpus): the *weak* patterns of both lists (they also match real browsers: a device
build id, a phone model, a browser's name; such a match counts on its own only on a user agent that does not parse
as a known browser, and not even there when the pattern also matched a real browser that parses as none), and the
ua-parser browser families real browsers parse as.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

SourceName = Literal["crawler-user-agents", "isbot", "self_identified", "library"]
#: The two maintained lists whose patterns are weighed by the weak-pattern list.
LISTS: tuple[SourceName, ...] = ("crawler-user-agents", "isbot")

#: ``re`` flags of isbot's patterns and of this module's rules: isbot matches with JavaScript's ``i`` flag and no
#: ``u`` flag, so ``\w``, ``\d`` and ``\b`` are ASCII.
CASELESS_ASCII = re.IGNORECASE | re.ASCII

#: Self-identification, caseless ASCII: the words agents use for themselves, a contact URL, an e-mail address.
SELF_IDENTIFIED: tuple[str, ...] = (
    r"bots?(?:\b|_)",
    r"crawl|spider|scraper|scrapy|harvest|indexer|archiver|fetcher|checker|validator|scanner|monitor|uptime|"
    r"headless|lighthouse|pagespeed|phantomjs|selenium|puppeteer|playwright|webdriver|sniffer|probe\b|\bfetch\b",
    # page renderers and screenshot services
    r"wkhtmlto|screenshot|thumbnail|webthumb|snapr\b|screenie|web-capture|zombie\.js|prerender|rendertron|urlbox",
    # Google's service agents name themselves Google-<service>, also inside a browser's "(KHTML, like Gecko; ...)"
    r"\bgoogle-[a-z]|\(khtml, like gecko[;,] ?google",
    r"https?://|\bwww\.[a-z0-9-]+\.[a-z]{2,}",
    # one character before the @ is enough; ``root@localhost`` is the address an unconfigured crawler (ht://Dig,
    # wget-based mirrors) prints when nobody set one: a contact address all the same
    r"[a-z0-9._%+-]@(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}|localhost)\b",
    # an address spelled out against harvesters: "crawler at example dot com"
    r"\b(?:at|@) ?[a-z0-9-]+ ?(?:\.|dot) ?(?:com|net|org|de|fr|ru|io|edu)\b",
    # the crawler convention for a contact: "(compatible; Name/1.0; +http://...)"; the "+" is there even when what
    # follows is not a URL ("+prospeccao-adtech"). A browser's compatible comment never has it (MSIE, Konqueror)
    r"\(compatible;[^)]*; \+",
    # a "(compatible; ...)" comment appended after a browser's product tokens: how an agent that imitates a browser
    # names itself (Googlebot's smartphone agent does so: "... Mobile Safari/537.36 (compatible; Googlebot/2.1)");
    # browsers put their compatible comment first, right after "Mozilla/x.y"
    r"(?:safari|chrome|firefox|gecko)/[\d.]+ \(compatible;",
    # agents that fetch a page for something other than a reader in front of it, and say so: translation proxies
    # (Yandex.Translate, Google Translate's proxy) and cache preloaders / warmers (WP Rocket's "Homepage Preload")
    r"\btranslat(?:e|or|ion)|\bpreload|\bprefetch|\bcache[ -]?warm",
)

#: A lone product token, "Name/version" and nothing else: the default of HTTP clients and tools (curl/8.4.0,
#: Go-http-client/1.1, ImageVisu/v4.x.x). Browsers, webviews and app HTTP stacks name their platform or engine as
#: well (a comment, CFNetwork/ Darwin/, Dalvik/ (Linux; ...), Profile/MIDP-2.0 ...), but a few minimal browsers send
#: their product alone (Dillo/3.0.5): a shape, not a name, so it is one of :data:`SHAPES`.
LONE_PRODUCT = r"^[a-z][\w.-]*/[^\s/]+$"

#: HTTP libraries and command-line clients (caseless ASCII), at the start of the user agent or of a product token.
LIBRARY: tuple[str, ...] = (
    r"(?:^|[\s(;,])(?:curl|libcurl|pycurl|wget|python-requests|python-urllib|python-httpx|httpx|aiohttp|urllib3|"
    r"httplib2|python/\d|cpython/\d|requests/\d|go-http-client|okhttp|apache-httpclient|jakarta commons-httpclient|"
    r"libwww-perl|lwp::|lwp-|axios|node-fetch|undici|node\.js|scrapy|guzzlehttp|php/\d|ruby/\d|faraday|"
    r"postmanruntime|insomnia|httpie|reqwest|dart/\d|winhttp|windowspowershell|mechanize|httpclient|cpp-httplib|"
    r"restsharp|unirest|rest-client|typhoeus|excon|http\.rb|wininet|got/\d|superagent|java-http-client|jersey|"
    r"resty|httpunit|htmlunit|alamofire/|reactornetty/|ureq/|kubectl/)\b",
    r"^(?:java/|ruby\b|go \d|perl\b|lua-resty|libfetch|fetch/\d|http_request|requests/\d)",
    r"http[ _\\-]?client",
    # .NET's SOAP client (SoapHttpClientProtocol) and Office's link probes: Office for Windows checks a link before
    # it opens it ("Microsoft Office Protocol Discovery" / "Existence Discovery"), Office for Mac does it as
    # "Mozilla/5.0 (Macintosh; Intel Mac OS X) Word/14.0.0" (an application after the platform, no rendering
    # engine): requests no reader sees, the page view comes from the browser the link is then handed to
    r"ms web services client protocol|microsoft office (?:protocol|existence) discovery|"
    r"\) (?:word|excel|powerpoint|outlook)/\d",
    LONE_PRODUCT,
)

#: Generic rules that describe a shape a real browser's user agent can also have, rather than a word an agent uses
#: for itself: weak by declaration (a match counts on its own only on a user agent that does not parse as a known
#: browser nor names a device browser's platform, like a list's weak pattern).
SHAPES: frozenset[str] = frozenset({LONE_PRODUCT})

#: Tokens of real browsers and devices that contain a self-identification or library word, blanked before those
#: two rules read the user agent (same length, letters: word boundaries stay where they were). Hand-kept: each
#: entry names what it is.
SELF_IDENTIFIED_ALLOW: tuple[str, ...] = (
    # the device model slot of an Android user agent that holds one of the rules' words (``Android 10; CUBOT J9``,
    # ``Android 7.0; M bot 60 Build``, ``Android 4.4.2; Forward Ruby Build``): a phone's name, never an agent's
    # (a slot without such a word is left as it is: blanking it would change nothing, and costs a scan; and a slot
    # that calls itself a screenshot generator is a page renderer's emulated device, so "screen" is not blanked)
    r"android [\w.]+;(?: [a-z]{2}(?:[-_][a-z]{2})?;)? [^;)]*?(?:bot|crawl|spider|scan|scrap|monitor|check|fetch|"
    r"probe|valid|index|archiv|harvest|sniff|uptime|headless|thumb|ruby|java|perl|php|python|curl|wget|"
    r"go \d|node|http|client|request|@|www\.)[^;)]*",
    r"cubot",                               # CUBOT phones outside the model slot
    r"camscanner/",                         # CamScanner's in-app browser
    r"safari%20technology%20preview|safari technology preview",
    # old browsers that print their home page in the user agent
    r"https?://(?:www\.)?(?:avantbrowser\.com|bsalsa\.com|qtweb\.net|orcabrowser\.com)",
    r"\(ecosia (?:android|ios)@[\d.]+\)",   # Ecosia's app appends ``android@<version>``
)

#: Tokens that name the web platform of an embedded device's browser, caseless ASCII: TVs, set-top boxes and feature
#: phones, whose browsers ua-parser mostly does not know (so its family cannot vouch for them) and whose user agents
#: are often bare enough to fit a list's generic shapes (isbot's "one product token only"). A weak list pattern does
#: not count on its own on a user agent that names one of these (as on one that parses as a known browser): only
#: with other evidence. Strong patterns and the generic rules are unaffected. Hand-kept: each entry names what it is.
DEVICE_BROWSER: tuple[str, ...] = (
    r"smart-?tv|hbbtv",                    # smart TVs ("smarttv_AFTMM_Build_..._Chromium_59", HbbTV/1.1.1)
    r"chromium",                           # a Chromium build named as such (TV and set-top box browsers)
    r"\bwap\b|\bmaui\b|up\.browser",        # WAP browsers, MediaTek's MAUI feature-phone platform, Openwave
    r"midp|cldc",                          # J2ME phones: Profile/MIDP-2.0 Configuration/CLDC-1.1
    r"netfront|obigo",                     # embedded browser engines of phones, TVs and cars
    r"browser/\d|\bopera/\d",              # a browser's own product token with its version ("nook browser/1.0")
)

#: How much a pattern's match counts: on its own, unless the user agent parses as a known browser, or never alone.
Strength = Literal["strong", "weak", "never_alone"]


@dataclass(frozen=True, slots=True)
class PatternSource:
    """One source's patterns as Python ``re`` spells them (the reference semantics), with its ``re`` flags."""

    name: SourceName
    patterns: tuple[str, ...]
    flags: int
    #: the strings the source itself publishes, where they differ from :attr:`patterns` (isbot's JavaScript)
    originals: tuple[str, ...]
    #: blank :data:`SELF_IDENTIFIED_ALLOW` tokens before matching (the generic rules)
    blank_allowed: bool = False


def crawler_user_agents() -> PatternSource:
    import crawleruseragents

    patterns = tuple(entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA)
    return PatternSource("crawler-user-agents", patterns, 0, patterns)


@cache
def isbot_document() -> dict[str, Any]:
    """``ua_isbot.json``: isbot's patterns, version, licence and provenance."""
    doc: dict[str, Any] = json.loads(resources.files("streaming").joinpath("ua_isbot.json").read_text("utf-8"))
    return doc


def isbot() -> PatternSource:
    entries = isbot_document()["patterns"]
    return PatternSource("isbot", tuple(e.get("python", e["pattern"]) for e in entries), CASELESS_ASCII,
                         tuple(e["pattern"] for e in entries))


def self_identified() -> PatternSource:
    return PatternSource("self_identified", SELF_IDENTIFIED, CASELESS_ASCII, SELF_IDENTIFIED, blank_allowed=True)


def library() -> PatternSource:
    return PatternSource("library", LIBRARY, CASELESS_ASCII, LIBRARY, blank_allowed=True)


def all_sources() -> tuple[PatternSource, ...]:
    return (crawler_user_agents(), isbot(), self_identified(), library())


ALLOW_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p, CASELESS_ASCII) for p in SELF_IDENTIFIED_ALLOW)


def blank_allowed(user_agent: str, only: Iterable[int] | None = None) -> str:
    """The user agent with :data:`SELF_IDENTIFIED_ALLOW` tokens replaced by as many ``x`` (so a word boundary or a
    ``https://`` can only disappear, never appear: a match after blanking is a match before it), token by token in
    declaration order; ``only``: the indices of the tokens present (the matcher knows them from its scan)."""
    for i in sorted(only) if only is not None else range(len(ALLOW_PATTERNS)):
        user_agent = ALLOW_PATTERNS[i].sub(_xs, user_agent)
    return user_agent


DEVICE_BROWSER_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p, CASELESS_ASCII) for p in DEVICE_BROWSER)


def names_device_browser(user_agent: str) -> bool:
    """Whether ``user_agent`` names an embedded device's browser platform (:data:`DEVICE_BROWSER`), in ``re``: the
    reference the matcher's Hyperscan scan is checked against, and what the weak-list generator reads."""
    return any(p.search(user_agent) for p in DEVICE_BROWSER_PATTERNS)


def _xs(match: re.Match[str]) -> str:
    return "x" * (match.end() - match.start())


@cache
def weak_document() -> dict[str, Any]:
    """``ua_weak_patterns.json`` (generated): the weak patterns of each list and the browser families."""
    doc: dict[str, Any] = json.loads(
        resources.files("streaming").joinpath("ua_weak_patterns.json").read_text("utf-8"))
    return doc


def weak_patterns(source: SourceName) -> dict[str, Strength]:
    """The patterns of ``source`` (as the source publishes them) known to match real browsers: ``weak`` (counts on
    its own only on a user agent that does not parse as a known browser) or ``never_alone`` (it also matched a
    real browser that parses as none). A list's are generated (``ua_weak_patterns.json``); the generic rules' are
    the :data:`SHAPES` among them."""
    if source not in LISTS:
        return {p: "weak" for p in SELF_IDENTIFIED + LIBRARY if p in SHAPES}
    return {entry["pattern"]: "never_alone" if entry["never_alone"] else "weak"
            for entry in weak_document()["weak"].get(source, [])}


def browser_families() -> frozenset[str]:
    """ua-parser browser families that real browsers parse as (and bots rarely do)."""
    return frozenset(weak_document()["browser_families"])
