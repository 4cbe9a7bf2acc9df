"""The loop learns a new bot wave: hindsight labels by behaviour over full history, measured against the simulator's
truth per bot kind; a rule mined from them; the next day decided by the policy that enforces it.

The wave is the ``bot-wave`` scenario's ``hoarder-v2``: a new device and a rotated mobile user agent per session,
residential networks, a human rhythm, expensive products put in the cart several at a time, never bought. The
first mile cannot see "never bought" when it decides; the warehouse can, over history. Real dbt, real DuckDB, real
MLflow store on tmp_path; the hot path runs in-process (tests/ml/hot_replay.py)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ml import loop, registry
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


def _truth(events: list[simulator.SimEvent]) -> pl.DataFrame:
    return pl.DataFrame([{"event_id": e.payload.get("messageId"), "kind": e.truth.get("bot_kind") or "human"}
                         for e in events])


def _label_quality(layout: DataLayout, truth: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per true kind: sessions, and the share labelled bot by behaviour alone and with the hot path's verdict."""
    with connect(layout.duckdb_path) as con:
        con.register("truth", truth.to_arrow())
        rows = con.execute("""
            with kinds as (
                select f.session_id, any_value(t.kind) as kind
                from int_session_features as f inner join truth as t using (event_id)
                group by f.session_id
            )
            select kind, count(*), avg(label_bot_behaviour::int), avg(label_bot::int)
            from bot_labels inner join kinds using (session_id)
            where label_settled
            group by kind
        """).fetchall()
    return {kind: {"sessions": n, "behaviour": b, "label": lab} for kind, n, b, lab in rows}


def _quarantined_share(layout: DataLayout, truth: pl.DataFrame, *, policy_version: int) -> dict[str, float]:
    """Per true kind, the share of the events decided by ``policy_version`` that the hot path quarantined."""
    with connect(layout.duckdb_path) as con:
        con.register("truth", truth.to_arrow())
        rows = con.execute("""
            select t.kind, count(*), avg((d.is_bot or d.stream = 'quarantine')::int)
            from stg_decided as d inner join truth as t using (event_id)
            where d.policy_version = ?
            group by t.kind
        """, [policy_version]).fetchall()
    return {kind: share for kind, _, share in rows}


def test_hindsight_labels_see_the_wave_and_the_policy_they_teach_quarantines_it_the_next_day(tmp_path: Path):
    layout = DataLayout(tmp_path)
    registry.configure(layout)
    scenario = simulator.load_scenario("bot-wave", days=3, bot_wave_day=0, users=150)
    hot = HotPath()
    day0 = list(simulator.generate(scenario, day=0))
    hot.replay(day0, compile_policy(bootstrap_policy()), layout.lake)
    _dbt_build(layout)

    # Labels against the simulator's truth (settled sessions). The bootstrap policy catches no wave event, so
    # every wave label comes from hindsight; listed crawlers are caught by the first mile (their user agent).
    quality = _label_quality(layout, _truth(day0))
    assert quality["wave"]["sessions"] >= 50, quality
    assert quality["wave"]["behaviour"] >= 0.95, quality
    assert quality["scraper"]["behaviour"] >= 0.9, quality
    assert quality["crawler"]["label"] == 1.0, quality
    assert quality["human"]["behaviour"] <= 0.01, quality
    bots = sum(q["sessions"] * q["behaviour"] for k, q in quality.items() if k != "human")
    precision = bots / (bots + quality["human"]["sessions"] * quality["human"]["behaviour"])
    assert precision >= 0.97, quality

    # The loop, day after day, as the sensors run it: mined rules enter enforcing on strong evidence or in shadow,
    # and a shadowed rule is enforced once the hits the hot path recorded for it agree with hindsight.
    policy, enforcing = None, None
    for day in (1, 2):
        champion = loop.current_champion(layout)
        training = loop.train_propensity_run(layout)
        built = loop.build_and_backtest(layout, champion=champion, training=training, mined=loop.mine_rules(layout))
        policy = built["candidate"]
        assert loop.register_and_promote(layout, candidate=policy, training=training, gate=built["gate"],
                                         kept_heads=built["kept_heads"])["promoted"], built["gate"]["reasons"]
        enforcing = [r for r in policy["rules"] if r["id"].startswith("bot.mined") and r.get("mode") == "enforce"]
        events = list(simulator.generate(scenario, day=day))
        hot.replay(events, compile_policy(policy), layout.lake)
        _dbt_build(layout)
        if enforcing:
            break
    assert policy is not None and enforcing, [(r["id"], r.get("mode"), r.get("evidence")) for r in policy["rules"]]
    assert all(r["evidence"]["human_hits"] == 0 or "shadow_agreement" in r["evidence"] for r in enforcing)

    # The day after, under the first policy that enforces on the wave: most wave events and almost every wave
    # session quarantined, no human.
    truth = _truth(events)
    shares = _quarantined_share(layout, truth, policy_version=policy["policy_version"])
    # A wave session's first event (landing on a product page) carries nothing a human's landing does not; from
    # its second on, the session is caught and stays caught (bot.session_quarantined): 3k of 3k+1 events.
    assert shares["wave"] >= 0.8, shares
    assert shares["human"] <= 0.001, shares
    with connect(layout.duckdb_path) as con:
        con.register("truth", truth.to_arrow())
        caught, sessions = con.execute("""
            select count(distinct d.session_id) filter (where d.is_bot or d.stream = 'quarantine'),
                   count(distinct d.session_id)
            from stg_decided as d inner join truth as t using (event_id)
            where t.kind = 'wave' and d.policy_version = ?
        """, [policy["policy_version"]]).fetchone()
    assert caught / sessions >= 0.95, (caught, sessions)
