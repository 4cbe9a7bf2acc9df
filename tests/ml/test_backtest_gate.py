"""Backtest on a tiny real lake + DuckDB file, the gate, mining's human bound, and promotion/rollback in a real
MLflow store on tmp_path."""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pytest

from ml import loop, registry
from ml.backtest import backtest
from ml.bot_rules import MiningConfig, mine_bot_rules
from ml.candidate import BOT_MODEL_ID, GateConfig, build_candidate, evaluate_gate, shadow_ids, shadow_rule_agreement
from streaming.bots import is_datacenter
from streaming.policy import bootstrap_policy, compile_policy, seal
from tests.ml.conftest import synthetic_events, write_lake, write_warehouse
from warehouse.duck import connect

DATACENTER_RULE = {"id": "bot.datacenter", "kind": "bot", "mode": "enforce",
                   "when": {"==": [{"var": "datacenter"}, True]}}
FAST_RULE = {"id": "bot.fast", "kind": "bot", "mode": "enforce",
             "when": {"and": [{">": [{"var": "events_per_minute"}, 25]}, {"<": [{"var": "interval_std_s"}, 0.2]}]}}


def _with_rules(doc, *rules, version=None):
    out = copy.deepcopy({k: v for k, v in doc.items() if k != "checksum"})
    out["rules"] = [*out["rules"], *rules]
    out["policy_version"] = version or out["policy_version"] + 1
    return seal(out)


@pytest.fixture
def lake_with_office_humans(layout):
    """Bots from datacenters; 5% of humans browse from a datacenter network too."""
    frame = synthetic_events(400, seed=5, human_datacenter_share=0.05)
    write_warehouse(layout, frame)
    write_lake(layout, frame)
    return frame


def test_backtest_numbers_equal_an_independent_python_replay(layout, lake_with_office_humans):
    frame = lake_with_office_humans
    champion = bootstrap_policy()
    candidate = _with_rules(champion, FAST_RULE)
    with connect(layout.duckdb_path) as con:
        result = backtest(con, candidate, champion)

    rules = [r for r in compile_policy(candidate).bot_rules if r.mode == "enforce"]
    champ_rules = [r for r in compile_policy(champion).bot_rules if r.mode == "enforce"]
    bots = frame["label_bot"].to_numpy() == 1
    cand_q, champ_q = [], []
    for row in frame.iter_rows(named=True):
        facts = {k[2:]: v for k, v in row.items() if k.startswith("f_")}
        facts.update(datacenter=is_datacenter(row["asn"]), ua_crawler=None, identified=row["user_id"] is not None)
        cand_q.append(any(r.predicate(facts) for r in rules))
        champ_q.append(any(r.predicate(facts) for r in champ_rules))
    cand_q, champ_q = np.array(cand_q), np.array(champ_q)
    assert result["events"] == frame.height and result["bots"] == int(bots.sum())
    assert result["candidate_bots_caught"] == int((cand_q & bots).sum()) > 0
    assert result["champion_bots_caught"] == int((champ_q & bots).sum())
    assert result["candidate_humans_quarantined"] == int((cand_q & ~bots).sum())
    assert result["quarantine_changes"] == int((cand_q != champ_q).sum())


def test_mining_never_proposes_a_rule_that_hits_known_humans_above_the_configured_rate(lake_with_office_humans):
    frame = lake_with_office_humans.with_columns(pl.col("asn").map_elements(is_datacenter, return_dtype=pl.Boolean)
                                                 .alias("datacenter"))
    config = MiningConfig(max_depth=2, min_support=10, min_precision=0.9, max_human_rate=0.002)
    rules = mine_bot_rules(frame, config=config)
    humans = frame.filter(pl.col("label_bot") == 0)
    for rule in rules:
        predicate = compile_policy(_with_rules(bootstrap_policy(), {**rule, "mode": "enforce"})).bot_rules[-1].predicate
        hits = sum(predicate({k[2:] if k.startswith("f_") else k: v for k, v in row.items()})
                   for row in humans.iter_rows(named=True))
        assert hits / humans.height <= config.max_human_rate
        assert rule["evidence"]["human_rate"] <= config.max_human_rate
    # The tempting signature (datacenter alone: every bot, and 5% of humans) is not among them.
    assert all(r["when"] != {">": [{"var": "datacenter"}, 0.5]} for r in rules)


def test_gate_refuses_a_candidate_whose_rule_would_quarantine_known_humans(layout, lake_with_office_humans):
    champion = bootstrap_policy()
    candidate = _with_rules(champion, DATACENTER_RULE)
    with connect(layout.duckdb_path) as con:
        result = backtest(con, candidate, champion)
    assert result["candidate_bots_caught"] > result["champion_bots_caught"]  # it does catch more bots...
    gate = evaluate_gate(result, None)
    assert not gate.passed and gate.checks["humans_not_harmed"] is False  # ...but harms humans
    assert any("quarantines known humans" in reason for reason in gate.reasons)


def test_a_worse_candidate_is_not_promoted_and_the_champion_stays(mlflow_layout, lake_with_office_humans, logged_run):
    layout = mlflow_layout
    better = _with_rules(bootstrap_policy(), FAST_RULE)
    training = logged_run()
    with connect(layout.duckdb_path) as con:
        first = backtest(con, better, bootstrap_policy())
    gate = evaluate_gate(first, None)
    assert gate.passed, gate.reasons
    loop.register_and_promote(layout, candidate=better, training=training, gate={**gate.__dict__})
    # The next candidate drops the rule that made the champion better.
    worse = _with_rules(bootstrap_policy(), version=3)
    with connect(layout.duckdb_path) as con:
        second = backtest(con, worse, better)
    gate = evaluate_gate(second, {"auc_gap": 0.05, "student_us_per_event": 3.0})
    assert not gate.passed
    assert gate.checks["bots_not_fewer"] is False and gate.checks["student_fidelity"] is False
    outcome = loop.register_and_promote(layout, candidate=worse, training=logged_run(), gate={**gate.__dict__})
    assert outcome["promoted"] is False
    client = registry.configure(layout)
    assert registry.champion_policy(client)["policy_version"] == better["policy_version"]
    rejected = client.get_model_version(registry.MODEL_NAME, outcome["model_version"])
    assert rejected.tags["validation_status"] == "rejected_by_gate"
    assert rejected.tags["policy_version"] == "3"


def test_rollback_after_two_promotions_restores_the_previous_policy(mlflow_layout, logged_run):
    layout = mlflow_layout
    v2 = _with_rules(bootstrap_policy(), FAST_RULE)
    v3 = _with_rules(v2, DATACENTER_RULE)
    passed = {"passed": True, "reasons": [], "checks": {}}
    training = logged_run()
    first = loop.register_and_promote(layout, candidate=v2, training=training, gate=passed)
    # Same training run for both versions: each keeps its own document.
    second = loop.register_and_promote(layout, candidate=v3, training=training, gate=passed)
    client = registry.configure(layout)
    assert second["previous"] == first["model_version"]
    assert registry.champion_policy(client) == v3
    version, doc = registry.rollback(client)
    assert version == first["model_version"] and doc == v2
    assert registry.champion_policy(client) == v2
    assert loop.current_champion(layout) == v2
    old = client.get_model_version(registry.MODEL_NAME, second["model_version"])
    assert old.tags["validation_status"] == "rolled_back"
    assert str(client.get_model_version_by_alias(registry.MODEL_NAME, "previous").version) == second["model_version"]


def test_registered_version_carries_status_lineage_and_its_policy_document(mlflow_layout, logged_run):
    layout = mlflow_layout
    v2 = _with_rules(bootstrap_policy(), FAST_RULE)
    training = {**logged_run(), "bot": {"run_id": "bot-run-1", "description": "bot head"}}
    outcome = loop.register_and_promote(layout, candidate=v2, training=training,
                                        gate={"passed": True, "reasons": [], "checks": {}})
    client = registry.configure(layout)
    version = client.get_model_version(registry.MODEL_NAME, outcome["model_version"])
    assert version.tags["validation_status"] == "champion"
    assert version.tags["distilled_from"] == training["run_id"]
    assert version.tags["bot_distilled_from"] == "bot-run-1"
    assert version.tags["policy_version"] == "2" and version.tags["policy_checksum"] == v2["checksum"]
    assert "bot head" in version.description and v2["description"] in version.description
    assert registry.policy_of_version(client, version) == v2
    assert client.get_registered_model(registry.MODEL_NAME).description


def test_mined_rules_and_the_bot_model_enter_in_shadow_and_are_enforced_when_recorded_hits_agree(
        layout, lake_with_office_humans):
    frame = lake_with_office_humans
    bot_doc = {"kind": "logistic", "features": ["events_per_minute"], "transform": ["none"], "mean": [0.0],
               "scale": [1.0], "coef": [1.0], "intercept": -25.0, "threshold": 0.5, "mode": "shadow"}
    mined = [{**FAST_RULE, "id": "bot.mined.0", "evidence": {"precision": 0.97, "human_hits": 1}}]
    v2 = build_candidate(bootstrap_policy(), student=None, mined=mined, bot_model=bot_doc)
    assert [r["mode"] for r in v2["rules"] if r["id"] == "bot.mined.0.v2"] == ["shadow"]
    assert v2["models"]["bot"]["mode"] == "shadow" and v2["models"]["bot"]["source"]["since_version"] == 2
    ids, since = shadow_ids(v2)
    assert ids == ["bot.mined.0.v2", BOT_MODEL_ID] and since == {"bot.mined.0.v2": 2, BOT_MODEL_ID: 2}

    # What the hot path would have recorded under v2, in the ledger of a fresh lake decided by v2.
    compiled = compile_policy(v2)
    rule = next(r for r in compiled.bot_rules if r.id == "bot.mined.0.v2")
    ledger = {}
    for row in frame.iter_rows(named=True):
        facts = {k[2:]: v for k, v in row.items() if k.startswith("f_")}
        fired = [rule.id] if rule.predicate(facts) else []
        if compiled.bot_model.score(facts) >= 0.5:
            fired.append(BOT_MODEL_ID)
        ledger[row["event_id"]] = {"shadow_rules_fired": fired}
    layout.lake.joinpath("events").exists() and __import__("shutil").rmtree(layout.lake)
    write_lake(layout, frame, ledger=ledger, policy_version=2)
    with connect(layout.duckdb_path) as con:
        agreement = shadow_rule_agreement(con, ids, since_versions=since)
    bots = frame["label_bot"].to_numpy() == 1
    expected_hits = sum(rule.id in ledger[e]["shadow_rules_fired"] for e in frame["event_id"])
    assert agreement["bot.mined.0.v2"]["hits"] == expected_hits > 0
    assert agreement["bot.mined.0.v2"]["humans"] == int((~bots).sum())
    v3 = build_candidate(v2, student=None, mined=[], shadow_agreement=agreement)
    modes = {r["id"]: r["mode"] for r in v3["rules"]}
    bound = GateConfig().max_shadow_human_rate
    assert modes["bot.mined.0.v2"] == ("enforce" if agreement["bot.mined.0.v2"]["precision"] >= 0.98
                                       and agreement["bot.mined.0.v2"]["human_rate"] <= bound else "shadow")
    assert modes["bot.mined.0.v2"] == "enforce"
    # Hits recorded before the rule existed (older versions) never count.
    with connect(layout.duckdb_path) as con:
        later = shadow_rule_agreement(con, ids, since_versions={k: 3 for k in ids})
    assert all(a["hits"] == 0 for a in later.values())


def test_a_shadowed_bot_model_that_touched_humans_stays_in_shadow_and_restarts_its_evidence():
    """A shadowed bot model is enforced only on agreeing evidence; one whose recorded hits touched known humans
    above the bound is replaced by the retrained one, still in shadow, with its evidence counted from the new
    version (the old document's hits never vouch for the new one)."""
    shadowed = {"kind": "logistic", "features": ["events_per_minute"], "transform": ["none"], "mean": [0.0],
                "scale": [1.0], "coef": [1.0], "intercept": -25.0, "threshold": 0.5, "mode": "shadow",
                "source": {"since_version": 2}}
    retrained = {**shadowed, "coef": [2.0], "source": {}}
    v2 = build_candidate(bootstrap_policy(), student=None, mined=[], bot_model=shadowed)
    touched_humans = {BOT_MODEL_ID: {"hits": 1000.0, "bots": 990.0, "precision": 0.99, "human_hits": 10.0,
                                     "humans": 1000.0, "human_rate": 0.01}}
    v3 = build_candidate(v2, student=None, mined=[], shadow_agreement=touched_humans, bot_model=retrained)
    assert v3["models"]["bot"]["mode"] == "shadow"
    assert v3["models"]["bot"]["coef"] == [2.0]
    assert v3["models"]["bot"]["source"]["since_version"] == v3["policy_version"] == 3
    agreeing = {BOT_MODEL_ID: {**touched_humans[BOT_MODEL_ID], "bots": 1000.0, "precision": 1.0, "human_hits": 0.0,
                               "human_rate": 0.0}}
    v3_ok = build_candidate(v2, student=None, mined=[], shadow_agreement=agreeing, bot_model=retrained)
    assert v3_ok["models"]["bot"]["mode"] == "enforce" and v3_ok["models"]["bot"]["coef"] == [1.0]


def test_a_candidate_never_carries_an_old_champions_merges_or_erased_ids():
    """They were policy fields once; now they are control topics and a worker rejects a policy carrying them."""
    old = {**bootstrap_policy(), "identity_merges": {"p-2": "p-1"}, "erased_ids": ["u-7"]}
    candidate = build_candidate(old, student=None, mined=[])
    assert "identity_merges" not in candidate and "erased_ids" not in candidate
    compile_policy(candidate)  # a worker would accept it


def test_sessions_not_yet_settled_are_not_counted_as_known_humans_a_rule_harms(layout):
    # A wave the labels have not judged yet (its sessions ended moments ago: "never bought" cannot be told) looks
    # like humans; a candidate rule catching it must not be charged with quarantining humans.
    frame = synthetic_events(400, seed=5)
    unsettled = (frame["label_bot"] == 1) & (pl.int_range(frame.height) % 2 == 0)
    frame = frame.with_columns(
        pl.when(unsettled).then(0).otherwise(pl.col("label_bot")).cast(pl.Int8).alias("label_bot"),
        (~unsettled).alias("label_settled"))
    write_warehouse(layout, frame)
    write_lake(layout, frame)
    champion = bootstrap_policy()
    candidate = _with_rules(champion, FAST_RULE)
    with connect(layout.duckdb_path) as con:
        settled = backtest(con, candidate, champion)
    write_warehouse(layout, frame.drop("label_settled"))  # a warehouse built before settled labels existed
    with connect(layout.duckdb_path) as con:
        everything = backtest(con, candidate, champion)
    n_unsettled = int(frame["label_settled"].not_().sum())
    assert settled["events"] == frame.height - n_unsettled < everything["events"]
    assert everything["candidate_humans_quarantined"] > settled["candidate_humans_quarantined"], (everything,
                                                                                                   settled)
