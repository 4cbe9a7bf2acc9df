"""Small synthetic training sets (polars), tiny lakes and real MLflow stores on tmp_path for the learning tier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import mlflow
import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from ml import registry
from streaming.sessions import FEATURES
from warehouse import lake as lake_layout
from warehouse.layout import DataLayout

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def synthetic_events(n: int = 1500, *, seed: int = 0, bot_share: float = 0.25,
                     human_datacenter_share: float = 0.0) -> pl.DataFrame:
    """Rows shaped like ``training_events``. Humans convert with cart adds and product views (``distinct_categories``
    is noise); bots run fast and regular, mostly from datacenters. ``human_datacenter_share`` of humans browse from
    a datacenter network too (office VPNs), so a rule on the network alone would hit them."""
    rng = np.random.default_rng(seed)
    bot = rng.random(n) < bot_share
    human_dc = (~bot) & (rng.random(n) < human_datacenter_share)
    count = np.where(bot, rng.integers(5, 60, n), rng.integers(1, 30, n)).astype(float)
    mean_interval = np.where(bot, rng.uniform(0.3, 2.0, n), rng.lognormal(2.5, 0.7, n))
    std = np.where(bot, rng.uniform(0.0, 0.2, n), mean_interval * rng.uniform(0.5, 1.5, n))
    duration = count * mean_interval
    epm = np.where(duration > 0, count / np.maximum(duration, 1e-3) * 60, 0.0)
    product_views = np.minimum(count, rng.poisson(np.where(bot, 8, 3), n)).astype(float)
    cart_adds = np.where(bot, rng.poisson(0.2, n), rng.poisson(0.6, n)).astype(float)
    z = -3.0 + 1.3 * cart_adds + 0.25 * product_views
    converted = (~bot) & (rng.random(n) < 1 / (1 + np.exp(-z)))
    features = {
        "session_event_count": count, "session_duration_s": duration,
        "seconds_since_prev": mean_interval * rng.uniform(0.5, 1.5, n), "mean_interval_s": mean_interval,
        "interval_std_s": std, "min_interval_s": mean_interval * np.where(bot, 0.9, 0.2),
        "events_per_minute": epm, "page_views": count - product_views, "product_views": product_views,
        "cart_adds": cart_adds, "cart_value": cart_adds * rng.uniform(10, 80, n),
        "distinct_categories": rng.integers(1, 6, n).astype(float),
    }
    asn = np.where(bot | human_dc, "AS16509 Amazon.com, Inc.", "AS3320 Deutsche Telekom AG")
    return pl.DataFrame({
        "event_id": [f"e{i:06d}" for i in range(n)],
        "event_ts": [T0 + timedelta(seconds=30 * i) for i in range(n)],
        "session_id": [f"s{i // 5}" for i in range(n)],
        "user_id": [None if i % 3 else f"u{i}" for i in range(n)],
        "asn": asn.tolist(),
        "stream": ["events"] * n,
        "is_bot": [False] * n,
        **{f"f_{k}": features[k] for k in FEATURES},
        "label_converted": converted.astype(np.int8),
        "label_bot": bot.astype(np.int8),
    })


def write_warehouse(layout: DataLayout, frame: pl.DataFrame) -> None:
    """A real DuckDB file holding ``training_events`` (what dbt would build) for ``frame``."""
    layout.ensure()
    con = duckdb.connect(str(layout.duckdb_path))
    try:
        con.register("frame", frame.to_arrow())
        con.execute("create or replace table training_events as select * from frame")
    finally:
        con.close()


def write_lake(layout: DataLayout, frame: pl.DataFrame, *, ledger: dict[str, Any] | None = None,
               policy_version: int = 1) -> None:
    """The frame's events as the lake sink writes them (``events`` / ``quarantine`` by ``is_bot``), then the real dbt
    builds ``stg_decided`` over them (ml reads decided events only through the warehouse's dedupe)."""
    from streaming.bots import is_datacenter

    records: dict[str, list[dict[str, Any]]] = {"events": [], "quarantine": []}
    for i, row in enumerate(frame.iter_rows(named=True)):
        records["quarantine" if row["is_bot"] else "events"].append({
            "event_id": row["event_id"], "type": "track", "event_name": "Product Viewed",
            "event_ts": row["event_ts"], "received_at": row["event_ts"], "session_id": row["session_id"],
            "device_id": f"d-{row['session_id']}", "profile_id": row["user_id"] or f"d-{row['session_id']}",
            "user_id": row["user_id"], "asn": row["asn"], "datacenter": is_datacenter(row["asn"]),
            "is_bot": row["is_bot"], "policy_version": policy_version, "kafka_offset": i,
            "kafka_topic": "dest.warehouse", "kafka_partition": 0, "raw_partition": 0, "raw_offset": i,
            "ledger": {"policy_version": policy_version, **(ledger or {}).get(row["event_id"], {}),
                       "identity": {"via": "user_id" if row["user_id"] else "anonymous"}},
            "features": {k: row[f"f_{k}"] for k in FEATURES},
        })
    for stream, rows in records.items():
        if rows:
            lake_layout.write_batch(layout.lake, stream, rows)
    build_staging(layout)


def build_staging(layout: DataLayout) -> None:
    """The real ``dbt build`` of ``stg_decided`` and what it reads, over the layout's lake, into its DuckDB file."""
    from tests.warehouse.dbt_runner import build_models

    build_models("stg_decided", lake=layout.lake, workdir=layout.root, full_refresh=True)


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data").ensure()


@pytest.fixture
def mlflow_layout(layout: DataLayout) -> DataLayout:
    """The layout with a real MLflow store (SQLite + artifacts) under it; creating one costs ~5 s here."""
    registry.configure(layout)
    return layout


@pytest.fixture
def logged_run(mlflow_layout: DataLayout):
    """A factory of real MLflow runs holding a (tiny) ``teacher`` model, as train_propensity_run leaves them."""
    def make() -> dict[str, Any]:
        x = np.array([[0.0], [1.0], [2.0], [3.0]])
        model = LogisticRegression().fit(x, [0, 0, 1, 1])
        with mlflow.start_run(run_name="test-teacher") as run:
            mlflow.sklearn.log_model(model, name="teacher", pip_requirements=registry.PIP_REQUIREMENTS)
        return {"run_id": run.info.run_id, "data_version": "test", "description": "test teacher"}

    return make
