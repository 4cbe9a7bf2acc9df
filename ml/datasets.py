"""The training set as the warehouse builds it (dbt model ``training_events``), split by time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from streaming.sessions import FEATURES
from warehouse.duck import connect

FEATURE_COLUMNS = tuple(f"f_{name}" for name in FEATURES)


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame
    test: pl.DataFrame
    cutoff: str


def load_training_events(duckdb_path: Path | str) -> pl.DataFrame:
    """Events the warehouse may learn from: delivered to it (analytics consent) or quarantined as bots.

    Suppressed events (no analytics consent) are never trained on: the warehouse keeps only their ledger.
    """
    with connect(duckdb_path) as con:
        frame = con.sql("select * from training_events where stream in ('events', 'quarantine') "
                        "order by event_ts, event_id").pl()
    missing = [c for c in (*FEATURE_COLUMNS, "label_converted", "label_bot", "event_ts") if c not in frame.columns]
    if missing:
        raise ValueError(f"training_events lacks columns {missing}: rebuild the warehouse (dbt build)")
    return frame.with_columns(
        [pl.col(c).cast(pl.Float64).fill_null(0.0) for c in FEATURE_COLUMNS]
        + [pl.col(c).cast(pl.Int8).fill_null(0) for c in ("label_converted", "label_bot")]
        + [pl.col("is_bot").fill_null(False)])


def time_split(frame: pl.DataFrame, *, test_fraction: float = 0.3) -> Split:
    """Split by event time (never randomly: the model must predict a future it has not seen)."""
    if frame.height < 10:
        raise ValueError(f"training set has {frame.height} rows; need at least 10")
    cutoff = frame["event_ts"].sort()[int(frame.height * (1 - test_fraction))]
    train, test = frame.filter(pl.col("event_ts") < cutoff), frame.filter(pl.col("event_ts") >= cutoff)
    return Split(train, test, str(cutoff))


def matrix(frame: pl.DataFrame) -> np.ndarray:
    return frame.select(FEATURE_COLUMNS).to_numpy().astype(np.float64)


def data_version(frame: pl.DataFrame) -> str:
    """A fingerprint of the rows trained on (count, time range, a hash of event ids)."""
    ids = frame["event_id"].cast(pl.String).hash(seed=0).sum() if "event_id" in frame.columns else 0
    first, last = str(frame["event_ts"].min()), str(frame["event_ts"].max())
    return f"n={frame.height};from={first};to={last};ids={ids}"
