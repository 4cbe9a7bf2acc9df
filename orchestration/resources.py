"""Resources, configured from the environment with ``dg.EnvVar`` (resolved when a run starts, never at import)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from streaming.settings import StreamingSettings
from warehouse.layout import DataLayout


class FirstmileResource(dg.ConfigurableResource):  # type: ignore[misc]
    """Where the platform's data lives and which broker the publish step writes to."""

    data_dir: str = "data"
    #: ``KAFKA_BROKER_ADDRESS``; "unset" when no broker runs (only the publish step needs one).
    kafka_broker_address: str = "unset"
    topic_prefix: str = ""

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve()).ensure()

    def streaming_settings(self) -> StreamingSettings:
        address = "" if self.kafka_broker_address in ("", "unset") else self.kafka_broker_address
        return StreamingSettings(data_dir=Path(self.data_dir), topic_prefix=self.topic_prefix,
                                 KAFKA_BROKER_ADDRESS=address)  # type: ignore[call-arg]


def default_resource() -> FirstmileResource:
    """The platform resource, each field from its environment variable when that is set, else the default.

    ``dg.EnvVar`` raises when its variable is unset, and ``FIRSTMILE_TOPIC_PREFIX`` / ``KAFKA_BROKER_ADDRESS`` are
    legitimately unset in the embedded default: see :func:`orchestration.environment.env_or_default`.
    """
    from orchestration.environment import env_or_default

    return FirstmileResource(
        data_dir=env_or_default("FIRSTMILE_DATA_DIR", "data"),
        kafka_broker_address=env_or_default("KAFKA_BROKER_ADDRESS", "unset"),
        topic_prefix=env_or_default("FIRSTMILE_TOPIC_PREFIX", ""),
    )
