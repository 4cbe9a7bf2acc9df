"""Replay a policy's decisions over archived events in DuckDB and compare candidate with champion.

Rules are translated to SQL (:func:`streaming.rules.to_sql`), the student is evaluated in SQL as the same dot
product the hot path computes, and both policies are scored on the same events against the warehouse's hindsight
labels. Consent outcomes are compared on the documents: a candidate may only be identical or stricter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from streaming import facts as fact_catalog
from streaming.consent import PURPOSES
from streaming.policy import LinearModel, compile_policy
from streaming.rules import to_sql

#: Fact -> SQL over a decided row: the fact catalog's own expressions (one definition with the hot path).
COLUMNS: dict[str, str] = dict(fact_catalog.SQL)


def rule_sql(when: Any, columns: Mapping[str, str] | None = None) -> str:
    """A rule's condition as a DuckDB boolean over decided rows, with the fact catalog's expressions and kinds."""
    return to_sql(when, COLUMNS if columns is None else columns, kinds=fact_catalog.KINDS)


def model_sql(model: LinearModel, columns: Mapping[str, str] | None = None) -> str:
    """The student's score as a DuckDB expression: the same dot product :meth:`LinearModel.score` computes."""
    columns = COLUMNS if columns is None else columns
    terms = [repr(model.intercept)]
    for name, use_log, mu, sd, w in zip(model.features, model.log1p, model.mean, model.scale, model.coef,
                                        strict=True):
        x = f"coalesce(CAST({columns.get(name, name)} AS DOUBLE), 0.0)"
        if use_log:
            x = f"ln(1 + greatest({x}, 0.0))"
        terms.append(f"({w!r}) * (({x}) - ({mu!r})) / ({sd!r})")
    return f"(1.0 / (1.0 + exp(-({' + '.join(terms)}))))"


def bot_sql(doc: Mapping[str, Any], columns: Mapping[str, str] | None = None) -> str:
    """SQL for "the hot path would quarantine this event" under ``doc`` (enforced rules and model only).

    ``columns`` maps facts to SQL expressions (default :data:`COLUMNS`; facts not in it are read as columns of the
    same name).
    """
    policy = compile_policy(dict(doc))
    columns = dict(COLUMNS if columns is None else columns)
    if policy.bot_model is not None:
        columns["bot_score"] = model_sql(policy.bot_model, columns)
    if policy.propensity is not None:
        columns["score"] = model_sql(policy.propensity, columns)
    parts = [rule_sql(rule["when"], columns) for rule in doc["rules"]
             if rule["kind"] == "bot" and rule.get("mode", "enforce") == "enforce"]
    if policy.bot_model is not None and policy.bot_model.mode == "enforce":
        parts.append(f"coalesce({columns['bot_score']} >= {policy.bot_model.threshold!r}, FALSE)")
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


def sales_sql(doc: Mapping[str, Any], columns: Mapping[str, str] | None = None) -> str:
    """SQL for "the route to ``dest.sales`` fires" under ``doc`` (its condition only; consent is compared apart)."""
    spec = doc.get("routing", {}).get("dest.sales")
    if not spec:
        return "FALSE"
    columns = dict(COLUMNS if columns is None else columns)
    policy = compile_policy(dict(doc))
    if policy.bot_model is not None:
        columns["bot_score"] = model_sql(policy.bot_model, columns)
    if policy.propensity is not None:
        columns["score"] = model_sql(policy.propensity, columns)
    return rule_sql(spec.get("when", True), columns)


def consent_not_looser(candidate: Mapping[str, Any], champion: Mapping[str, Any]) -> bool:
    cand = compile_policy(dict(candidate))
    champ = compile_policy(dict(champion))
    for region, purposes in champ.region_defaults.items():
        for purpose in PURPOSES:
            if cand.region_defaults.get(region, {}).get(purpose, False) and not purposes.get(purpose, False):
                return False
    for route in champ.routes:
        cand_route = next((r for r in cand.routes if r.destination == route.destination), None)
        if cand_route is not None and not set(route.purposes) <= set(cand_route.purposes):
            return False
    return True


def archived_events_sql(*, settled_only: bool = False) -> str:
    """The decided events the hot path let through or quarantined, as the warehouse keeps them, with their hindsight
    labels: ``stg_decided`` (dbt's one dedupe: the copy that counts, a reused id kept apart as ``<id>@<device>``)
    joined with ``training_events`` on that same id. ml reads decided events only through these models.

    ``settled_only``: only sessions whose hindsight labels can be judged (``label_settled``): a session that ended
    moments ago is not yet known to be a human, so a rule hitting it must not count as harming one."""
    return f"""
        select decided.*, t.label_bot, t.label_converted
        from stg_decided decided
        join training_events t using (event_id)
        where decided.stream in ('events', 'quarantine'){" and t.label_settled" if settled_only else ""}
    """


def has_settled_labels(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the warehouse's training set says which sessions are settled (built by this version of dbt)."""
    row = con.execute("select count(*) from information_schema.columns "
                      "where table_name = 'training_events' and column_name = 'label_settled'").fetchone()
    return bool(row and row[0])


def backtest(con: duckdb.DuckDBPyConnection, candidate: Mapping[str, Any],
             champion: Mapping[str, Any]) -> dict[str, Any]:
    """Score both policies on the same archived events. A fact whose column an older lake lacks reads as NULL
    (its rules never fire)."""
    archived = archived_events_sql(settled_only=has_settled_labels(con))
    available = {row[0] for row in con.execute(f"describe {archived}").fetchall()}
    columns = {fact: sql if not sql.isidentifier() or sql in available else "NULL" for fact, sql in COLUMNS.items()}
    cand_bot, champ_bot = bot_sql(candidate, columns), bot_sql(champion, columns)
    cand_sales, champ_sales = sales_sql(candidate, columns), sales_sql(champion, columns)
    row = con.execute(f"""
        with events as ({archived}),
        decided as (
            select label_bot = 1 as bot, label_converted = 1 as converted,
                   {champ_bot} as champ_q, {cand_bot} as cand_q,
                   {champ_sales} as champ_s, {cand_sales} as cand_s
            from events)
        select count(*), count(*) filter (where bot),
               count(*) filter (where bot and champ_q), count(*) filter (where bot and cand_q),
               count(*) filter (where not bot and champ_q), count(*) filter (where not bot and cand_q),
               count(*) filter (where champ_q <> cand_q),
               count(*) filter (where not bot and converted and champ_s and not champ_q),
               count(*) filter (where not bot and converted and cand_s and not cand_q),
               count(*) filter (where champ_s <> cand_s)
        from decided""").fetchone()
    assert row is not None
    events, bots = row[0], row[1]
    humans = max(events - bots, 1)
    result = {
        "events": events, "bots": bots,
        "champion_bots_caught": row[2], "candidate_bots_caught": row[3],
        "champion_humans_quarantined": row[4], "candidate_humans_quarantined": row[5],
        "champion_bot_recall": row[2] / max(bots, 1), "candidate_bot_recall": row[3] / max(bots, 1),
        "champion_human_fp_rate": row[4] / humans, "candidate_human_fp_rate": row[5] / humans,
        "quarantine_changes": row[6],
        "champion_converting_to_sales": row[7], "candidate_converting_to_sales": row[8],
        "routing_changes": row[9],
        "consent_identical_or_stricter": consent_not_looser(candidate, champion),
        "champion_version": champion["policy_version"], "candidate_version": candidate["policy_version"],
        "at": datetime.now(UTC).isoformat(),
    }
    return result


def record_backtest(duckdb_path: Path | str, result: Mapping[str, Any]) -> None:
    """Keep the comparison as a table in the warehouse (``ml_backtests``), one row per backtest."""
    con = duckdb.connect(str(duckdb_path))
    try:
        con.execute("create table if not exists ml_backtests (backtested_at timestamptz, candidate_version bigint, "
                    "champion_version bigint, result json)")
        con.execute("insert into ml_backtests values (?, ?, ?, ?)",
                    [result["at"], result["candidate_version"], result["champion_version"], json.dumps(result)])
    finally:
        con.close()
