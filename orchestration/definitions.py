"""Dagster definitions: ``dagster dev -m orchestration.definitions`` (or ``firstmile ui`` / ``firstmile up``)."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.control import published_control
from orchestration.defs.jobs import latency_impact_job, loop_job
from orchestration.defs.learning import candidate_policy, mined_bot_rules, propensity_model, published_policy
from orchestration.defs.regulations import erasure_job, regulations_sensor
from orchestration.defs.reports import latency_impact_report
from orchestration.defs.sensors import SENSORS, daily_retrain, landing_zone_day, landing_zone_day_job
from orchestration.defs.streaming import STREAMING_SPECS
from orchestration.defs.warehouse import build_dbt_assets, dbt_resource
from orchestration.resources import FirstmileResource, default_resource
from orchestration.settings import OrchestrationSettings, load_orchestration_settings

LEARNING_ASSETS = [propensity_model, mined_bot_rules, candidate_policy, published_policy]
CONTROL_ASSETS = [published_control]


def build_definitions(*, settings: OrchestrationSettings | None = None,
                      firstmile: FirstmileResource | None = None) -> dg.Definitions:
    """The code location. ``settings`` (default: read from the environment) prepare the dbt manifest;
    ``firstmile`` (default: :func:`default_resource`, each field a ``dg.EnvVar`` when set) is what runs use.
    The demo passes both, for its own data directory and broker, instead of editing ``os.environ``."""
    settings = settings or load_orchestration_settings()
    return dg.Definitions(
        assets=[*STREAMING_SPECS, landing_zone_day, build_dbt_assets(settings), *LEARNING_ASSETS, *CONTROL_ASSETS,
                latency_impact_report],
        jobs=[loop_job, landing_zone_day_job, latency_impact_job, erasure_job],
        schedules=[daily_retrain],
        sensors=[*SENSORS, regulations_sensor],
        resources={"dbt": dbt_resource(), "firstmile": firstmile or default_resource()},
    )


# The code location's entry point (`dagster dev -m orchestration.definitions`): Dagster imports it for `defs`.
defs = build_definitions()
