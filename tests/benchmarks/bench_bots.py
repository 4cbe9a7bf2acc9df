"""Bot-detection benchmark (``make bench-bots``): the first mile's user-agent decision on the labelled corpus.

Corpus: ``tests/bots/data/corpus.jsonl.gz`` (public labelled sources, provenance and licences in
``tests/bots/data/SOURCES.md``), split by a hash of each string into a tuning half (the weak-pattern list is
generated from it) and an evaluation half. Every figure is on the evaluation half unless it says otherwise.

The decision is the hot path's (``tests/bots/evaluate.py``): the facts stage 1 derives for the first event of a new
device from a residential address, and the bootstrap policy's bot rules. So a quarantined browser is a false positive
of the user agent alone, and a missed bot is one only its network or behaviour can still give away.

Prints, and writes as JSON (``--json``, default ``data/benchmarks/bots.json``):

1. Headline: recall on the curated bot sources and on the bots neither matched list was written from, browsers
   quarantined, against the targets (recall ≥ 0.97, browsers quarantined ≤ 0.03 %, uncached p99 ≤ 10 µs).
2. Per source: bots caught or browsers quarantined, with the same for isbot alone, crawler-user-agents alone (the
   first mile before: any list match quarantined) for comparison.
3. Per bot kind, per browser device class; which reason decided.
4. Per-event cost of the full user-agent decision (the matcher's scan of every source + the weighing, as
   ``streaming.facts.derive`` asks for it), uncached: every string new to a fresh matcher and empty caches; the
   cached hit; and ua-parser's parse apart (enrichment already pays it on the hot path; the decision reads its
   family).
5. The differential check: every pattern of every source, Hyperscan against Python ``re`` (``--differential``:
   the whole corpus, ~2 min; by default the evaluation half).

    .venv/bin/python tests/benchmarks/bench_bots.py [--json PATH] [--differential all|eval|none] [--cost-n 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bots import corpus, evaluate  # noqa: E402
from tests.bots.differential import disagreements  # noqa: E402

TARGET_RECALL = 0.97
TARGET_BROWSER_FP = 0.0003
TARGET_P99_US = 10.0
#: Sources whose bot lists are bulk downloads with known label noise (real browsers among the "bots": CUBOT phones,
#: UC Mini): reported apart, not in the headline recall.
BULK = "isbot-downloaded"


def source_tag(source: str) -> str:
    return source if source.startswith(BULK) else source.split(":")[0]


def ratio(a: int, n: int) -> float:
    return a / n if n else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def evaluate_corpus(samples: list[corpus.Sample]) -> list[tuple[corpus.Sample, evaluate.Decision]]:
    policy = evaluate.bootstrap()
    return [(s, evaluate.decide(s.ua, policy)) for s in samples]


def quality(rows: list[tuple[corpus.Sample, evaluate.Decision]]) -> dict[str, Any]:
    """Figures on the evaluation half (and the tuning half's headline, for reference)."""
    out: dict[str, Any] = {}
    for split in ("eval", "tune"):
        part = [(s, d) for s, d in rows if s.split == split]
        bots = [(s, d) for s, d in part if s.label == "bot"]
        curated = [(s, d) for s, d in bots if any(not x.startswith(BULK) for x in s.sources)]
        unseen = [(s, d) for s, d in curated if s.independent and not any(x.startswith(BULK) for x in s.sources)]
        browsers = [(s, d) for s, d in part if s.label == "browser"]
        out[split] = {
            "bots_curated": len(curated), "recall_curated": ratio(sum(d.quarantined for _, d in curated), len(curated)),
            "bots_unseen": len(unseen), "recall_unseen": ratio(sum(d.quarantined for _, d in unseen), len(unseen)),
            "bots_all": len(bots), "recall_all": ratio(sum(d.quarantined for _, d in bots), len(bots)),
            "browsers": len(browsers), "browsers_quarantined": sum(d.quarantined for _, d in browsers),
            "browser_fp": ratio(sum(d.quarantined for _, d in browsers), len(browsers)),
            "isbot_alone": {"recall_curated": ratio(sum(d.raw.get("isbot", False) for _, d in curated), len(curated)),
                            "browser_fp": ratio(sum(d.raw.get("isbot", False) for _, d in browsers), len(browsers))},
            "crawler_list_alone": {
                "recall_curated": ratio(sum(d.raw.get("crawler-user-agents", False) for _, d in curated),
                                        len(curated)),
                "browser_fp": ratio(sum(d.raw.get("crawler-user-agents", False) for _, d in browsers),
                                    len(browsers))},
        }
    part = [(s, d) for s, d in rows if s.split == "eval"]
    per_source: dict[tuple[str, str], list[tuple[corpus.Sample, evaluate.Decision]]] = defaultdict(list)
    for s, d in part:
        for source in {source_tag(x) for x in s.sources}:
            per_source[(source, s.label)].append((s, d))
    out["per_source"] = [
        {"source": source, "label": label, "n": len(items),
         "flagged": sum(d.quarantined for _, d in items),
         "isbot_alone": sum(d.raw.get("isbot", False) for _, d in items),
         "crawler_list_alone": sum(d.raw.get("crawler-user-agents", False) for _, d in items),
         "train_of": corpus.TRAIN_OF.get(source.split(":")[0])}
        for (source, label), items in sorted(per_source.items()) if label in ("bot", "browser", "app", "other")]
    kinds: dict[str, list[evaluate.Decision]] = defaultdict(list)
    for s, d in part:
        if s.label == "bot" and any(not x.startswith(BULK) for x in s.sources):
            kinds[s.kind or "crawler"].append(d)
    out["per_kind"] = {k: {"n": len(v), "caught": sum(d.quarantined for d in v)} for k, v in sorted(kinds.items())}
    devices: dict[str, list[evaluate.Decision]] = defaultdict(list)
    for s, d in part:
        if s.label == "browser":
            devices[s.device or "unknown"].append(d)
    out["per_device"] = {k: {"n": len(v), "quarantined": sum(d.quarantined for d in v)}
                         for k, v in sorted(devices.items())}
    deciding = Counter(d.rules[0] for s, d in part if s.label == "bot" and d.quarantined)
    out["deciding_rule"] = dict(deciding.most_common())
    reasons = Counter(r for s, d in part if s.label == "bot" for r in d.reasons)
    out["bot_reasons"] = dict(reasons.most_common())
    out["browser_reasons"] = dict(Counter(r for s, d in part if s.label == "browser" for r in d.reasons).most_common())
    out["quarantined_browsers"] = [
        {"ua": s.ua, "sources": list(s.sources), "device": s.device, "rules": d.rules}
        for s, d in part if s.label == "browser" and d.quarantined]
    out["missed_curated_bots"] = len([1 for s, d in part if s.label == "bot" and not d.quarantined
                                      and any(not x.startswith(BULK) for x in s.sources)])
    return out


def cost(samples: list[corpus.Sample], n: int, seed: int = 7, trials: int = 3) -> dict[str, Any]:
    """Per-event cost of the user-agent decision on never-seen strings: a fresh matcher, warmed on other strings (the
    tuning half), then empty caches, every string looked up once (uncached), then again (cached). ua-parser's family
    is computed first, outside the timing (enrichment's own cost, timed apart)."""
    from ua_parser import parse

    from streaming import bots, enrich
    from streaming.facts import derive  # noqa: F401 - imported for the same module state as the hot path

    rng = random.Random(seed)
    pool = [s for s in samples if s.label in ("bot", "browser") and s.split == "eval"]
    picked = rng.sample(pool, min(n, len(pool)))  # the evaluation half's mix: ~82 % browsers, ~18 % bots
    families = {s.ua: enrich.device(s.ua).browser for s in picked}
    t0 = time.perf_counter()
    bots.crawler_matcher.cache_clear()
    matcher = bots.crawler_matcher()
    compile_s = time.perf_counter() - t0
    # warm, as a running worker is: the database's pages touched, the interpreter's specializations made, on the
    # tuning half (other strings); then empty caches, so that every timed lookup is a new string
    warm = [s for s in samples if s.label in ("bot", "browser") and s.split == "tune"]
    for s in rng.sample(warm, min(5000, len(warm))):
        bots.user_agent_evidence(s.ua, enrich.device(s.ua).browser)
        matcher.match(s.ua)
    matcher._match.cache_clear()
    # as the worker does once warm: long-lived objects frozen out of the collector's way (a full collection over the
    # loaded corpus would land in one lookup's timing)
    gc.collect()
    gc.freeze()
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    # ``trials`` passes over the same strings, the caches emptied before each: a string's uncached cost is its
    # fastest pass (what it costs, not what the other processes on this shared machine cost it), and the first pass
    # is kept as measured
    best: dict[str, float] = {}
    first: dict[str, float] = {}
    first_cpu: list[float] = []
    for trial in range(trials):
        matcher._match.cache_clear()
        for s in picked:
            family = families[s.ua]
            c = cpu_clock()
            t = clock()
            matcher.match(s.ua)
            bots.user_agent_evidence(s.ua, family)
            elapsed = (clock() - t) / 1000
            if trial == 0:
                first[s.ua] = elapsed
                first_cpu.append((cpu_clock() - c) / 1000)
            best[s.ua] = min(elapsed, best.get(s.ua, elapsed))
    uncached: dict[str, list[float]] = {"bot": [], "browser": []}
    for s in picked:
        uncached[s.label].append(best[s.ua])
    cached: list[float] = []
    scan_only: list[float] = []
    for s in picked:
        t = clock()
        matcher.match(s.ua)
        bots.user_agent_evidence(s.ua, families[s.ua])
        cached.append((clock() - t) / 1000)
    for s in picked[:5000]:
        t = clock()
        matcher._hits(s.ua)
        scan_only.append((clock() - t) / 1000)
    parse_us: list[float] = []
    for s in picked[:3000]:
        t = clock()
        parse(s.ua + " x")  # a string ua-parser's own cache has not seen
        parse_us.append((clock() - t) / 1000)
    every = uncached["bot"] + uncached["browser"]

    def summary(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50_us": pct(values, 0.5), "p90_us": pct(values, 0.9), "p99_us": pct(values, 0.99),
                "max_us": max(values) if values else float("nan"),
                "mean_us": statistics.fmean(values) if values else float("nan")}

    gc.unfreeze()
    return {"patterns": len(matcher.entries), "prefiltered": sum(1 for e in matcher.entries if e.kind == 1),
            "fallback": len(matcher.fallback), "compile_s": compile_s,
            "trials": trials, "uncached_all": summary(every),
            "uncached_first_pass": summary(list(first.values())), "uncached_first_pass_cpu": summary(first_cpu),
            "uncached_bot": summary(uncached["bot"]),
            "uncached_browser": summary(uncached["browser"]), "cached": summary(cached),
            "scan_only": summary(scan_only), "ua_parser_parse": summary(parse_us)}


def _differential_part(user_agents: list[str]) -> tuple[list[str], int]:
    return disagreements(user_agents)


def differential_parallel(user_agents: list[str]) -> tuple[list[str], int]:
    """:func:`tests.bots.differential.disagreements` over every core (forked workers share the compiled matcher)."""
    import multiprocessing

    workers = max(1, os.cpu_count() or 1)
    parts = [user_agents[i::workers] for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.map(_differential_part, parts)
    return [line for found, _ in results for line in found], sum(checks for _, checks in results)


def fmt_pct(x: float, digits: int = 3) -> str:
    return f"{100 * x:.{digits}f} %"


def report(res: dict[str, Any]) -> str:
    q, c = res["quality"], res["cost"]
    ev = q["eval"]
    ok = lambda cond: "PASS" if cond else "FAIL"  # noqa: E731
    lines = [f"bench-bots — {res['machine']}, load {res['loadavg_start']} → {res['loadavg_end']}",
             f"corpus: {res['corpus']['user_agents']} user agents ({res['corpus']['bots']} bots, "
             f"{res['corpus']['browsers']} browsers); evaluation half below (tuning half in brackets)", "",
             "headline (evaluation half)",
             f"  recall, curated bot sources     {ev['recall_curated']:.4f}  of {ev['bots_curated']:>6}   "
             f"[{q['tune']['recall_curated']:.4f}]   target ≥ {TARGET_RECALL}  "
             f"{ok(ev['recall_curated'] >= TARGET_RECALL)}",
             f"  recall, bots no list was written from {ev['recall_unseen']:.4f}  of {ev['bots_unseen']:>6}   "
             f"[{q['tune']['recall_unseen']:.4f}]",
             f"  recall, every bot (bulk lists too) {ev['recall_all']:.4f}  of {ev['bots_all']:>6}   "
             f"[{q['tune']['recall_all']:.4f}]",
             f"  browsers quarantined            {fmt_pct(ev['browser_fp'])}  ({ev['browsers_quarantined']} of "
             f"{ev['browsers']})   [{fmt_pct(q['tune']['browser_fp'])}]   target ≤ {fmt_pct(TARGET_BROWSER_FP, 2)}  "
             f"{ok(ev['browser_fp'] <= TARGET_BROWSER_FP)}",
             f"  uncached p99 of the UA decision {c['uncached_all']['p99_us']:.1f} µs (best of {c['trials']}; first "
             f"pass {c['uncached_first_pass']['p99_us']:.1f})   target ≤ {TARGET_P99_US:.0f} µs  "
             f"{ok(c['uncached_all']['p99_us'] <= TARGET_P99_US)}",
             f"  for comparison, same halves: isbot alone recall {ev['isbot_alone']['recall_curated']:.4f} / browsers "
             f"{fmt_pct(ev['isbot_alone']['browser_fp'])}; crawler-user-agents alone (the first mile before) "
             f"{ev['crawler_list_alone']['recall_curated']:.4f} / {fmt_pct(ev['crawler_list_alone']['browser_fp'])}",
             "", "per source (evaluation half): bots caught / browsers quarantined; isbot alone, crawler list alone",
             f"  {'source':<36} {'label':<8} {'n':>7} {'first mile':>12} {'isbot':>12} {'crawler list':>12}"]
    for row in q["per_source"]:
        n = row["n"]
        cells = [f"{ratio(row[k], n):.4f}" if row["label"] == "bot" else fmt_pct(ratio(row[k], n))
                 for k in ("flagged", "isbot_alone", "crawler_list_alone")]
        train = f"  (train = test for {row['train_of']})" if row["train_of"] else ""
        lines.append(f"  {row['source']:<36} {row['label']:<8} {n:>7} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12}"
                     f"{train}")
    lines += ["", "per bot kind (curated sources, evaluation half): recall"]
    for kind, v in q["per_kind"].items():
        lines.append(f"  {kind:<10} {ratio(v['caught'], v['n']):.4f}  ({v['caught']} of {v['n']})")
    lines += ["", "browsers quarantined per device class (evaluation half)"]
    for device, v in q["per_device"].items():
        lines.append(f"  {device:<22} {fmt_pct(ratio(v['quarantined'], v['n']))}  ({v['quarantined']} of {v['n']})")
    lines += ["", "the rule that decided (bots caught, evaluation half): "
              + ", ".join(f"{k} {v}" for k, v in q["deciding_rule"].items()),
              "ua_reasons on bots: " + ", ".join(f"{k} {v}" for k, v in q["bot_reasons"].items()),
              "ua_reasons on browsers: " + ", ".join(f"{k} {v}" for k, v in q["browser_reasons"].items()),
              "", f"per-event cost of the UA decision ({c['patterns']} patterns in one Hyperscan database, "
              f"{c['prefiltered']} prefiltered + confirmed with re, {c['fallback']} re fallbacks; compiled in "
              f"{c['compile_s']:.2f} s)"]
    for name, label in (("uncached_all", f"uncached, all (best of {c['trials']})"),
                        ("uncached_first_pass", "uncached, all, first pass"),
                        ("uncached_first_pass_cpu", "  the same, thread CPU time"),
                        ("uncached_browser", "uncached, browsers"),
                        ("uncached_bot", "uncached, bots"), ("cached", "cached hit"),
                        ("scan_only", "Hyperscan scan alone"), ("ua_parser_parse", "ua-parser parse (enrichment)")):
        v = c[name]
        lines.append(f"  {label:<30} p50 {v['p50_us']:6.1f}  p90 {v['p90_us']:6.1f}  p99 {v['p99_us']:6.1f}  "
                     f"max {v['max_us']:7.1f} µs  (n {v['n']})")
    d = res.get("differential")
    if d:
        lines += ["", f"differential (Hyperscan vs Python re, every pattern of every source): {d['user_agents']} user "
                  f"agents ({d['scope']}), {d['pattern_checks']} pattern checks, {len(d['disagreements'])} "
                  f"disagreements  {ok(not d['disagreements'])}"]
        lines += [f"  {x}" for x in d["disagreements"][:10]]
    lines += ["", "quarantined browsers (evaluation half):"]
    lines += [f"  {b['rules']} {b['device'] or ''} {b['ua'][:150]!r} {b['sources']}" for b in q["quarantined_browsers"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=str(ROOT / "data" / "benchmarks" / "bots.json"))
    parser.add_argument("--differential", choices=("all", "eval", "none"), default="eval")
    parser.add_argument("--cost-n", type=int, default=20_000)
    args = parser.parse_args()
    started = time.monotonic()
    res: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cores Python {platform.python_version()}",
                           "loadavg_start": round(os.getloadavg()[0], 1)}
    samples = corpus.load()
    labels = Counter(s.label for s in samples)
    res["corpus"] = {"user_agents": len(samples), "bots": labels["bot"], "browsers": labels["browser"]}
    print(f"[{time.monotonic() - started:5.1f}s] corpus loaded: {len(samples)} user agents", flush=True)
    res["cost"] = cost(samples, args.cost_n)  # first: fresh caches
    print(f"[{time.monotonic() - started:5.1f}s] cost measured", flush=True)
    rows = evaluate_corpus([s for s in samples if s.label in ("bot", "browser", "app", "other")])
    res["quality"] = quality(rows)
    print(f"[{time.monotonic() - started:5.1f}s] corpus decided", flush=True)
    if args.differential != "none":
        scope = [s.ua for s in samples if args.differential == "all" or s.split == "eval"]
        found, checks = differential_parallel(scope)
        res["differential"] = {"scope": "whole corpus" if args.differential == "all" else "evaluation half",
                               "user_agents": len(scope), "pattern_checks": checks, "disagreements": found}
        print(f"[{time.monotonic() - started:5.1f}s] differential done", flush=True)
    res["loadavg_end"] = round(os.getloadavg()[0], 1)
    res["total_s"] = round(time.monotonic() - started, 1)
    text = report(res)
    print()
    print(text)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**res, "report": text}, indent=1, default=str))
    print(f"\nJSON: {out}  (total {res['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
