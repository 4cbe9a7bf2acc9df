"""What a batch-only platform's nightly run would have learned, and from which midnight it would have enforced it.

The batch-only platform runs the loop's own learning steps once a night, at each UTC midnight, over the training
set restricted to the events before that midnight:

1. :func:`ml.bot_rules.mine_bot_rules` (the same :class:`~ml.bot_rules.MiningConfig`) mines bot rules the batch's
   current policy missed;
2. :func:`ml.candidate.build_candidate` (``start_mode="auto"``, as the loop runs it) adds them: a flawless rule is
   enforced at once, the others enter in ``shadow`` and a later night enforces them when what they hit since they
   entered agrees with hindsight (the same :class:`~ml.candidate.GateConfig` bounds the hot path's recorded shadow
   hits are judged by; the batch computes the hits itself);
3. :func:`ml.candidate.evaluate_gate` judges the candidate against the batch's champion on the same events
   (bots caught, known humans quarantined, consent not looser), the backtest replayed in Python over the
   training rows; only a candidate that passes becomes the batch's champion (or one that only adds shadow rules:
   it changes no decision, and the loop ships it because the night's new student passes the gate);
4. the champion's rules filter the flow from that midnight on (a run is taken to take no time).

The training set is the warehouse's (``training_events``, what the first mile's loop learned from), with two
corrections so that the batch does not learn from the first mile's results: an event the hot path quarantined only
by a rule the first mile learned counts as *not* caught (the batch has no such rule unless it learned it itself,
in which case its own rule catches it), and ``label_bot`` is recomputed as dbt's ``bot_labels`` does
(behaviour, or a caught event in the session) from those catches.
What is not simulated: the bot model (``models.bot``) and the propensity student (rules only), and the hindsight
labels of a session that runs past a midnight are the whole session's (the batch is credited with its end).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from ml.backtest import consent_not_looser
from ml.bot_rules import MiningConfig, mine_bot_rules
from ml.candidate import GateConfig, build_candidate, evaluate_gate
from streaming import facts as fact_catalog
from streaming.policy import bootstrap_policy, compile_policy


@dataclass
class NightlyRun:
    """One simulated nightly run: what it learned from the events before ``midnight``."""

    midnight: datetime
    rows: int
    mined: list[dict[str, Any]] = field(default_factory=list)
    #: the batch's champion after the run (its rules filter the flow from ``midnight`` on)
    policy: dict[str, Any] = field(default_factory=dict)
    gate_passed: bool = False
    #: the candidate became the batch's champion (gate passed, or it only added shadow rules)
    adopted: bool = False
    gate_reasons: list[str] = field(default_factory=list)
    #: rule id → JsonLogic condition of the rules the nightly learner added that the champion enforces now
    enforced: dict[str, Any] = field(default_factory=dict)


def midnights(first: datetime, last: datetime) -> list[datetime]:
    """Every UTC midnight after ``first``'s day, up to the first one after ``last``."""
    first, last = first.astimezone(UTC), last.astimezone(UTC)
    night = datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=1)
    out = []
    while True:
        out.append(night)
        if night > last:
            return out
        night += timedelta(days=1)


def fact_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The facts a rule reads, selected from training rows with the fact catalog's own expressions
    (:data:`streaming.facts.SQL`, the SQL the backtest replays rules with over ``stg_decided``): every fact whose
    expression is a column of the frame (the session features ``f_<name>``, ``event_type``, ...). A fact whose
    expression is not a plain column here (``identified`` reads the ledger, which the training set does not carry)
    is absent, and a rule reading it never fires — as in the backtest, where a missing column reads NULL."""
    columns = {name: sql for name, sql in fact_catalog.SQL.items() if sql in frame.columns}
    return frame.select([pl.col(sql).alias(name) for name, sql in columns.items()]).to_dicts()


def _holds(predicate: Any, facts: Mapping[str, Any]) -> bool:
    try:
        return bool(predicate(facts))
    except (TypeError, KeyError, ValueError):
        return False  # a fact the row does not carry never fires (as in the backtest, where it reads NULL)


def _enforced_predicates(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(r.id, r.predicate) for r in compile_policy(doc).bot_rules if r.mode == "enforce"]


def _shadow_agreement(doc: dict[str, Any], facts: Sequence[Mapping[str, Any]], labels: Sequence[bool],
                      ts: Sequence[datetime], entered: Mapping[str, datetime]) -> dict[str, dict[str, float]]:
    """:func:`ml.candidate.shadow_rule_agreement`'s numbers, from the rows since each shadow rule entered."""
    out = {}
    for rule in compile_policy(doc).bot_rules:
        if rule.mode != "shadow" or rule.id not in entered:
            continue
        window = [i for i, t in enumerate(ts) if t >= entered[rule.id]]
        hits = [i for i in window if _holds(rule.predicate, facts[i])]
        bots = sum(1 for i in hits if labels[i])
        humans = sum(1 for i in window if not labels[i])
        out[rule.id] = {"hits": float(len(hits)), "bots": float(bots),
                        "precision": bots / len(hits) if hits else 0.0, "human_hits": float(len(hits) - bots),
                        "humans": float(humans), "human_rate": (len(hits) - bots) / humans if humans else 0.0}
    return out


def _backtest(candidate: dict[str, Any], champion: dict[str, Any], facts: Sequence[Mapping[str, Any]],
              labels: Sequence[bool]) -> dict[str, Any]:
    """The bot half of :func:`ml.backtest.backtest`, replayed in Python over the training rows."""
    cand, champ = _enforced_predicates(candidate), _enforced_predicates(champion)
    caught = {"candidate": [0, 0], "champion": [0, 0]}  # bots, humans
    for f, bot in zip(facts, labels, strict=True):
        for name, rules in (("candidate", cand), ("champion", champ)):
            if any(_holds(p, f) for _, p in rules):
                caught[name][0 if bot else 1] += 1
    humans = max(sum(1 for b in labels if not b), 1)
    return {"candidate_bots_caught": caught["candidate"][0], "champion_bots_caught": caught["champion"][0],
            "candidate_human_fp_rate": caught["candidate"][1] / humans,
            "champion_human_fp_rate": caught["champion"][1] / humans,
            "candidate_converting_to_sales": 0, "champion_converting_to_sales": 0,
            "consent_identical_or_stricter": consent_not_looser(candidate, champion)}


def simulate_nightly(frame: pl.DataFrame, nights: Iterable[datetime], *, base_policy: dict[str, Any] | None = None,
                     first_mile_only: Collection[str] = (), config: MiningConfig | None = None,
                     gate: GateConfig | None = None) -> list[NightlyRun]:
    """Run the nightly learner at each of ``nights`` (in order) over the rows of ``frame`` before it.

    ``frame`` is the training set as :func:`ml.datasets.load_training_events` returns it (``event_ts``,
    ``event_id``, ``session_id``, ``is_bot``, ``label_bot`` and, when present, ``label_bot_behaviour``, the
    ``f_`` features). ``first_mile_only``: event ids the hot path quarantined only by rules the first mile learned.
    """
    base = base_policy or bootstrap_policy()
    config, gate = config or MiningConfig(), gate or GateConfig()
    known = {r["id"] for r in base["rules"]}
    frame = frame.with_columns(pl.col("event_ts").dt.convert_time_zone("UTC")).sort("event_ts")
    ts: list[datetime] = frame["event_ts"].to_list()
    facts = fact_rows(frame)
    hot_caught = [bool(b) and e not in first_mile_only
                  for b, e in zip(frame["is_bot"].fill_null(False), frame["event_id"], strict=True)]
    champion = base
    active: list[tuple[datetime, Any]] = []        # (from midnight, predicate) of the batch's own enforced rules
    entered: dict[str, datetime] = {}              # shadow rule id → the midnight it entered
    runs = []
    for night in sorted(nights):
        n = bisect.bisect_left(ts, night)
        caught = [hot_caught[i] or any(t <= ts[i] and _holds(p, facts[i]) for t, p in active) for i in range(n)]
        seen = frame.head(n).with_columns(pl.Series("is_bot", caught, dtype=pl.Boolean))
        if "label_bot_behaviour" in seen.columns:  # dbt's bot_labels: behaviour, or a caught event in the session
            seen = seen.with_columns(
                (pl.col("label_bot_behaviour").cast(pl.Boolean).fill_null(False)
                 | pl.col("is_bot").any().over("session_id")).cast(pl.Int8).alias("label_bot"))
        labels = [bool(v) for v in seen["label_bot"].fill_null(0)]
        run = NightlyRun(midnight=night, rows=n, policy=champion)
        run.mined = mine_bot_rules(_settled(seen, night), config=config) if n else []
        agreement = _shadow_agreement(champion, facts[:n], labels, ts[:n], entered)
        candidate = build_candidate(champion, student=None, mined=run.mined, shadow_agreement=agreement,
                                    start_mode="auto", gate=gate, created_at=night)
        result = evaluate_gate(_backtest(candidate, champion, facts[:n], labels), None, config=gate)
        run.gate_passed, run.gate_reasons = result.passed, result.reasons
        before = {rid for rid, _ in _enforced_predicates(champion)}
        failed = {name for name, ok in result.checks.items() if not ok}
        # A candidate that only adds shadow rules changes no decision: the loop ships it with the night's student
        # (a new model passes "better than the champion"); rules alone cannot, so it is adopted as it is.
        unchanged = {rid for rid, _ in _enforced_predicates(candidate)} == before
        adds_shadow = {r["id"] for r in candidate["rules"]} > {r["id"] for r in champion["rules"]}
        run.adopted = result.passed or (unchanged and adds_shadow and failed <= {"better_than_champion"})
        if run.adopted:
            champion = candidate
            for rule in champion["rules"]:
                if rule["id"] not in known and rule.get("mode") == "shadow":
                    entered.setdefault(rule["id"], night)
            active += [(night, p) for rid, p in _enforced_predicates(champion) if rid not in before]
        run.policy = champion
        run.enforced = {r["id"]: r["when"] for r in champion["rules"]
                        if r["id"] not in known and r.get("mode", "enforce") == "enforce" and r["kind"] == "bot"}
        runs.append(run)
    return runs


def coverage(run: NightlyRun, pattern: Sequence[Mapping[str, Any]]) -> float:
    """The share of a pattern's events (their facts) that the rules the run's learner added enforce on."""
    if not pattern:
        return 0.0
    rules = [(rid, p) for rid, p in _enforced_predicates(run.policy) if rid in run.enforced]
    return sum(1 for f in pattern if any(_holds(p, f) for _, p in rules)) / len(pattern)


def first_enforcing_run(runs: Sequence[NightlyRun], pattern: Sequence[Mapping[str, Any]], *,
                        min_coverage: float = 0.5) -> NightlyRun | None:
    """The first run from which the batch enforces rules catching at least ``min_coverage`` of the pattern."""
    return next((run for run in runs if coverage(run, pattern) >= min_coverage), None)


#: dbt_project.yml ``bot_label_settle_s``: the loop mines only sessions that ended this long before its newest event.
LABEL_SETTLE_S = 120


def _settled(seen: pl.DataFrame, night: datetime) -> pl.DataFrame:
    """The rows of sessions that had ended ``LABEL_SETTLE_S`` before ``night``: what the loop would have mined had it
    run then (its ``label_settled`` is relative to the newest event it saw)."""
    if "session_id" not in seen.columns or seen.is_empty():
        return seen
    ends = seen.group_by("session_id").agg(pl.col("event_ts").max().alias("_session_end"))
    cutoff = night - timedelta(seconds=LABEL_SETTLE_S)
    return seen.join(ends, on="session_id", how="left").filter(
        pl.col("_session_end").is_null() | (pl.col("_session_end") <= cutoff)).drop("_session_end")
