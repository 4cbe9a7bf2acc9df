"""Mine bot rules the current policy missed, from the warehouse's hindsight labels.

Shallow decision trees over session-so-far features (plus the datacenter flag) are fitted on events the hot path
let through (sequential covering: each round looks at what earlier rounds' rules do not cover); every leaf that is
almost only bots becomes one conjunctive rule in the policy's JsonLogic format, with its evidence over all events
(and with its thresholds moved toward the humans: ``human_hits_at_margin``). A rule that would hit known humans
above ``max_human_rate`` is never proposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn.tree import DecisionTreeClassifier

from ml.datasets import FEATURE_COLUMNS
from streaming.rules import compile_rule

#: How far :func:`_relax` moves a rule's thresholds toward the humans for ``evidence.human_hits_at_margin``.
MARGIN = 0.2


@dataclass(frozen=True)
class MiningConfig:
    max_depth: int = 3
    min_support: int = 20
    min_precision: float = 0.98
    max_human_rate: float = 0.002
    seed: int = 7
    max_rounds: int = 3


def _feature_names(frame: pl.DataFrame) -> list[str]:
    names = list(FEATURE_COLUMNS)
    if "datacenter" in frame.columns:
        names.append("datacenter")
    return names


def _fact_name(column: str) -> str:
    return column[2:] if column.startswith("f_") else column


def _facts(frame: pl.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    rows = frame.select(columns).to_dicts()
    return [{_fact_name(k): (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
             for k, v in row.items()} for row in rows]


def mine_bot_rules(frame: pl.DataFrame, *, config: MiningConfig = MiningConfig(), prefix: str = "bot.mined"
                   ) -> list[dict[str, Any]]:
    """Rules (policy format, with ``evidence``) for bots that the hot path did not quarantine."""
    missed = frame.filter(~pl.col("is_bot").fill_null(False))
    columns = _feature_names(missed)
    x = missed.select([pl.col(c).cast(pl.Float64).fill_null(0.0) for c in columns]).to_numpy()
    y = missed["label_bot"].cast(int).to_numpy()
    facts_missed = _facts(missed, columns)
    remaining = np.ones(len(y), dtype=bool)
    rules: list[dict[str, Any]] = []
    # Sequential covering: a shallow tree's pure leaves become rules; the rows they cover are set aside and another
    # tree looks at what is left (a pattern the first tree's splits spent on a larger one can surface), up to
    # ``max_rounds`` trees or until a round finds nothing new.
    for _ in range(config.max_rounds):
        xs, ys = x[remaining], y[remaining]
        if len(ys) < config.min_support or ys.sum() < config.min_support or ys.sum() == len(ys):
            break
        found = _tree_rules(xs, ys, columns, config)
        found = [w for w in found if w not in rules]
        if not found:
            break
        rules.extend(found)
        for when in found:
            predicate = compile_rule(when)
            remaining &= ~np.array([bool(predicate(f)) for f in facts_missed])

    # Evidence is measured with the final (rounded) rule over all events, like the hot path would apply it.
    all_facts = _facts(frame, columns)
    labels = frame["label_bot"].cast(int).to_numpy()
    caught_before = frame["is_bot"].fill_null(False).to_numpy()
    ts = frame["event_ts"].to_list()
    humans = max(int((labels == 0).sum()), 1)
    out = []
    for i, when in enumerate(rules):
        predicate, relaxed = compile_rule(when), compile_rule(_relax(when, MARGIN))
        hits = np.array([predicate(f) for f in all_facts])
        support = int(hits.sum())
        if support < config.min_support:
            continue
        true_hits = int((hits & (labels == 1)).sum())
        human_hits = int((hits & (labels == 0)).sum())
        new_catches = int((hits & (labels == 1) & ~caught_before).sum())
        missed_total = max(int(((labels == 1) & ~caught_before).sum()), 1)
        evidence: dict[str, Any] = {
            "support": support,
            "precision": true_hits / support,
            "recall_of_missed": new_catches / missed_total,
            "human_hits": human_hits,
            "human_rate": human_hits / humans,
            "first_seen": str(min(t for t, h in zip(ts, hits, strict=True) if h)),
            # the rule with every threshold moved MARGIN toward the humans' side: a rule whose edge sits just
            # past the humans of this sample will hit the next sample's (a big spender, a fast reader)
            "human_hits_at_margin": int((np.array([bool(relaxed(f)) for f in all_facts]) & (labels == 0)).sum()),
        }
        if evidence["precision"] < config.min_precision or evidence["human_rate"] > config.max_human_rate:
            continue
        out.append({"id": f"{prefix}.{i}", "kind": "bot", "mode": "shadow",
                    "description": "mined from hindsight bot labels: " + _describe(when),
                    "when": when, "evidence": evidence})
    return out


def _relax(when: dict[str, Any], margin: float) -> dict[str, Any]:
    """``when`` with each threshold moved by ``margin`` (relative) so that the condition admits more rows."""
    out = []
    for cond in when.get("and", [when]):
        (op, (var, threshold)), = cond.items()
        scale = 1 - margin if op in (">", ">=") else 1 + margin
        moved = threshold * scale if threshold >= 0 else threshold / scale
        if threshold == 0:
            moved = -margin if op in (">", ">=") else margin
        out.append({op: [var, round(moved, 4)]})
    return {"and": out} if len(out) > 1 else out[0]


def _tree_rules(x: np.ndarray, y: np.ndarray, columns: list[str], config: MiningConfig) -> list[dict[str, Any]]:
    """The conditions of a shallow tree's leaves that are almost only bots (precision on the rows it saw)."""
    tree = DecisionTreeClassifier(max_depth=config.max_depth, min_samples_leaf=config.min_support,
                                  random_state=config.seed).fit(x, y)
    t = tree.tree_
    rules: list[dict[str, Any]] = []

    def walk(node: int, conditions: list[dict[str, Any]]) -> None:
        if t.children_left[node] == -1:
            bots, total = t.value[node][0][1] * t.n_node_samples[node], t.n_node_samples[node]
            # sklearn >= 1.4 stores fractions in value; bots/total is the leaf's precision on the training rows
            precision = float(t.value[node][0][1]) if t.value[node][0].sum() <= 1.0 + 1e-9 else bots / total
            if conditions and precision >= config.min_precision:
                rules.append({"and": list(conditions)} if len(conditions) > 1 else conditions[0])
            return
        name = _fact_name(columns[t.feature[node]])
        threshold = round(float(t.threshold[node]), 4)
        walk(t.children_left[node], [*conditions, {"<=": [{"var": name}, threshold]}])
        walk(t.children_right[node], [*conditions, {">": [{"var": name}, threshold]}])

    if len(np.unique(y)) == 2:
        walk(0, [])
    return rules


def _describe(when: dict[str, Any]) -> str:
    parts = when.get("and", [when])
    return " and ".join(f"{c[op][0]['var']} {op} {c[op][1]}" for c in parts for op in c)
