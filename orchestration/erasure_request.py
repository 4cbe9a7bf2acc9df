"""The steps of one erasure request (``SUPPRESS_WITH_DELETE``) after the edge suppressed its subjects: everything but
the dbt builds, which the Dagster op runs (``orchestration/defs/regulations.py``, the table of contents).

Each state reached is published to ``control.regulations`` (``GET /v1/regulations/{id}`` answers from it) and
appended to the warehouse's erasure trail (``erasure_audit``). A state the request already reached (a re-run of
the job) is not published again: its first timestamp stands, while the step itself runs again (every step is
idempotent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.artefact_scan import ArtefactScan, scan_tracking_store
from orchestration.control_publish import plan_control, publish_control, read_control_state
from orchestration.settings import OrchestrationSettings
from streaming import settings as topics
from streaming.errors import FirstmileError
from streaming.regulations import Regulation, State, publish_regulation, read_regulations, with_state
from streaming.settings import StreamingSettings
from warehouse.control import read_erasures
from warehouse.erasure import erase_profiles, suppression_identifiers
from warehouse.erasure_trail import ErasureTrail

logger = logging.getLogger(__name__)


class ErasureRequestError(FirstmileError, RuntimeError):
    """An erasure request that cannot be carried out (the message says which and why)."""


@dataclass(frozen=True)
class ErasureRun:
    """Where one request's erasure reads and writes."""

    broker_address: str
    streaming: StreamingSettings
    orchestration: OrchestrationSettings

    @property
    def trail(self) -> ErasureTrail:
        return ErasureTrail(self.orchestration.layout.regulations)

    @property
    def regulations_topic(self) -> str:
        return self.streaming.topic(topics.CONTROL_REGULATIONS)


def load_request(run: ErasureRun, request_id: str) -> Regulation:
    """The request as ``control.regulations`` holds it now; it must be a ``SUPPRESS_WITH_DELETE`` suppressed at
    the edge (the collector publishes the subjects to ``control.erasure`` before that state)."""
    found = {r.id: r for r in read_regulations(run.broker_address, run.regulations_topic)}
    reg = found.get(request_id)
    if reg is None:
        raise ErasureRequestError(f"regulation {request_id} is not on {run.regulations_topic}")
    if reg.regulation_type != "SUPPRESS_WITH_DELETE":
        raise ErasureRequestError(f"regulation {request_id} is a {reg.regulation_type}: nothing to delete")
    if reg.reached("suppressed_at_edge") is None:
        raise ErasureRequestError(f"regulation {request_id} was not suppressed at the edge yet ({reg.status})")
    return reg


def record_received(run: ErasureRun, reg: Regulation) -> None:
    """The request's subjects become erasure requests for dbt (``stg_erasure_requests``), and the states it reached
    before the job (received, suppressed at the edge) go into the audit trail."""
    trail = run.trail.ensure()
    trail.record_request(reg.id, regulation_type=reg.regulation_type, subject_type=reg.subject_type,
                         subject_ids=reg.subject_ids, requested_at=reg.received_at)
    for seq, entry in enumerate(reg.states):
        trail.record_state(reg.id, regulation_type=reg.regulation_type, seq=seq, state=entry.state,
                           reached_at=entry.at, detail=entry.detail)


def advance(run: ErasureRun, reg: Regulation, state: State, detail: dict[str, Any] | None = None) -> Regulation:
    """Publish ``state`` (with ``detail``) and append it to the trail, unless the request already reached it."""
    if state != "failed" and reg.reached(state) is not None:
        return reg
    reg = with_state(reg, state, detail)
    publish_regulation(run.broker_address, run.regulations_topic, reg)
    entry = reg.states[-1]
    run.trail.record_state(reg.id, regulation_type=reg.regulation_type, seq=len(reg.states) - 1, state=state,
                           reached_at=entry.at, detail=detail)
    logger.info("regulation %s: %s %s", reg.id, state, detail or "")
    return reg


def request_identifiers(run: ErasureRun, reg: Regulation) -> list[str]:
    """The subjects' ids and every identifier the warehouse found with them (their rows of
    ``erasure_suppression_list``, built by the job's first dbt build)."""
    found = read_erasures(run.orchestration.duckdb_path, profile_ids=reg.subject_ids)
    return sorted({e.identifier_value for e in found} | set(reg.subject_ids))


def publish_found_identifiers(run: ErasureRun, reg: Regulation) -> dict[str, int]:
    """The identifiers the warehouse found for the subjects (the devices, anonymous ids, hashed emails the edge did
    not know) to ``control.erasure`` at once, those it does not hold yet."""
    identifiers = request_identifiers(run, reg)
    plan = plan_control([], identifiers, read_control_state(run.broker_address, run.streaming))
    published = publish_control(run.broker_address, run.streaming, plan, source="erasure_job", request_id=reg.id)
    return {"identifiers": len(identifiers), "published": published["erasure"], "already_known": plan.erasures_present}


def rewrite_lake(run: ErasureRun) -> dict[str, Any]:
    """Every lake file holding a row of any erased identifier (the whole suppression list: a file re-delivered
    after an earlier erasure is caught too) rewritten without it; the ``lake_rewritten`` detail."""
    location = run.orchestration.lake_location
    if "://" in location:
        raise ErasureRequestError(f"the lake is remote ({location}): rewriting it in place is not supported yet; "
                                  "erase with warehouse.erasure.erase_profiles on a local copy")
    result = erase_profiles(Path(location), suppression_identifiers(run.orchestration.duckdb_path))
    return {"rows_removed": result.total_rows_removed, "rows_removed_per_stream": result.rows_removed,
            "files_scanned": result.files_scanned, "files_rewritten": len(result.files_rewritten),
            "files_deleted": len(result.files_deleted)}


def check_ml_artefacts(run: ErasureRun, reg: Regulation) -> ArtefactScan:
    """The MLflow store searched for the request's identifiers (hits in tags removed)."""
    return scan_tracking_store(run.orchestration.tracking_uri, request_identifiers(run, reg))
