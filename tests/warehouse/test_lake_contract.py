"""The lake's schema against the decided-record contract (streaming/decided.py), and dbt's copies of the lake's
schema and session definition against the Python ones.

The warehouse may not import the hot path, so ``warehouse/lake.py`` keeps the storage types of the contract's
fields; these tests are what keeps the two one definition.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import yaml

from streaming import decided
from streaming.sessions import FEATURES, LIVE_LAG_S, SESSION_GAP_S
from warehouse import lake
from warehouse.lake import DECIDED_SCHEMA, DLQ_SCHEMA, OUTCOME_SCHEMA

PROJECT = yaml.safe_load((Path(__file__).resolve().parents[2] / "dbt_project" / "dbt_project.yml").read_text())
VARS = PROJECT["vars"]
#: Contract fields that are not one column each: the session features land as ``f_<name>`` columns.
NOT_COLUMNS = ("features",)
#: A dead letter's ``original`` is base64 text on the wire; the lake stores the bytes (PII scrubbed).
DLQ_STORED_AS = {"original": pl.Binary()}


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP WITH TIME ZONE" if dtype.time_zone else "TIMESTAMP"
    return {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Float64: "DOUBLE", pl.Boolean: "BOOLEAN",
            pl.Binary: "BLOB"}[type(dtype)]


def _storage(t: msgspec.inspect.Type) -> pl.DataType:
    """How the lake stores a contract type: scalars as themselves, nested values as JSON text."""
    if isinstance(t, msgspec.inspect.UnionType):
        kinds = [o for o in t.types if not isinstance(o, msgspec.inspect.NoneType)]
        return _storage(kinds[0]) if len(kinds) == 1 else pl.String()
    if isinstance(t, msgspec.inspect.LiteralType):
        kinds = {type(v) for v in t.values}
        return pl.Boolean() if kinds == {bool} else pl.Int64() if kinds == {int} else pl.String()
    scalars: dict[type, pl.DataType] = {msgspec.inspect.StrType: pl.String(), msgspec.inspect.IntType: pl.Int64(),
                                        msgspec.inspect.FloatType: pl.Float64(),
                                        msgspec.inspect.BoolType: pl.Boolean(),
                                        msgspec.inspect.DateTimeType: pl.Datetime("us", "UTC")}
    return scalars.get(type(t), pl.String())


def _columns(struct: type[msgspec.Struct]) -> dict[str, pl.DataType]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.name: _storage(f.type) for f in info.fields if f.name not in NOT_COLUMNS}


def _nested(struct: type[msgspec.Struct]) -> set[str]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    scalar = (msgspec.inspect.StrType, msgspec.inspect.IntType, msgspec.inspect.FloatType, msgspec.inspect.BoolType,
              msgspec.inspect.DateTimeType, msgspec.inspect.LiteralType, msgspec.inspect.NoneType)

    def is_nested(t: Any) -> bool:
        if isinstance(t, msgspec.inspect.UnionType):
            return any(is_nested(o) for o in t.types)
        return not isinstance(t, scalar)

    return {f.name for f in info.fields if f.name not in NOT_COLUMNS and is_nested(f.type)}


def test_decided_schema_is_the_contracts_fields_in_their_storage_types() -> None:
    assert {**_columns(decided.Decided), **lake.SINK_COLUMNS} == DECIDED_SCHEMA


def test_json_columns_are_the_contracts_nested_fields() -> None:
    assert set(lake.JSON_COLUMNS) == _nested(decided.Decided)


def test_a_suppression_is_a_subset_of_the_decided_columns_with_the_same_types() -> None:
    suppressed = _columns(decided.Suppressed)
    assert {name: DECIDED_SCHEMA[name] for name in suppressed} == suppressed


def test_delivery_columns_are_decided_columns() -> None:
    assert set(lake.DELIVERY_COLUMNS) <= set(DECIDED_SCHEMA)


def test_dlq_schema_is_the_dead_letter_contract() -> None:
    assert {**_columns(decided.DeadLetter), **DLQ_STORED_AS, **lake.SINK_COLUMNS} == DLQ_SCHEMA


def test_session_features_land_as_f_columns(tmp_path: Path) -> None:
    record = {"event_id": "e", "type": "page", "event_ts": datetime(2026, 11, 2).isoformat() + "Z",
              "received_at": "2026-11-02T00:00:00Z", "features": {name: 1 for name in FEATURES}}
    (path,) = lake.write_batch(tmp_path, "events", [record])
    columns = pl.read_parquet(path).columns
    assert {c for c in columns if c.startswith("f_")} == {f"f_{name}" for name in FEATURES}


def test_decided_columns_match_lake_py() -> None:
    assert VARS["lake_decided_columns"] == {name: _duckdb_type(t) for name, t in DECIDED_SCHEMA.items()}


def test_dlq_columns_match_lake_py() -> None:
    assert VARS["lake_dlq_columns"] == {name: _duckdb_type(t) for name, t in DLQ_SCHEMA.items()}
    assert VARS["lake_outcome_columns"] == {name: _duckdb_type(t) for name, t in OUTCOME_SCHEMA.items()}


def test_session_definition_matches_streaming() -> None:
    assert tuple(VARS["session_features"]) == FEATURES
    assert VARS["session_gap_s"] == SESSION_GAP_S
    assert VARS["live_lag_s"] == LIVE_LAG_S


def test_delivery_columns_match_lake_py() -> None:
    assert tuple(VARS["lake_delivery_columns"]) == lake.DELIVERY_COLUMNS
