"""What the sensors see of the landing zone: files newer than a cursor, their day partition and row counts.

The lake's layout is :mod:`warehouse.lake`'s (``<lake>/<stream>/event_date=YYYY-MM-DD/<stem>.parquet``, written
atomically by rename). Only Parquet metadata is read here (row counts), never the data: a sensor tick must stay
cheap however large the lake grows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from warehouse.lake import STREAMS

#: Streams whose rows are decided events (the quarantine-rate signal's denominator).
DECIDED_STREAMS = ("events", "quarantine", "suppressed")


@dataclass(frozen=True, order=True)
class FileMark:
    """A position in the landing zone: files are ordered by (modification time, path relative to the lake).

    A batch re-delivered after a crash rewrites the same file name with a newer mtime, so it is seen again: the
    runs it triggers are idempotent (dbt dedupes on ``event_id``).
    """

    mtime_ns: int
    path: str


@dataclass(frozen=True)
class LandedFile:
    mark: FileMark
    stream: str
    day: str

    def rows(self, lake: Path) -> int:
        return int(pq.read_metadata(lake / self.mark.path).num_rows)


def landed_files(lake: Path, *, streams: tuple[str, ...] = STREAMS, after: FileMark | None = None
                 ) -> list[LandedFile]:
    """Parquet files of ``streams`` newer than ``after``, oldest first."""
    out = []
    for stream in streams:
        root = lake / stream
        if not root.is_dir():
            continue
        for path in root.glob("event_date=*/*.parquet"):
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:  # replaced between glob and stat: the new file is seen next tick
                continue
            mark = FileMark(mtime, str(path.relative_to(lake)))
            if after is None or mark > after:
                out.append(LandedFile(mark, stream, path.parent.name.removeprefix("event_date=")))
    return sorted(out, key=lambda f: f.mark)


@dataclass
class LandingCursor:
    """The landing sensor's cursor: the newest file seen, days whose loop run is still owed, last loop request."""

    mark: FileMark | None = None
    pending_days: tuple[str, ...] = ()
    last_loop_at: float = 0.0

    def dumps(self) -> str:
        return json.dumps({"mark": asdict(self.mark) if self.mark else None, "pending_days": list(self.pending_days),
                           "last_loop_at": self.last_loop_at}, sort_keys=True)

    @classmethod
    def loads(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        doc = json.loads(raw)
        mark = FileMark(**doc["mark"]) if doc.get("mark") else None
        return cls(mark, tuple(doc.get("pending_days") or ()), float(doc.get("last_loop_at") or 0.0))


@dataclass
class QuarantineCursor:
    """The quarantine-rate sensor's cursor: newest file seen and the running baseline (quarantined / decided)."""

    mark: FileMark | None = None
    baseline_quarantined: int = 0
    baseline_decided: int = 0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_quarantined / self.baseline_decided if self.baseline_decided else 0.0

    def dumps(self) -> str:
        return json.dumps({"mark": asdict(self.mark) if self.mark else None,
                           "baseline_quarantined": self.baseline_quarantined,
                           "baseline_decided": self.baseline_decided}, sort_keys=True)

    @classmethod
    def loads(cls, raw: str | None) -> QuarantineCursor:
        if not raw:
            return cls()
        doc = json.loads(raw)
        mark = FileMark(**doc["mark"]) if doc.get("mark") else None
        return cls(mark, int(doc.get("baseline_quarantined", 0)), int(doc.get("baseline_decided", 0)))


@dataclass(frozen=True)
class RateJump:
    """Thresholds of "the quarantine rate jumped": enough recent events, enough baseline, and a rate at least
    ``ratio`` × the baseline and ``min_increase`` above it (both, so a 0.1 % → 0.3 % blip does not retrain)."""

    min_recent: int = 200
    min_baseline: int = 500
    ratio: float = 2.0
    min_increase: float = 0.05

    def jumped(self, *, baseline_rate: float, baseline_n: int, recent_rate: float, recent_n: int) -> bool:
        return (recent_n >= self.min_recent and baseline_n >= self.min_baseline
                and recent_rate >= baseline_rate * self.ratio and recent_rate - baseline_rate >= self.min_increase)


def quarantine_counts(lake: Path, files: list[LandedFile]) -> tuple[int, int]:
    """(quarantined rows, decided rows) in ``files`` of the decided streams."""
    quarantined = decided = 0
    for f in files:
        if f.stream not in DECIDED_STREAMS:
            continue
        n = f.rows(lake)
        decided += n
        if f.stream == "quarantine":
            quarantined += n
    return quarantined, decided
