"""A failed blocking check stops the publish step: real DuckDB, MLflow, dbt-built warehouse and broker."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from orchestration.defs.learning import candidate_policy, mined_bot_rules, propensity_model, published_policy
from orchestration.resources import FirstmileResource

pytestmark = pytest.mark.integration


def test_publish_step_refuses_to_run_when_a_blocking_check_fails(demo_data, tmp_path):
    from ml import registry
    from streaming.broker import EmbeddedBroker, create_topics
    from streaming.control import PolicyReader
    from streaming.policy import PolicyHolder
    from streaming.settings import CONTROL_POLICY, StreamingSettings
    from warehouse.layout import DataLayout

    source, _ = demo_data
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir, ignore=shutil.ignore_patterns("dagster", "state", "logs"))
    layout = DataLayout(data_dir)
    champion_before = registry.configure(layout).get_model_version_by_alias(registry.MODEL_NAME, "champion").version

    broker = EmbeddedBroker.start(log_path=tmp_path / "broker.log")
    try:
        settings = StreamingSettings(data_dir=data_dir, KAFKA_BROKER_ADDRESS=broker.address)  # type: ignore[call-arg]
        create_topics(broker.address, settings)
        # students that cannot meet a 0.001 µs budget are not shipped (each head keeps the champion's model), and
        # a candidate that may quarantine no more known humans than... fewer than none fails the backtest gate,
        # which must block publication
        result = dg.materialize(
            [propensity_model, mined_bot_rules, candidate_policy, published_policy],
            resources={"firstmile": FirstmileResource(data_dir=str(data_dir), kafka_broker_address=broker.address)},
            run_config={"ops": {"candidate_policy": {"config": {"latency_budget_us": 0.001,
                                                                "max_extra_human_fp_rate": -1.0}}}},
            raise_on_error=False)

        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"propensity_model", "mined_bot_rules", "candidate_policy"} <= materialized
        assert "published_policy" not in materialized
        assert not result.success

        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        gate = checks["backtest_gate"]
        assert gate.passed is False and gate.severity == dg.AssetCheckSeverity.ERROR
        assert "humans_not_harmed" in gate.metadata["failed"].value
        reasons = gate.metadata["reasons"].value
        # the over-budget students were kept out, said so, and did not fail their own check
        assert any("kept the champion's model" in r and "budget 0.001" in r for r in reasons), reasons
        assert checks["student_latency_budget"].passed is True

        steps = {e.step_key: e.event_type_value for e in result.all_events
                 if e.step_key and e.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED")}
        assert steps.get("published_policy") in (None, "STEP_SKIPPED")

        # nothing reached control.policy, and MLflow's champion did not move
        reader = PolicyReader(broker.address, settings.topic(CONTROL_POLICY), PolicyHolder())
        reader.start()
        reader.wait_caught_up()
        reader.stop()
        assert reader.seen == 0
        client = registry.configure(layout)
        assert client.get_model_version_by_alias(registry.MODEL_NAME, "champion").version == champion_before
    finally:
        broker.stop()
