"""Candidate policy: champion + distilled student + mined rules (+ shadow rules promoted), and the gate.

Mined rules start in ``shadow`` (decisions recorded in the ledger, not enforced) unless their evidence on history is
flawless (``auto``: precision ≥ 0.99 and zero known humans hit), and a later run promotes a shadow rule to
``enforce`` when the hot path's recorded shadow hits agree with the warehouse's hindsight.

The bot model (``models.bot``) follows the same path under the id :data:`BOT_MODEL_ID` (what the hot path records
in ``ledger.shadow_rules_fired``): it enters in ``shadow``; a later run enforces exactly the document that was
shadowed once its recorded hits agree with hindsight (a retrained model would be a different, unproven one).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb
import numpy as np

from ml.backtest import archived_events_sql, has_settled_labels
from streaming.policy import compile_policy, seal

StartMode = Literal["shadow", "enforce", "auto"]

#: The id under which the hot path records the bot model's hits (``streaming.pipeline.decide_device``).
BOT_MODEL_ID = "model.bot"
#: Policy fields of old champions that are control topics now (``streaming.policy.compile_policy`` rejects them).
MOVED_TO_CONTROL_TOPICS = ("identity_merges", "erased_ids")


@dataclass(frozen=True)
class GateConfig:
    latency_budget_us: float = 50.0
    max_auc_gap: float = 0.02
    max_extra_human_fp_rate: float = 0.001
    min_shadow_support: int = 10
    min_shadow_precision: float = 0.98
    #: A shadow rule is enforced only if its recorded hits touched at most this fraction of the known humans decided
    #: while it was shadowed. None by default: once enforced, a rule's hit quarantines the rest of that session
    #: (``bot.session_quarantined``), so each human it touches costs a whole session, not an event (measured on the
    #: bot-wave scenario: a rule promoted with 2 human hits of 2,072 quarantined 0.65 % of the next day's human
    #: events).
    max_shadow_human_rate: float = 0.0


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


def _same_condition(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def shadow_rule_agreement(con: duckdb.DuckDBPyConnection, rule_ids: list[str], *,
                          since_versions: dict[str, int] | None = None) -> dict[str, dict[str, float]]:
    """For each shadow rule: how many archived events the hot path recorded it on, and how many were bots.

    Reads ``ledger.shadow_rules_fired`` (the ids the hot path recorded) against the warehouse's hindsight labels;
    ``human_rate`` is the share of known humans decided in the window that the rule hit.
    ``since_versions`` restricts a rule to events decided by policy versions ≥ the given one: the bot model keeps
    the id ``model.bot`` across versions, so only hits of the document being judged may count.
    """
    out: dict[str, dict[str, float]] = {}
    archived = archived_events_sql(settled_only=has_settled_labels(con)) if rule_ids else ""
    for rule_id in rule_ids:
        since = int((since_versions or {}).get(rule_id, 0))
        row = con.execute(f"""
            with events as (
                select *, list_contains(coalesce(from_json(json_extract(ledger, '$.shadow_rules_fired'),
                                                           '["VARCHAR"]'), []::VARCHAR[]), ?) as hit
                from ({archived})
                where coalesce(policy_version, 0) >= ?)
            select count(*) filter (where hit), count(*) filter (where hit and label_bot = 1),
                   count(*) filter (where label_bot = 0)
            from events""", [rule_id, since]).fetchone()
        hits, bots, humans = (row or (0, 0, 0))
        out[rule_id] = {"hits": float(hits), "bots": float(bots), "precision": bots / hits if hits else 0.0,
                        "human_hits": float(hits - bots), "humans": float(humans),
                        "human_rate": (hits - bots) / humans if humans else 0.0}
    return out


def shadow_ids(champion: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """The ids of the champion's shadow rules (and of its bot model when in shadow), and since which policy version
    each one's recorded hits count (a mined rule's id ends in ``.v<version it entered>``)."""
    ids = [r["id"] for r in champion["rules"] if r.get("mode") == "shadow"]
    since: dict[str, int] = {}
    for rule_id in ids:
        entered = re.search(r"\.v(\d+)$", rule_id)
        if entered:
            since[rule_id] = int(entered.group(1))
    bot = (champion.get("models") or {}).get("bot")
    if bot and bot.get("mode") == "shadow":
        ids.append(BOT_MODEL_ID)
        since[BOT_MODEL_ID] = int((bot.get("source") or {}).get("since_version", champion["policy_version"]))
    return ids, since


def _agrees(agreement: dict[str, float] | None, gate: GateConfig) -> bool:
    """Enough recorded hits, almost all bots in hindsight, and few known humans touched."""
    if not agreement:
        return False
    return agreement["hits"] >= gate.min_shadow_support and agreement["precision"] >= gate.min_shadow_precision \
        and agreement.get("human_rate", 0.0) <= gate.max_shadow_human_rate


def build_candidate(champion: dict[str, Any], *, student: dict[str, Any] | None, mined: list[dict[str, Any]],
                    shadow_agreement: dict[str, dict[str, float]] | None = None, start_mode: StartMode = "auto",
                    gate: GateConfig = GateConfig(), sales_threshold: float | None = None,
                    created_at: datetime | None = None, bot_model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The next policy: the champion, shadow rules that proved themselves enforced, mined rules added (new ids
    ``<id>.v<version>``, the id the hot path will record), the propensity student and the bot model.

    ``bot_model`` (a ``models.bot`` document) enters in ``shadow`` when the champion has none, replaces the
    champion's in its mode otherwise; a shadowed champion bot model that agrees with hindsight is enforced as is.
    """
    # Merges and erasures were policy fields once; they travel on control.identity / control.erasure now (the loop's
    # published_control asset), and a worker rejects a policy that still carries them: an old champion's are dropped.
    doc = copy.deepcopy({k: v for k, v in champion.items() if k not in ("checksum", *MOVED_TO_CONTROL_TOPICS)})
    version = int(champion["policy_version"]) + 1
    doc["parent_version"] = champion["policy_version"]
    doc["policy_version"] = version
    doc["created_at"] = (created_at or datetime.now(UTC)).isoformat()
    notes = []
    for rule in doc["rules"]:
        agreement = (shadow_agreement or {}).get(rule["id"])
        if rule.get("mode") == "shadow" and _agrees(agreement, gate):
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
        # Strong evidence enters enforcing: no known human hit on all history, and none with its thresholds moved
        # toward the humans (a rule whose edge sits just past this sample's humans hits the next sample's);
        # anything less is shadowed first and judged on the traffic it then sees.
        flawless = ev.get("precision", 0) >= 0.99 and ev.get("human_hits", 1) == 0 \
            and ev.get("human_hits_at_margin", 0) == 0
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
    models = doc.setdefault("models", {})
    champion_bot = models.get("bot")
    bot_agreement = (shadow_agreement or {}).get(BOT_MODEL_ID)
    if champion_bot and champion_bot.get("mode") == "shadow" and _agrees(bot_agreement, gate):
        champion_bot["mode"] = "enforce"
        champion_bot.setdefault("source", {})["shadow_agreement"] = bot_agreement
        notes.append(f"promoted {BOT_MODEL_ID} to enforce")
    elif bot_model is not None:
        new_bot = copy.deepcopy(bot_model)
        new_bot["mode"] = "enforce" if champion_bot and champion_bot.get("mode") == "enforce" else "shadow"
        new_bot.setdefault("source", {})["since_version"] = version
        models["bot"] = new_bot
        notes.append(f"bot model {'updated' if champion_bot else 'added'} ({new_bot['mode']}, "
                     f"threshold {new_bot['threshold']})")
    doc["description"] = f"v{version}: " + ("; ".join(notes) or "no change")
    sealed = seal(doc)
    compile_policy(sealed)  # a candidate the hot path would reject never leaves this function
    return sealed


def sales_threshold_from_scores(scores: np.ndarray, *, top_fraction: float = 0.05) -> float:
    """Route the top ``top_fraction`` of in-session propensity to sales."""
    return float(np.quantile(scores, 1 - top_fraction)) if len(scores) else 1.0


def evaluate_gate(backtest: dict[str, Any], propensity: dict[str, Any] | None, *, config: GateConfig = GateConfig(),
                  bot: dict[str, Any] | None = None) -> GateResult:
    """Promote only a better candidate within budget. Every failed check is named in ``reasons``.

    ``propensity`` and ``bot`` are the training metrics of the students the candidate ships (``auc_gap``,
    ``student_us_per_event``, ``new_model``); ``student_fidelity`` and ``student_latency_budget`` cover both heads.
    """
    result = GateResult(passed=True)

    def check(name: str, ok: bool, reason: str) -> None:
        result.checks[name] = result.checks.get(name, True) and ok
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
    for head, metrics in (("propensity", propensity), ("bot", bot)):
        if metrics is None:
            continue
        gap = metrics.get("auc_gap")
        check("student_fidelity", gap is None or gap <= config.max_auc_gap,
              f"{head} student AUC is {gap:.3f} below the teacher's (max {config.max_auc_gap})"
              if gap is not None else "")
        cost = metrics.get("student_us_per_event") or 0.0
        check("student_latency_budget", cost <= config.latency_budget_us,
              f"{head} student costs {cost:.1f} µs per event (budget {config.latency_budget_us} µs)")
        improved = improved or bool(metrics.get("new_model"))
    check("better_than_champion", improved, "candidate is not better than the champion on any agreed metric")
    return result
