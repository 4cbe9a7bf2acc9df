"""One definition, two engines, for every fact a rule can read (streaming/facts.py).

Property: for random policies over the fact catalog (a rule on every fact, random operators and thresholds, some
enforced, some in shadow), what the backtest computes in SQL over the lake equals what the hot path decided on the
same events, event by event: every shadow rule's verdict (``ledger.shadow_rules_fired``) and the bot decision
(``is_bot`` against :func:`ml.backtest.bot_sql`). The traffic is the simulator's, with client retries (same id, same
payload, same device) and ids reused by another device mixed in. No broker: the pure stages with keyed state
(tests/ml/hot_replay.py) and the real lake writer; the real dbt builds ``stg_decided`` (the warehouse's one dedupe,
which the backtest reads) over that lake.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import duckdb
import pytest

from ml.backtest import COLUMNS, bot_sql, rule_sql
from streaming import facts, simulator
from streaming.policy import FACTS, bootstrap_policy, compile_policy, seal
from streaming.scoring import SESSION_QUARANTINED
from tests.ml.hot_replay import HotPath
from tests.warehouse.dbt_runner import build_models

#: Values a string fact is compared with (a mix of ones the traffic has and ones it never has).
STRINGS: dict[str, list[Any]] = {
    "type": ["page", "track", "identify", "consent", "alias"],
    "event_name": ["Product Viewed", "Product Added", "Order Completed", "Nothing"],
    "category": ["shoes", "books", "garden", "toys"],
    "user_agent": ["Googlebot", "Mozilla/5.0"],
    "browser": ["Chrome", "Firefox", "Safari", "Other", "Chrome Mobile"],
    "os": ["Windows", "Mac OS X", "Android", "iOS", "Linux"],
    "device_type": ["desktop", "mobile", "tablet", "bot"],
    "country": ["US", "DE", "FR", "GB", "BR"],
    "region": ["EU", "US", "UNKNOWN", "OTHER"],
    "asn": ["Amazon.com, Inc.", "Comcast Cable Communications, LLC"],
    "source_id": ["simulator", "web"],
}
THRESHOLDS = [0, 0.5, 1, 2, 3, 5, 8, 10, 20, 30, 60, 120, 300, 1000]
SEEDS = (11, 22, 33)


def random_rule(rng: random.Random, fact: facts.Fact) -> dict[str, Any]:
    var = {"var": fact.name}
    if fact.kind == "boolean":
        return rng.choice([var, {"!": var}, {"==": [var, rng.choice([True, False])]}])
    if fact.kind == "string":
        values = STRINGS.get(fact.name, ["x"])
        return rng.choice([{"==": [var, rng.choice(values)]}, {"!=": [var, rng.choice(values)]},
                           {"in": [var, rng.sample(values, k=min(2, len(values)))]}, {"!": var}, {"!!": var}])
    op = rng.choice(["<", "<=", ">", ">=", "==", "!="])
    return {op: [var, rng.choice(THRESHOLDS)]}


def random_policy(rng: random.Random, rounds: int) -> dict[str, Any]:
    """The bootstrap policy plus ``rounds`` random rules on every fact, in shadow, two of them enforced."""
    doc = bootstrap_policy()
    rules = []
    for r in range(rounds):
        for i, fact in enumerate(sorted(facts.CATALOG, key=lambda f: f.name)):
            when = random_rule(rng, fact)
            if rng.random() < 0.3:  # compound rules: the and/or translation too
                other = rng.choice(facts.CATALOG)
                when = {rng.choice(["and", "or"]): [when, random_rule(rng, other)]}
            rules.append({"id": f"prop.{r}.{i}.{fact.name}", "kind": "bot", "mode": "shadow", "when": when})
    # Two of them enforced (they decide: quarantine), narrowed to listed crawlers so most events still reach
    # stage 2; the rest are only recorded.
    for rule in rng.sample(rules, k=2):
        rule["mode"] = "enforce"
        rule["when"] = {"and": [rule["when"], {"var": "ua_crawler"}]}
    doc["rules"] = doc["rules"] + rules
    doc["policy_version"] = 2
    return seal(doc)


def traffic(seed: int) -> list[simulator.SimEvent]:
    """One simulated day, with ~10 % of events re-sent (client retries), ~2 % of ids reused by another device, and a
    third of identified users' later events sent without their userId (the device's link identifies them)."""
    events = list(simulator.generate(simulator.load_scenario("default", users=25, days=1), day=0))
    rng = random.Random(seed)
    out: list[simulator.SimEvent] = []
    for event in events:
        if event.payload.get("userId") and event.payload.get("type") != "identify" and rng.random() < 0.33:
            event = dataclasses.replace(event, payload={k: v for k, v in event.payload.items() if k != "userId"})
        out.append(event)
        if rng.random() < 0.10:
            out.append(event)
        if rng.random() < 0.02:
            payload = {**event.payload, "anonymousId": f"robot-{rng.randrange(5)}"}
            payload.pop("userId", None)
            out.append(dataclasses.replace(event, payload=payload))
    return out


def test_every_catalog_fact_has_one_sql_expression_and_the_policy_accepts_exactly_the_catalog():
    assert FACTS == facts.NAMES == set(COLUMNS)
    derived = {f.name for f in facts.CATALOG if f.python is not None}
    assert derived == facts.NAMES - {"bot_score", "score"}




@pytest.fixture(scope="module", params=SEEDS)
def decided(request, tmp_path_factory):
    """A random policy replayed over the traffic by the hot path, the lake it wrote, and dbt's ``stg_decided``."""
    seed = request.param
    workdir = tmp_path_factory.mktemp(f"facts-{seed}")
    doc = random_policy(random.Random(seed), rounds=3)
    HotPath().replay(traffic(seed), compile_policy(doc), workdir / "lake")
    build_models("stg_decided", lake=workdir / "lake", workdir=workdir)
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    yield seed, doc, con
    con.close()


def test_every_column_a_fact_reads_is_a_column_of_stg_decided(decided):
    _, _, con = decided
    columns = {row[0] for row in con.execute("describe stg_decided").fetchall()}
    read = {f.sql for f in facts.CATALOG if f.sql.isidentifier()}
    assert read and read <= columns, read - columns
    assert all("ledger" in f.sql for f in facts.CATALOG if not f.sql.isidentifier())


def test_rules_on_every_fact_decide_the_same_in_the_hot_path_and_in_the_backtests_sql(decided):
    seed, doc, con = decided
    shadow = [r for r in doc["rules"] if r.get("mode") == "shadow"]
    verdicts = ", ".join(f"{rule_sql(r['when'])} as \"sql:{r['id']}\"" for r in shadow)
    rows = con.execute(f"select raw_offset, ledger, is_bot, {bot_sql(doc)} as sql_bot, {verdicts}, "
                       f"bot_reasons from stg_decided where stream in ('events', 'quarantine')").fetchall()
    columns = [d[0] for d in con.description]
    assert len(rows) > 500
    mismatches: list[tuple[Any, ...]] = []
    fired: dict[str, int] = {r["id"]: 0 for r in shadow}
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        recorded = set(json.loads(record["ledger"]).get("shadow_rules_fired", []))
        # the session verdict (the rest of a caught session) is the hot path's state, not a rule: the SQL twin
        # judges rules, so those events are compared on the rules alone (none of which held on them)
        sticky = json.loads(record["bot_reasons"] or "[]") == [SESSION_QUARANTINED]
        if bool(record["is_bot"]) != bool(record["sql_bot"]) and not (sticky and not record["sql_bot"]):
            mismatches.append((record["raw_offset"], "is_bot", record["is_bot"], record["sql_bot"]))
        for rule in shadow:
            in_sql = bool(record[f"sql:{rule['id']}"])
            fired[rule["id"]] += in_sql
            if (rule["id"] in recorded) != in_sql:
                mismatches.append((record["raw_offset"], rule["id"], rule["when"], rule["id"] in recorded, in_sql))
    quarantined = sum(1 for r in rows if r[2])
    split = sum(1 for n in fired.values() if 0 < n < len(rows))
    print(f"\nseed {seed}: {len(rows)} decided events in stg_decided ({quarantined} quarantined), {len(shadow)} "
          f"shadow rules over {len(facts.CATALOG)} facts, {split} of them true on some events and false on others; "
          f"mismatches {len(mismatches)}")
    assert not mismatches, mismatches[:10]
    assert split >= len(shadow) // 3, fired
