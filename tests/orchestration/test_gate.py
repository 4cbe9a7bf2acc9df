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
        # a student that cannot meet a 0.001 µs budget: the latency check must fail and block publication
        result = dg.materialize(
            [propensity_model, mined_bot_rules, candidate_policy, published_policy],
            resources={"firstmile": FirstmileResource(data_dir=str(data_dir), kafka_broker_address=broker.address)},
            run_config={"ops": {"candidate_policy": {"config": {"latency_budget_us": 0.001}}}},
            raise_on_error=False)

        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"propensity_model", "mined_bot_rules", "candidate_policy"} <= materialized
        assert "published_policy" not in materialized
        assert not result.success

        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        latency = checks["student_latency_budget"]
        assert latency.passed is False
        assert latency.severity == dg.AssetCheckSeverity.ERROR
        reasons = latency.metadata["reasons"].value
        assert any("budget 0.001" in r for r in reasons), reasons
        assert latency.metadata["failed"].value == ["student_latency_budget"]

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
