"""Destinations: declared in a file (``destinations.yml``, path from ``FIRSTMILE_DESTINATIONS_FILE``), validated at
start; an error names the field (``destinations[1].batching.max_events: ...``). Secrets are never in the file: it
names the environment variable that holds each one.

```yaml
destinations:
  - id: crm-webhook
    type: webhook                 # webhook | segment | postgres
    topic: dest.sales             # the routed topic it delivers
    url: https://crm.example/hooks/firstmile
    headers: {X-Team: growth}
    secret_env: CRM_HMAC_SECRET   # HMAC-SHA256 of the body in X-Firstmile-Signature
    batching: {max_events: 100, max_bytes: 500000, max_wait_ms: 1000}
    rate_limit_per_s: 200
    retry_window_s: 86400         # how long an event is retried (default 24 h)
    ordering: profile             # profile | none
  - id: segment-downstream
    type: segment
    topic: dest.marketing
    url: https://api.segment.io   # any Segment-compatible HTTP API (/v1/batch)
    write_key_env: SEGMENT_WRITE_KEY
  - id: analytics-db
    type: postgres
    topic: dest.warehouse
    dsn_env: ANALYTICS_PG_DSN
    table: firstmile_events
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streaming import settings as topics
from streaming.errors import FirstmileError


class DestinationConfigError(FirstmileError, ValueError):
    """The destinations file is invalid; the message names the field."""


class Batching(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_events: int = Field(default=100, ge=1, le=10_000)
    max_bytes: int = Field(default=500_000, ge=1_000, le=20_000_000)
    max_wait_ms: int = Field(default=1000, ge=10, le=60_000)


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: Literal["webhook", "segment", "postgres"]
    topic: str
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    secret_env: str | None = None
    write_key_env: str | None = None
    dsn_env: str | None = None
    table: str = Field(default="firstmile_events", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    batching: Batching = Field(default_factory=Batching)
    rate_limit_per_s: float = Field(default=0.0, ge=0)
    retry_window_s: float = Field(default=24 * 3600.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    ordering: Literal["profile", "none"] = "profile"
    #: consecutive failed sends that open the circuit breaker
    breaker_failures: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> Destination:
        if self.topic not in topics.DESTINATIONS:
            raise ValueError(f"topic must be one of the routed topics {', '.join(topics.DESTINATIONS)}")
        if self.type in ("webhook", "segment") and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError(f"url: a {self.type} destination needs an http(s) url")
        if self.type == "segment" and not self.write_key_env:
            raise ValueError("write_key_env: a segment destination needs the variable holding its write key")
        if self.type == "postgres" and not self.dsn_env:
            raise ValueError("dsn_env: a postgres destination needs the variable holding its DSN")
        return self

    def secret(self, name: str | None) -> str | None:
        """The value of the environment variable ``name`` (a secret the file only names)."""
        if name is None:
            return None
        value = os.environ.get(name)
        if not value:
            raise DestinationConfigError(f"destination {self.id!r}: environment variable {name} is not set")
        return value

    def retry_topic(self, prefix: str = "") -> str:
        return f"{prefix}delivery.{self.id}.retry"

    def dlq_topic(self, prefix: str = "") -> str:
        return f"{prefix}delivery.{self.id}.dlq"


class DestinationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    destinations: list[Destination]

    @model_validator(mode="after")
    def _unique(self) -> DestinationsFile:
        ids = [d.id for d in self.destinations]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"ids must be unique; repeated: {', '.join(dupes)}")
        return self

    def get(self, destination_id: str) -> Destination:
        for d in self.destinations:
            if d.id == destination_id:
                return d
        raise DestinationConfigError(f"no destination {destination_id!r} in the destinations file")


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_destinations(doc: Any) -> DestinationsFile:
    try:
        return DestinationsFile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"])) or "destinations file"
        raise DestinationConfigError(f"{where}: {first['msg']}") from None


def load_destinations(path: Path) -> DestinationsFile:
    if not path.exists():
        raise DestinationConfigError(f"destinations file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DestinationConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_destinations(doc)
