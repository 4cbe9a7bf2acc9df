"""Dagster definitions: ``dagster dev -m orchestration.definitions`` (or ``firstmile ui``)."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.learning import candidate_policy, mined_bot_rules, propensity_model, published_policy
from orchestration.defs.streaming import STREAMING_SPECS
from orchestration.defs.warehouse import build_dbt_assets, dbt_resource
from orchestration.resources import default_resource

LEARNING_ASSETS = [propensity_model, mined_bot_rules, candidate_policy, published_policy]


def build_definitions() -> dg.Definitions:
    warehouse_models = build_dbt_assets()
    loop_job = dg.define_asset_job("loop", selection=dg.AssetSelection.all() - dg.AssetSelection.assets(
        *[s.key for s in STREAMING_SPECS]), description="Warehouse build → learning → gated publication")
    return dg.Definitions(
        assets=[*STREAMING_SPECS, warehouse_models, *LEARNING_ASSETS],
        jobs=[loop_job],
        schedules=[dg.ScheduleDefinition(name="daily_retrain", job=loop_job, cron_schedule="0 3 * * *")],
        resources={"dbt": dbt_resource(), "firstmile": default_resource()},
    )


defs = build_definitions()
