"""The streaming tier's settings: one frozen object per process, read from the environment when asked.

Every variable is listed in ``.env.example``. Nothing is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warehouse.layout import DataLayout

# Topic names are part of the platform's contract (ARCHITECTURE.md); the prefix lets several
# firstmile installations share one Kafka cluster.
RAW = "events.raw"
DLQ = "events.dlq"
QUARANTINE = "events.quarantine"
SUPPRESSED = "events.suppressed"
DECISIONS = "decisions"
#: The live profile view (key: profile) and the device → profile index (key: device), compacted, for serving.
PROFILES = "profiles"
PROFILE_DEVICES = "profiles.devices"
CONTROL_POLICY = "control.policy"
#: What the warehouse (and the regulations API) learn about people, keyed by identifier, compacted, broadcast to
#: every worker (streaming/control_tables.py): profile merges, erased identifiers, erasure requests and their state.
CONTROL_IDENTITY = "control.identity"
CONTROL_ERASURE = "control.erasure"
CONTROL_REGULATIONS = "control.regulations"
DEST_WAREHOUSE = "dest.warehouse"
DEST_MARKETING = "dest.marketing"
DEST_SALES = "dest.sales"
DESTINATIONS = (DEST_WAREHOUSE, DEST_MARKETING, DEST_SALES)
#: What the delivery tier did with each routed event, per destination (streaming/delivery/sink.py).
DELIVERY_OUTCOMES = "delivery.outcomes"


class StreamingSettings(BaseSettings):
    """Settings of a hot-path process (worker, lake sink, collector, demo)."""

    model_config = SettingsConfigDict(env_prefix="FIRSTMILE_", frozen=True, extra="ignore")

    kafka_broker_address: str = Field(
        default="",
        validation_alias="KAFKA_BROKER_ADDRESS",
        description="host:port of an existing Kafka. Empty: start the embedded Tansu broker.",
    )
    data_dir: Path = Field(default=Path("data"), description="FIRSTMILE_DATA_DIR: all local state.")
    topic_prefix: str = Field(default="", description="FIRSTMILE_TOPIC_PREFIX: prepended to every topic name.")
    partitions: int = Field(default=3, ge=1, description="FIRSTMILE_PARTITIONS: partitions of events.raw and outputs.")
    replication_factor: int = Field(default=1, ge=1)
    raw_retention_ms: int = Field(default=24 * 3600 * 1000, ge=60_000,
                                  description="events.raw holds clear PII: keep its retention short.")
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)
    retention_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    consumer_group: str = Field(default="firstmile-worker")
    lake_consumer_group: str = Field(default="firstmile-lake")
    pii_secret: str = Field(default="dev-only-change-me", min_length=8,
                            description="FIRSTMILE_PII_SECRET: key of the keyed hash applied to PII.")
    commit_interval: float = Field(default=1.0, gt=0)
    lake_flush_seconds: float = Field(default=2.0, gt=0)
    destinations_file: Path = Field(default=Path("destinations.yml"),
                                    description="FIRSTMILE_DESTINATIONS_FILE: where streaming.delivery delivers to.")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        if value and not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("topic_prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir.resolve())

    @property
    def embedded(self) -> bool:
        return not self.kafka_broker_address

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def load_settings(**overrides: Any) -> StreamingSettings:
    """Read settings from the environment (and ``.env`` if present), with explicit overrides on top."""
    return StreamingSettings(_env_file=".env", **overrides)  # type: ignore[call-arg]
