"""Resources, configured from the environment with ``dg.EnvVar`` (resolved when a run starts, never at import)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.settings import OrchestrationSettings
from streaming.settings import StreamingSettings
from warehouse.layout import DataLayout


class FirstmileResource(dg.ConfigurableResource):  # type: ignore[misc]
    """Where the platform's data lives, which broker the publish step writes to, and which MLflow store the loop
    uses. A run's settings are built from these fields (:meth:`settings`, :meth:`streaming_settings`)."""

    data_dir: str = "data"
    #: ``KAFKA_BROKER_ADDRESS``; "unset" when no broker runs (only the publish step needs one).
    kafka_broker_address: str = "unset"
    topic_prefix: str = ""
    #: ``FIRSTMILE_MLFLOW_TRACKING_URI``; empty: the SQLite store under the data directory.
    mlflow_tracking_uri: str = ""
    #: ``FIRSTMILE_LAKE_URI``; empty: the data directory's lake.
    lake_uri: str = ""

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve()).ensure()

    def settings(self) -> OrchestrationSettings:
        """The run's orchestration settings: this resource's fields, and the rest (the S3 connection of a remote
        lake, ``FIRSTMILE_ENV``) from the run's environment, read here, when an asset asks."""
        return OrchestrationSettings(data_dir=Path(self.data_dir), mlflow_tracking_uri=self.mlflow_tracking_uri,
                                     lake_uri=self.lake_uri)

    def streaming_settings(self) -> StreamingSettings:
        address = "" if self.kafka_broker_address in ("", "unset") else self.kafka_broker_address
        return StreamingSettings(data_dir=Path(self.data_dir), topic_prefix=self.topic_prefix,
                                 KAFKA_BROKER_ADDRESS=address)  # type: ignore[call-arg]


def default_resource() -> FirstmileResource:
    """The platform resource, each field from its environment variable when that is set, else the default.

    ``dg.EnvVar`` raises when its variable is unset, and ``FIRSTMILE_TOPIC_PREFIX`` / ``KAFKA_BROKER_ADDRESS`` (and
    the others) are legitimately unset in the embedded default: see
    :func:`orchestration.environment.env_or_default`.
    """
    from orchestration.environment import env_or_default

    return FirstmileResource(
        data_dir=env_or_default("FIRSTMILE_DATA_DIR", "data"),
        kafka_broker_address=env_or_default("KAFKA_BROKER_ADDRESS", "unset"),
        topic_prefix=env_or_default("FIRSTMILE_TOPIC_PREFIX", ""),
        mlflow_tracking_uri=env_or_default("FIRSTMILE_MLFLOW_TRACKING_URI", ""),
        lake_uri=env_or_default("FIRSTMILE_LAKE_URI", ""),
    )
