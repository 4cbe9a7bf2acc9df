"""The dbt project's copy of the landing-zone contract and session definition equals the Python one."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from streaming.sessions import FEATURES, SESSION_GAP_S
from warehouse.lake import DECIDED_SCHEMA, DLQ_SCHEMA

PROJECT = yaml.safe_load((Path(__file__).resolve().parents[2] / "dbt_project" / "dbt_project.yml").read_text())
VARS = PROJECT["vars"]


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP WITH TIME ZONE" if dtype.time_zone else "TIMESTAMP"
    return {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Float64: "DOUBLE", pl.Boolean: "BOOLEAN",
            pl.Binary: "BLOB"}[type(dtype)]


def test_decided_columns_match_lake_py() -> None:
    assert VARS["lake_decided_columns"] == {name: _duckdb_type(t) for name, t in DECIDED_SCHEMA.items()}


def test_dlq_columns_match_lake_py() -> None:
    assert VARS["lake_dlq_columns"] == {name: _duckdb_type(t) for name, t in DLQ_SCHEMA.items()}


def test_session_definition_matches_streaming() -> None:
    assert tuple(VARS["session_features"]) == FEATURES
    assert VARS["session_gap_s"] == SESSION_GAP_S


def test_delivery_columns_match_lake_py() -> None:
    from warehouse import lake

    assert tuple(VARS["lake_delivery_columns"]) == tuple(getattr(lake, "DELIVERY_COLUMNS", ()))
