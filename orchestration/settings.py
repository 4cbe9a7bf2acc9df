"""The orchestration tier's settings (Dagster, the learning loop, MLflow, the ``firstmile`` commands that start them).

One frozen object per process, read at its entry point (a CLI command, the Dagster code location, the run's
resource) and passed down; library code takes the values it needs as arguments. Every variable is listed in
``.env.example`` (tests/deploy/test_env_example.py holds that list to the fields).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from warehouse.settings import WarehouseSettings

Environment = Literal["local", "ci", "prod"]


class OrchestrationSettings(WarehouseSettings):
    """The warehouse settings (data directory, lake, S3) plus the orchestration tier's own.

    The gate's thresholds are not here: they are run config of ``candidate_policy`` (the launchpad shows them).
    """

    model_config = SettingsConfigDict(env_prefix="FIRSTMILE_", frozen=True, extra="ignore", env_ignore_empty=True)

    env: Environment = Field(default="local", description="FIRSTMILE_ENV: local (default), ci or prod; the one "
                             "place the environment is resolved (the compose platform containers set prod).")
    mlflow_tracking_uri: str = Field(default="", description="FIRSTMILE_MLFLOW_TRACKING_URI: an MLflow server (the "
                                     "compose runtime's). Empty: the SQLite store under the data directory.")

    @property
    def tracking_uri(self) -> str:
        """The MLflow store runs and the registry use: ``mlflow_tracking_uri``, else the data directory's SQLite.

        Not MLflow's own ``MLFLOW_TRACKING_URI``: ``mlflow.set_tracking_uri()`` writes that variable, so after the
        first call in a process it would pin every later data directory to the first one's store.
        """
        return self.mlflow_tracking_uri or self.layout.mlflow_tracking_uri

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance of the embedded runtime: ``<data_dir>/dagster`` (the compose runtime sets its own
        ``DAGSTER_HOME`` in the platform image, which Dagster reads itself)."""
        return self.layout.dagster_home

    def child_env(self) -> dict[str, str]:
        """What a child Dagster process (``dagster dev``) needs to see this data directory and instance."""
        return {"FIRSTMILE_DATA_DIR": str(self.layout.root), "DAGSTER_HOME": str(self.dagster_home)}


def load_orchestration_settings(**overrides: Any) -> OrchestrationSettings:
    """Read settings from the environment (and ``.env`` if present), with explicit overrides on top."""
    return OrchestrationSettings(_env_file=".env", **overrides)  # type: ignore[call-arg]
