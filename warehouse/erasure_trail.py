"""The erasure trail: the regulations API's deletion requests and the states they reached, as the warehouse keeps
them (``<data_dir>/regulations/``, :attr:`warehouse.layout.DataLayout.regulations`).

Two append-only newline-delimited JSON files that dbt reads (``macros/regulations.sql``):

* ``erasure_requests.jsonl``: one row per request and subject id (``request_id, regulation_type, subject_type,
  subject_id, requested_at``) → ``stg_erasure_requests`` (with the seed and the ``erase_profile_ids`` var), so a
  warehouse rebuilt from scratch still knows every request. It holds the subjects' ids by necessity, like the
  suppression list: it is the request.
* ``erasure_audit.jsonl``: one row per request and state reached (``request_id, regulation_type, seq, state,
  reached_at, detail, recorded_at``) → the ``erasure_audit`` model. A detail holds counts, never an identifier.

Why files under the data directory and not a lake stream: the lake is what erasure rewrites, and may be remote
(``FIRSTMILE_LAKE_URI``); the trail is the warehouse's own record, written by the one job that handles requests.
Rows are appended whole (one ``write`` of a line, then ``fsync``); recording the same request or state twice is a
no-op, so a re-run of the job is safe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REQUESTS = "erasure_requests.jsonl"
AUDIT = "erasure_audit.jsonl"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ErasureTrail:
    """The trail under ``directory`` (created, with both files empty, by :meth:`ensure`)."""

    directory: Path

    @property
    def requests_path(self) -> Path:
        return self.directory / REQUESTS

    @property
    def audit_path(self) -> Path:
        return self.directory / AUDIT

    def ensure(self) -> ErasureTrail:
        """Both files exist (dbt's views read them; a missing file would compile to an empty relation)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.requests_path, self.audit_path):
            path.touch(exist_ok=True)
        return self

    def _rows(self, path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _append(self, path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
        lines = "".join(json.dumps(dict(row), separators=(",", ":"), sort_keys=True) + "\n" for row in rows)
        if not lines:
            return 0
        self.ensure()
        with path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return lines.count("\n")

    def record_request(self, request_id: str, *, regulation_type: str, subject_type: str, subject_ids: Iterable[str],
                       requested_at: str) -> int:
        """One row per subject id not recorded for this request yet; returns how many were written."""
        known = {(r["request_id"], r["subject_id"]) for r in self._rows(self.requests_path)}
        return self._append(self.requests_path, [
            {"request_id": request_id, "regulation_type": regulation_type, "subject_type": subject_type,
             "subject_id": sid, "requested_at": requested_at}
            for sid in sorted(set(subject_ids)) if (request_id, sid) not in known])

    def record_state(self, request_id: str, *, regulation_type: str, seq: int, state: str, reached_at: str,
                     detail: Mapping[str, Any] | None = None) -> bool:
        """Append the ``seq``-th state of a request unless it is recorded already; True when written."""
        if any(r["request_id"] == request_id and r["seq"] == seq for r in self._rows(self.audit_path)):
            return False
        return bool(self._append(self.audit_path, [{
            "request_id": request_id, "regulation_type": regulation_type, "seq": seq, "state": state,
            "reached_at": reached_at, "detail": json.dumps(dict(detail)) if detail is not None else None,
            "recorded_at": _now()}]))

    def states(self, request_id: str) -> list[tuple[int, str, str]]:
        """``(seq, state, reached_at)`` recorded for a request, in order."""
        return sorted((int(r["seq"]), r["state"], r["reached_at"]) for r in self._rows(self.audit_path)
                      if r["request_id"] == request_id)
