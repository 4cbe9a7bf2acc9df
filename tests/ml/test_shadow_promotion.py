"""Shadow → enforce on real decisions: the hot path records shadow hits under a candidate, the warehouse labels
them in hindsight, and the next run enforces what agreed. Real dbt, real DuckDB, real MLflow store on tmp_path."""

from __future__ import annotations

import json

import pytest

from ml import loop, registry
from ml.candidate import BOT_MODEL_ID
from streaming import simulator
from streaming.policy import bootstrap_policy, compile_policy
from tests.ml.hot_replay import HotPath
from tests.warehouse.dbt_runner import run_dbt
from warehouse.duck import connect
from warehouse.layout import DataLayout

pytestmark = pytest.mark.integration


def _dbt_build(layout: DataLayout) -> None:
    result = run_dbt(["build"], lake=layout.lake, workdir=layout.root)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_shadow_rules_recorded_by_the_hot_path_are_enforced_once_they_agree_and_a_bot_model_touching_humans_is_not(
        tmp_path):
    layout = DataLayout(tmp_path)
    registry.configure(layout)
    scenario = simulator.load_scenario("default", days=2)
    hot = HotPath()
    hot.replay(simulator.generate(scenario, day=0), compile_policy(bootstrap_policy()), layout.lake)
    _dbt_build(layout)

    champion = loop.current_champion(layout)
    training = loop.train_propensity_run(layout)
    mined = loop.mine_rules(layout)
    assert mined, "day 0 holds stealth bots the bootstrap policy misses"
    first = loop.build_and_backtest(layout, champion=champion, training=training, mined=mined, start_mode="shadow")
    v2 = first["candidate"]
    shadowed = [r["id"] for r in v2["rules"] if r.get("mode") == "shadow"]
    assert shadowed and all(rule_id.endswith(".v2") for rule_id in shadowed)
    assert v2["models"]["bot"]["mode"] == "shadow"
    registered = loop.register_and_promote(layout, candidate=v2, training=training, gate=first["gate"])
    assert registered["promoted"], first["gate"]["reasons"]

    # Day 1 decided by v2: shadow rules and the bot model only record what they would have done.
    hot.replay(simulator.generate(scenario, day=1), compile_policy(v2), layout.lake)
    with connect(layout.duckdb_path) as con:  # (previous warehouse; only to read the new lake's ledger ids)
        recorded = {rid for (ledger,) in con.execute(
            f"select ledger from read_parquet('{layout.lake}/quarantine/**/*.parquet', union_by_name=true) "
            f"union all select ledger from read_parquet('{layout.lake}/events/**/*.parquet', union_by_name=true)"
        ).fetchall() for rid in json.loads(ledger).get("shadow_rules_fired", [])}
    assert set(shadowed) & recorded, f"ledger ids {sorted(recorded)} do not match the shadow rule ids {shadowed}"
    assert BOT_MODEL_ID in recorded
    _dbt_build(layout)

    champion = loop.current_champion(layout)
    assert champion["policy_version"] == 2
    training = loop.train_propensity_run(layout)
    second = loop.build_and_backtest(layout, champion=champion, training=training, mined=loop.mine_rules(layout))
    agreement = second["shadow_agreement"]
    v3 = second["candidate"]
    modes = {r["id"]: r.get("mode") for r in v3["rules"]}
    promoted = [rid for rid in shadowed if modes[rid] == "enforce"]
    assert promoted, (agreement, modes)
    for rid in promoted:
        assert agreement[rid]["hits"] >= 10 and agreement[rid]["precision"] >= 0.98
        assert agreement[rid]["human_rate"] <= 0.002
    bot = agreement[BOT_MODEL_ID]
    # The bot model's recorded hits on the seeded day-1 traffic touch known humans above the bound (19 of ~2,060,
    # 0.9 % > 0.2 %), so it is not enforced: the retrained model replaces it, still in shadow, and its evidence
    # restarts at v3. (Enforcement of an agreeing model: test_backtest_gate's
    # test_a_shadowed_bot_model_that_touched_humans_stays_in_shadow_and_restarts_its_evidence.)
    assert bot["hits"] >= 10 and bot["human_rate"] > 0.002, bot
    assert v3["models"]["bot"]["mode"] == "shadow", v3["models"]["bot"]
    assert v3["models"]["bot"]["source"]["since_version"] == 3
    assert v3["models"]["bot"]["coef"] != v2["models"]["bot"]["coef"]
    assert second["backtest"]["candidate_bots_caught"] > second["backtest"]["champion_bots_caught"]
    assert second["gate"]["passed"], second["gate"]["reasons"]
