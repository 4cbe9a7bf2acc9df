"""The collector's settings (env prefix ``FIRSTMILE_``), on top of the streaming tier's settings.

Write keys come from the environment, never from code: ``FIRSTMILE_WRITE_KEYS="key:source_id,key2:source2:500"``
(an optional third field overrides the per-key rate limit, in events per second).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from streaming.settings import StreamingSettings


@dataclass(frozen=True, slots=True)
class WriteKey:
    key: str
    source_id: str
    #: events per second for this key; ``None``: the collector-wide ``rate_limit_per_s``.
    rate_per_s: float | None = None


def parse_write_keys(spec: str) -> dict[str, WriteKey]:
    """``"k1:src1,k2:src2:250"`` → ``{k1: WriteKey(k1, src1), k2: WriteKey(k2, src2, 250.0)}``."""
    keys: dict[str, WriteKey] = {}
    for item in spec.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        parts = [p.strip() for p in item.split(":")]
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError("every write key entry must look like key:source_id[:rate_per_s]")
        rate = float(parts[2]) if len(parts) == 3 and parts[2] else None
        if rate is not None and rate < 0:
            raise ValueError("a write key's rate_per_s must be >= 0")
        if parts[0] in keys:
            raise ValueError("a write key is listed twice")
        keys[parts[0]] = WriteKey(parts[0], parts[1], rate)
    return keys


class CollectorSettings(StreamingSettings):
    """Streaming settings plus the collector's own. Every field is read from ``FIRSTMILE_<NAME>``."""

    # write keys are secrets: never echo the input in a validation error
    model_config = SettingsConfigDict(env_prefix="FIRSTMILE_", frozen=True, extra="ignore", hide_input_in_errors=True)

    write_keys: str = Field(default="", description="key:source_id[:rate_per_s], comma separated.")
    server_keys: str = Field(default="", description="FIRSTMILE_SERVER_KEYS: keys for /v1/regulations (erasure), "
                                                     "comma separated; never give one to a browser.")
    rate_limit_per_s: float = Field(default=1000.0, ge=0,
                                    description="Token-bucket refill, events/s per write key. 0 disables.")
    rate_limit_burst_s: float = Field(default=2.0, gt=0,
                                      description="Bucket capacity, in seconds of the key's rate.")
    collector_host: str = Field(default="127.0.0.1")
    collector_port: int = Field(default=8080, ge=0, le=65535)
    collector_workers: int = Field(default=1, ge=1)
    collector_linger_ms: float = Field(default=1.0, ge=0, le=1000,
                                       description="Producer linger: most of the accept latency.")
    collector_ack_timeout_ms: int = Field(default=5000, ge=100,
                                          description="Broker acknowledgement wait before 503.")
    collector_probe_interval_s: float = Field(default=2.0, gt=0, description="Readiness probe period.")

    @field_validator("write_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        parse_write_keys(value)
        return value

    @property
    def server_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.server_keys.split(",") if k.strip())

    @property
    def keys(self) -> dict[str, WriteKey]:
        return parse_write_keys(self.write_keys)


def load_collector_settings(**overrides: object) -> CollectorSettings:
    return CollectorSettings(_env_file=".env", **overrides)  # type: ignore[call-arg,arg-type]
