"""Candidate policy: champion + distilled student + mined rules (+ shadow rules promoted), and the gate.

Mined rules start in ``shadow`` (decisions recorded in the ledger, not enforced) unless their evidence on history is
flawless (``auto``: precision ≥ 0.99 and zero known humans hit), and a later run promotes a shadow rule to
``enforce`` when the hot path's recorded shadow hits agree with the warehouse's hindsight.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np

from ml.backtest import archived_events_sql
from streaming.policy import compile_policy, seal

StartMode = Literal["shadow", "enforce", "auto"]


@dataclass(frozen=True)
class GateConfig:
    latency_budget_us: float = 50.0
    max_auc_gap: float = 0.02
    max_extra_human_fp_rate: float = 0.001
    min_shadow_support: int = 10
    min_shadow_precision: float = 0.98


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


def _same_condition(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def shadow_rule_agreement(con: duckdb.DuckDBPyConnection, lake: Path | str, rule_ids: list[str]
                          ) -> dict[str, dict[str, float]]:
    """For each shadow rule: how often its recorded hot-path hits were bots in hindsight."""
    out: dict[str, dict[str, float]] = {}
    if not rule_ids:
        return out
    for rule_id in rule_ids:
        row = con.execute(f"""
            with events as ({archived_events_sql(lake)})
            select count(*), count(*) filter (where label_bot = 1)
            from events
            where list_contains(coalesce(from_json(json_extract(ledger, '$.shadow_rules_fired'), '["VARCHAR"]'),
                                         []::VARCHAR[]), ?)""", [rule_id]).fetchone()
        hits, bots = (row or (0, 0))
        out[rule_id] = {"hits": float(hits), "precision": bots / hits if hits else 0.0}
    return out


def build_candidate(champion: dict[str, Any], *, student: dict[str, Any] | None, mined: list[dict[str, Any]],
                    shadow_agreement: dict[str, dict[str, float]] | None = None, start_mode: StartMode = "auto",
                    gate: GateConfig = GateConfig(), sales_threshold: float | None = None,
                    created_at: datetime | None = None) -> dict[str, Any]:
    doc = copy.deepcopy({k: v for k, v in champion.items() if k != "checksum"})
    version = int(champion["policy_version"]) + 1
    doc["parent_version"] = champion["policy_version"]
    doc["policy_version"] = version
    doc["created_at"] = (created_at or datetime.now(UTC)).isoformat()
    notes = []
    for rule in doc["rules"]:
        agreement = (shadow_agreement or {}).get(rule["id"])
        if rule.get("mode") == "shadow" and agreement and agreement["hits"] >= gate.min_shadow_support \
                and agreement["precision"] >= gate.min_shadow_precision:
            rule["mode"] = "enforce"
            rule.setdefault("evidence", {})["shadow_agreement"] = agreement
            notes.append(f"promoted {rule['id']} to enforce")
    existing = [r["when"] for r in doc["rules"]]
    for rule in mined:
        if any(_same_condition(rule["when"], w) for w in existing):
            continue
        rule = copy.deepcopy(rule)
        rule["id"] = f"{rule['id']}.v{version}"
        ev = rule.get("evidence", {})
        flawless = ev.get("precision", 0) >= 0.99 and ev.get("human_hits", 1) == 0
        rule["mode"] = "enforce" if start_mode == "enforce" or (start_mode == "auto" and flawless) else "shadow"
        doc["rules"].append(rule)
        notes.append(f"added {rule['id']} ({rule['mode']})")
    if student is not None:
        doc.setdefault("models", {})["propensity"] = student
        if sales_threshold is not None:
            sales = doc["routing"].setdefault("dest.sales", {"purposes": ["sales"], "when": False})
            when = sales.get("when")
            conditions = when["or"] if isinstance(when, dict) and "or" in when else \
                ([when] if isinstance(when, dict) else [])
            # One score condition: the newest threshold replaces the champion's.
            conditions = [c for c in conditions if not (">=" in c and c[">="][0] == {"var": "score"})]
            sales["when"] = {"or": [*conditions, {">=": [{"var": "score"}, round(sales_threshold, 4)]}]}
        notes.append("propensity student updated")
    doc["description"] = f"v{version}: " + ("; ".join(notes) or "no change")
    sealed = seal(doc)
    compile_policy(sealed)  # a candidate the hot path would reject never leaves this function
    return sealed


def sales_threshold_from_scores(scores: np.ndarray, *, top_fraction: float = 0.05) -> float:
    """Route the top ``top_fraction`` of in-session propensity to sales."""
    return float(np.quantile(scores, 1 - top_fraction)) if len(scores) else 1.0


def evaluate_gate(backtest: dict[str, Any], propensity: dict[str, Any] | None, *, config: GateConfig = GateConfig()
                  ) -> GateResult:
    """Promote only a better candidate within budget. Every failed check is named in ``reasons``."""
    result = GateResult(passed=True)

    def check(name: str, ok: bool, reason: str) -> None:
        result.checks[name] = ok
        if not ok:
            result.passed = False
            result.reasons.append(reason)

    check("consent_identical_or_stricter", bool(backtest["consent_identical_or_stricter"]),
          "candidate grants a purpose or a route the champion does not")
    check("bots_not_fewer", backtest["candidate_bots_caught"] >= backtest["champion_bots_caught"],
          f"candidate catches fewer bots ({backtest['candidate_bots_caught']} < {backtest['champion_bots_caught']})")
    check("humans_not_harmed",
          backtest["candidate_human_fp_rate"] <= backtest["champion_human_fp_rate"] + config.max_extra_human_fp_rate,
          f"candidate quarantines known humans at {backtest['candidate_human_fp_rate']:.4f} "
          f"(champion {backtest['champion_human_fp_rate']:.4f})")
    improved = backtest["candidate_bots_caught"] > backtest["champion_bots_caught"] or (
        backtest["candidate_converting_to_sales"] > backtest["champion_converting_to_sales"])
    if propensity is not None:
        gap = propensity.get("auc_gap")
        check("student_fidelity", gap is None or gap <= config.max_auc_gap,
              f"student AUC is {gap:.3f} below the teacher's (max {config.max_auc_gap})" if gap is not None else "")
        cost = propensity.get("student_us_per_event") or 0.0
        check("student_latency_budget", cost <= config.latency_budget_us,
              f"student costs {cost:.1f} µs per event (budget {config.latency_budget_us} µs)")
        improved = improved or bool(propensity.get("new_model"))
    check("better_than_champion", improved, "candidate is not better than the champion on any agreed metric")
    return result
