"""Mine bot rules the current policy missed, from the warehouse's hindsight labels.

A shallow decision tree over session-so-far features (plus the datacenter flag) is fitted on events the hot path
let through; every leaf that is almost only bots becomes one conjunctive rule in the policy's JsonLogic format,
with its evidence. A rule that would hit known humans above ``max_human_rate`` is never proposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn.tree import DecisionTreeClassifier

from ml.datasets import FEATURE_COLUMNS
from streaming.rules import compile_rule


@dataclass(frozen=True)
class MiningConfig:
    max_depth: int = 3
    min_support: int = 20
    min_precision: float = 0.98
    max_human_rate: float = 0.002
    seed: int = 7


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
    y = missed["label_bot"].cast(int).to_numpy()
    if missed.height < config.min_support or y.sum() < config.min_support or y.sum() == len(y):
        return []
    columns = _feature_names(missed)
    x = missed.select([pl.col(c).cast(pl.Float64).fill_null(0.0) for c in columns]).to_numpy()
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

    walk(0, [])

    # Evidence is measured with the final (rounded) rule over all events, like the hot path would apply it.
    all_facts = _facts(frame, columns)
    labels = frame["label_bot"].cast(int).to_numpy()
    caught_before = frame["is_bot"].fill_null(False).to_numpy()
    ts = frame["event_ts"].to_list()
    humans = max(int((labels == 0).sum()), 1)
    out = []
    for i, when in enumerate(rules):
        predicate = compile_rule(when)
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
        }
        if evidence["precision"] < config.min_precision or evidence["human_rate"] > config.max_human_rate:
            continue
        out.append({"id": f"{prefix}.{i}", "kind": "bot", "mode": "shadow",
                    "description": "mined from hindsight bot labels: " + _describe(when),
                    "when": when, "evidence": evidence})
    return out


def _describe(when: dict[str, Any]) -> str:
    parts = when.get("and", [when])
    return " and ".join(f"{c[op][0]['var']} {op} {c[op][1]}" for c in parts for op in c)
