"""What the novelty sensors see in newly landed decided events: a shift in the first mile's feature distributions,
and shadow rules the hot path recorded hits for.

Both answer "should the loop run now rather than at its next slot?" ("real-time trigger, batch execution"):

* :class:`DriftBaseline` keeps, per session feature, decile edges fixed on the first ``min_baseline`` rows and an
  exponentially weighted share of rows per bin; a window of new rows whose population stability index (PSI) on any
  feature reaches ``psi_threshold`` (0.25 is the conventional "significant shift") is a new pattern worth learning
  from. Every judged window folds into the baseline with weight ``adapt``, so slow drift never fires and a new
  pattern that stays stops firing after a few windows (by then the loop has had its chance to learn it).
* :func:`read_window` also counts, per shadow rule id, the events the hot path recorded it on
  (``ledger.shadow_rules_fired``); once a rule has enough recorded hits, the loop can judge it against hindsight and
  enforce it (``ml.candidate``), minutes after it was published instead of at the next scheduled run.

Only the needed columns of the new files are read (features, the ledger), never the whole lake.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq

from orchestration.landing import DECIDED_STREAMS, FileMark, LandedFile
from streaming.sessions import FEATURES

#: Features whose distribution the drift sensor watches (all the first mile's session features).
WATCHED = tuple(f"f_{name}" for name in FEATURES)
BINS = 10


@dataclass(frozen=True)
class DriftThresholds:
    """When a window of new rows counts as novel. ``min_baseline`` rows fix the bins; a window needs
    ``min_recent`` rows to be judged (fewer: keep accumulating); ``psi_threshold`` on any one feature fires."""

    min_baseline: int = 500
    min_recent: int = 200
    psi_threshold: float = 0.25
    adapt: float = 0.2


@dataclass
class DriftBaseline:
    """Per feature: bin edges (interior cut points) and the baseline's share of rows per bin."""

    edges: dict[str, list[float]] = field(default_factory=dict)
    shares: dict[str, list[float]] = field(default_factory=dict)
    rows: int = 0
    #: rows seen before the bins were fixed (kept as raw values until ``min_baseline``)
    warmup: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.edges)

    def fold(self, columns: dict[str, np.ndarray], *, min_baseline: int, adapt: float) -> None:
        """Add a window of rows to the baseline (fixing the bins once ``min_baseline`` rows were seen)."""
        n = max((len(v) for v in columns.values()), default=0)
        if not self.ready:
            for name, values in columns.items():
                self.warmup.setdefault(name, []).extend(float(v) for v in values)
            self.rows += n
            if self.rows >= min_baseline:
                for name, kept in self.warmup.items():
                    arr = np.asarray(kept, dtype=np.float64)
                    cuts = sorted(set(np.quantile(arr, np.linspace(0, 1, BINS + 1)[1:-1]).round(6).tolist()))
                    self.edges[name] = cuts
                    self.shares[name] = _shares(arr, cuts).tolist()
                self.warmup = {}
            return
        for name, values in columns.items():
            if name in self.edges and len(values):
                recent = _shares(np.asarray(values, dtype=np.float64), self.edges[name])
                base = np.asarray(self.shares[name], dtype=np.float64)
                self.shares[name] = ((1 - adapt) * base + adapt * recent).tolist()
        self.rows += n

    def psi(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        """Population stability index of a window against the baseline, per feature."""
        out: dict[str, float] = {}
        for name, values in columns.items():
            if name not in self.edges or not len(values):
                continue
            b = np.maximum(np.asarray(self.shares[name], dtype=np.float64), 1e-4)
            r = np.maximum(_shares(np.asarray(values, dtype=np.float64), self.edges[name]), 1e-4)
            out[name] = float(np.sum((r - b) * np.log(r / b)))
        return out

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> DriftBaseline:
        return cls(**doc) if doc else cls()


def _shares(values: np.ndarray, cuts: list[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="right")
    hist = np.bincount(idx, minlength=len(cuts) + 1).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


@dataclass
class NoveltyCursor:
    """The novelty sensor's cursor: newest file judged, the drift baseline, shadow hits since the last request,
    and when it last requested the loop."""

    mark: FileMark | None = None
    baseline: DriftBaseline = field(default_factory=DriftBaseline)
    shadow_hits: dict[str, int] = field(default_factory=dict)
    last_request_at: float = 0.0

    def dumps(self) -> str:
        return json.dumps({"mark": asdict(self.mark) if self.mark else None, "baseline": self.baseline.to_doc(),
                           "shadow_hits": self.shadow_hits, "last_request_at": self.last_request_at},
                          sort_keys=True)

    @classmethod
    def loads(cls, raw: str | None) -> NoveltyCursor:
        if not raw:
            return cls()
        doc = json.loads(raw)
        return cls(FileMark(**doc["mark"]) if doc.get("mark") else None,
                   DriftBaseline.from_doc(doc.get("baseline")), dict(doc.get("shadow_hits") or {}),
                   float(doc.get("last_request_at") or 0.0))


@dataclass(frozen=True)
class Window:
    """New decided rows: their watched feature columns and the shadow rule hits they recorded."""

    features: dict[str, np.ndarray]
    shadow_hits: dict[str, int]
    rows: int


def read_window(lake: Path, files: list[LandedFile]) -> Window:
    """The watched features (finite values only; a missing column is skipped) and the shadow hits of ``files``."""
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in WATCHED}
    hits: dict[str, int] = {}
    rows = 0
    for f in files:
        if f.stream not in DECIDED_STREAMS:
            continue
        path = lake / f.mark.path
        try:
            schema = pq.read_schema(path)
        except FileNotFoundError:  # replaced by a newer write: it is seen again with its new mark
            continue
        wanted = [c for c in (*WATCHED, "ledger") if c in schema.names]
        table = pq.read_table(path, columns=wanted)
        rows += table.num_rows
        for name in WATCHED:
            if name in table.column_names:
                arr = table[name].to_numpy(zero_copy_only=False).astype(np.float64)
                chunks[name].append(arr[np.isfinite(arr)])
        if "ledger" in table.column_names:
            for text in table["ledger"].to_pylist():
                for rule_id in _shadow_ids(text):
                    hits[rule_id] = hits.get(rule_id, 0) + 1
    features = {name: np.concatenate(parts) for name, parts in chunks.items() if parts}
    return Window(features, hits, rows)


def _shadow_ids(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        ids = orjson.loads(text).get("shadow_rules_fired") or []
    except (orjson.JSONDecodeError, AttributeError):
        return []
    return [i for i in ids if isinstance(i, str)]


def top_shift(psi: dict[str, float]) -> tuple[str, float]:
    """The feature that moved most and its PSI (``("", 0.0)`` when nothing was measured)."""
    if not psi:
        return "", 0.0
    name = max(psi, key=lambda k: psi[k])
    value = psi[name]
    return name, (value if math.isfinite(value) else 0.0)
