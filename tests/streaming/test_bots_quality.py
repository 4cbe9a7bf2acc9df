"""The user-agent decision's targets on the fixed committed sample (``tests/bots/data/sample.jsonl.gz``): every bot
a curated public source carries in the evaluation half (≈3,000) and 12,000 of its browsers (``tests/bots/corpus.py``,
``tests/bots/build_corpus.py``; provenance and licences in ``tests/bots/data/SOURCES.md``).

Targets: recall ≥ 0.97, browsers quarantined ≤ 0.03 %. Recall on the bots no matched list was written from (the
sample holds every one of the evaluation half's, ≈1,200) is held to a floor below the target, which it does not
meet yet (0.9535: the misses are label disputes, such as Matomo's tracker SDK on a watch and Apple's media framework
labelled bots, and one-off names no generic rule describes); the target is a strict xfail, so meeting it fails the
run until the floor is raised. The decision is the hot path's (``tests/bots/evaluate.py``:
stage 1's facts for a new device at a residential address, the bootstrap policy's bot rules), so a quarantined
browser here is one the user agent alone condemned. The whole corpus, per source and per bot kind, and the per-event
cost: ``make bench-bots`` (a benchmark, not a timed test). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.bots import corpus, evaluate

TARGET_RECALL = 0.97
TARGET_BROWSERS_QUARANTINED = 0.0003
#: Recall on the independent bots (no matched list was written from them) must not fall below what was measured
#: (0.9535 on the evaluation half; 0.9451 before the generic rules of issue 19's second pass).
FLOOR_RECALL_INDEPENDENT = 0.95


@pytest.fixture(scope="module")
def decided():
    policy = evaluate.bootstrap()
    samples = corpus.load(corpus.SAMPLE)
    return [(s, evaluate.decide(s.ua, policy)) for s in samples]


def test_the_sample_is_the_evaluation_half_with_bots_of_every_kind(decided):
    assert all(s.split == "eval" for s, _ in decided), "the sample must not overlap the tuning half"
    labels = Counter(s.label for s, _ in decided)
    assert labels["bot"] >= 2500 and labels["browser"] == 12_000
    kinds = Counter(s.kind for s, _ in decided if s.label == "bot")
    assert set(kinds) == set(corpus.KINDS), kinds


def test_recall_on_the_sample_is_at_least_the_target(decided):
    bots = [(s, d) for s, d in decided if s.label == "bot"]
    caught = sum(d.quarantined for _, d in bots)
    by_kind: dict[str, list[bool]] = {}
    for s, d in bots:
        by_kind.setdefault(s.kind or "crawler", []).append(d.quarantined)
    print(f"\nrecall {caught / len(bots):.4f} ({caught} of {len(bots)}); by kind: "
          + ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in sorted(by_kind.items())))
    assert caught / len(bots) >= TARGET_RECALL


def _independent_recall(decided) -> tuple[float, list[str]]:
    """Recall on the sample's bots that a source other than a matched list's training data carries (and no bulk
    download: ``tests/bots/corpus.py``, ``tests/benchmarks/bench_bots.py``), and the user agents missed."""
    bots = [(s, d) for s, d in decided if s.label == "bot" and s.independent
            and not any(x.startswith("isbot-downloaded") for x in s.sources)]
    assert len(bots) >= 1000, len(bots)
    missed = [s.ua for s, d in bots if not d.quarantined]
    return 1 - len(missed) / len(bots), missed


def test_recall_on_the_bots_no_matched_list_was_written_from_holds_its_floor(decided):
    recall, missed = _independent_recall(decided)
    print(f"\nrecall on independent bots {recall:.4f} ({len(missed)} missed)")
    for ua in missed:
        print(f"  {ua[:150]!r}")
    assert recall >= FLOOR_RECALL_INDEPENDENT


@pytest.mark.xfail(strict=True, reason="not met yet: 0.9535 on the evaluation half (tests/benchmarks/README.md)")
def test_recall_on_the_bots_no_matched_list_was_written_from_is_at_least_the_target(decided):
    recall, _ = _independent_recall(decided)
    assert recall >= TARGET_RECALL


def test_browsers_quarantined_on_the_sample_are_at_most_the_target(decided):
    browsers = [(s, d) for s, d in decided if s.label == "browser"]
    flagged = [(s.ua, d.rules, d.reasons) for s, d in browsers if d.quarantined]
    print(f"\nbrowsers quarantined {len(flagged) / len(browsers):.4%} ({len(flagged)} of {len(browsers)})")
    for ua, rules, reasons in flagged:
        print(f"  {rules} {reasons} {ua!r}")
    assert len(flagged) / len(browsers) <= TARGET_BROWSERS_QUARANTINED, flagged


def test_every_reason_the_ledger_gives_a_bot_is_one_of_the_facts(decided):
    from streaming.facts import UA_REASONS

    seen = Counter(r for _, d in decided for r in d.reasons)
    assert set(seen) <= set(UA_REASONS.values())
    assert {"crawler", "isbot", "self_identified", "library", "weak_pattern"} <= set(seen), seen
