"""The serving process's settings (env prefix ``FIRSTMILE_``), on top of the streaming tier's settings.

Keys, like the collector's write keys, come from the environment:

* ``FIRSTMILE_SERVER_KEYS="k1,k2"``: back-end callers; every lookup, every field (the regulations API uses them too);
* ``FIRSTMILE_PUBLISHABLE_KEYS="pk1:https://shop.example|https://www.shop.example"``: browsers; CORS for those
  origins, only lookups by the anonymousId the caller presents, only the fields in
  ``FIRSTMILE_PUBLISHABLE_FIELDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from streaming.settings import StreamingSettings

#: Fields a browser may read by default: what to show, and why it may be shown.
DEFAULT_PUBLISHABLE_FIELDS = "segment,action,consent"
SERVABLE_FIELDS = ("profile_id", "user_id", "devices", "consent", "segment", "action", "scores", "features",
                   "last_event_at", "policy_version")


@dataclass(frozen=True, slots=True)
class PublishableKey:
    key: str
    origins: frozenset[str]


def parse_publishable_keys(spec: str) -> dict[str, PublishableKey]:
    """``"pk1:https://a.example|https://b.example,pk2:*"`` → keys with their allowed origins (``*``: any)."""
    keys: dict[str, PublishableKey] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, origins = item.partition(":")
        if not key or not sep or not origins:
            raise ValueError("every publishable key entry must look like key:origin[|origin...]")
        if key in keys:
            raise ValueError("a publishable key is listed twice")
        keys[key] = PublishableKey(key, frozenset(o.strip().rstrip("/") for o in origins.split("|") if o.strip()))
    return keys


class ServingSettings(StreamingSettings):
    """Streaming settings plus the serving process's own. Every field is read from ``FIRSTMILE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FIRSTMILE_", frozen=True, extra="ignore", hide_input_in_errors=True)

    serving_host: str = Field(default="127.0.0.1")
    serving_port: int = Field(default=8090, ge=0, le=65535)
    server_keys: str = Field(default="", description="Keys for back ends (all lookups, all fields), comma separated.")
    publishable_keys: str = Field(default="", description="key:origin[|origin] for browsers, comma separated.")
    publishable_fields: str = Field(default=DEFAULT_PUBLISHABLE_FIELDS,
                                    description="Fields a publishable key may read, comma separated.")
    read_wait_ms: int = Field(default=500, ge=0, le=10_000,
                              description="How long a read with ?after= waits by default before answering stale.")
    serving_store_dir: Path | None = Field(default=None,
                                           description="The local store; default <data_dir>/state/serving.")
    serving_block_cache_mb: int = Field(
        default=256, ge=8, le=65_536,
        description="RocksDB block cache of the store, MiB (FIRSTMILE_SERVING_BLOCK_CACHE_MB, default 256): the "
                    "prepared answers of ~1M profiles fit in 256 MiB; beyond it a lookup may read the disk.")
    serving_max_waiting_reads: int = Field(
        default=1000, ge=0, le=1_000_000,
        description="Reads with ?after= waiting at once, at most (FIRSTMILE_SERVING_MAX_WAITING_READS, default "
                    "1000); one more answers 503 too_many_waiting_reads with Retry-After: 1 instead of waiting.")

    @field_validator("publishable_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        parse_publishable_keys(value)
        return value

    @field_validator("publishable_fields")
    @classmethod
    def _fields_known(cls, value: str) -> str:
        unknown = {f.strip() for f in value.split(",") if f.strip()} - set(SERVABLE_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; servable: {', '.join(SERVABLE_FIELDS)}")
        return value

    @property
    def server_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.server_keys.split(",") if k.strip())

    @property
    def publishable(self) -> dict[str, PublishableKey]:
        return parse_publishable_keys(self.publishable_keys)

    @property
    def publishable_field_set(self) -> frozenset[str]:
        return frozenset(f.strip() for f in self.publishable_fields.split(",") if f.strip())

    @property
    def store_dir(self) -> Path:
        return self.serving_store_dir or self.layout.state_dir / "serving"


def load_serving_settings(**overrides: object) -> ServingSettings:
    return ServingSettings(_env_file=".env", **overrides)  # type: ignore[call-arg,arg-type]
