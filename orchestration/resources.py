"""Resources, configured from the environment with ``dg.EnvVar`` (resolved when a run starts, never at import)."""

from __future__ import annotations

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
        from pathlib import Path

        return DataLayout(Path(self.data_dir).resolve()).ensure()

    def streaming_settings(self) -> StreamingSettings:
        address = "" if self.kafka_broker_address in ("", "unset") else self.kafka_broker_address
        return StreamingSettings(data_dir=self.data_dir, topic_prefix=self.topic_prefix,
                                 KAFKA_BROKER_ADDRESS=address)  # type: ignore[call-arg]


def default_resource() -> FirstmileResource:
    return FirstmileResource(
        data_dir=dg.EnvVar("FIRSTMILE_DATA_DIR"),
        kafka_broker_address=dg.EnvVar("KAFKA_BROKER_ADDRESS"),
    )
