"""The latency-impact report: on the same traffic, what the first mile did vs what a batch-only architecture would
have done. Reads decided events only through the warehouse's models (``stg_decided``, ``stg_deliveries``: one
dedupe, one copy that counts) and the warehouse's training set, plus the simulator's truth when there is one;
writes nothing but the report files. The Dagster asset ``latency_impact_report`` and the demo only call
:func:`compute` and :func:`write`. Nothing here imports Dagster.

This module is the table of contents; each step is a module named for what it computes:

* :mod:`orchestration.decided_events` — the decided events, their facts (the fact catalog's SQL), what the first
  mile delivered, the bot labels;
* :mod:`orchestration.consent_checks` — consent recomputed from the inputs, revocations, deliveries without consent;
* :mod:`orchestration.nightly_batch` — the batch's nightly learner replayed at each midnight (:mod:`ml.nightly`);
* :mod:`orchestration.batch_only` — what the batch-only platform delivers;
* :mod:`orchestration.session_moments` — when sessions qualify for personalization and sales;
* :mod:`orchestration.headline_counts` — the six counts, first mile beside batch only;
* :mod:`orchestration.pattern_enforcement` — a new bot pattern: first appearance → enforced, on each path;
* :mod:`orchestration.in_session_serving` — the simulator's live run: decisions served in-session, their
  freshness, and conversions where they were shown, beside what the nightly run could have shown;
* :mod:`orchestration.latency_impact` (numbers and text) and :mod:`orchestration.report_html` (HTML, plots, JSON).

**The batch-only architecture** (what "decisions applied at the next nightly run" means here): a CDP forwards each
event to the destinations as it is collected; every decision is computed by the nightly run over the history up
to the last UTC midnight and applied to the flow from then on (consent as last stamped before midnight, a nightly
bot blocklist, the rules the loop's own learner finds at that midnight, personalization and sales routing reaching
a session only if it is still running at the next midnight). Route conditions are the policy's own, evaluated on
the fact catalog's facts, so both paths route the same events. Bots are the simulator's truth when
``truth.parquet`` exists, else the devices the hot path ever quarantined.

(It lives in ``orchestration/`` because its owner wrote it there; it is analysis over the warehouse, and belongs in
``warehouse/`` once that tier's owner takes it.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestration.batch_only import batch_deliveries
from orchestration.consent_checks import recomputed_consent, revocations
from orchestration.decided_events import read_decided
from orchestration.headline_counts import headline_counts
from orchestration.in_session_serving import in_session_serving
from orchestration.latency_impact import CONSENT_FROM_TRUTH, CONSENT_NOT_RECOMPUTED, METRICS, SALES, LatencyImpact
from orchestration.nightly_batch import replay
from orchestration.pattern_enforcement import pattern_times
from orchestration.report_html import to_html, write
from orchestration.session_moments import session_moments
from streaming.policy import bootstrap_policy, compile_policy

__all__ = ["METRICS", "LatencyImpact", "compute", "load_policies", "to_html", "write"]


def load_policies(policies_dir: Path) -> dict[int, dict[str, Any]]:
    """Every policy document by version: the bootstrap plus what the loop wrote to ``data_dir/policies``."""
    docs = {1: bootstrap_policy()}
    for path in sorted(policies_dir.glob("policy-v*.json")) if policies_dir.is_dir() else []:
        doc = json.loads(path.read_text())
        docs[int(doc["policy_version"])] = doc
    return docs


def compute(data_dir: Path) -> LatencyImpact:
    """All the numbers, from ``data_dir/warehouse.duckdb`` (stg_decided, stg_deliveries and the training set),
    ``policies/``, ``truth.parquet`` and the newest live run (``live/``) when present."""
    policies = load_policies(data_dir / "policies")
    latest = compile_policy(policies[max(policies)])
    purpose_of = {r.destination: r.purposes for r in latest.routes}
    routes = {r.destination: r.predicate for r in latest.routes}
    decided = read_decided(data_dir)
    rows = decided.rows
    consent = recomputed_consent(rows, policies) if decided.truth else None
    batch = replay(rows, data_dir / "warehouse.duckdb", policies[1])
    delivered = {"first_mile": decided.delivered,
                 "batch_only": batch_deliveries(rows, routes=routes, purpose_of=purpose_of,
                                                learned=batch.active_rules())}
    sessions = session_moments(rows, sales_route=routes.get(SALES), sales_purposes=purpose_of.get(SALES, ()),
                               consent=consent)
    counts = headline_counts(rows, delivered=delivered, purpose_of=purpose_of, revoked=revocations(rows, consent),
                             consent=consent, sessions=sessions)
    patterns = pattern_times(rows, policies, batch)
    live, live_unavailable = in_session_serving(data_dir)
    nightly = list(batch.notes)
    if batch.unavailable:
        nightly.insert(0, f"batch-only pattern time not measured: {batch.unavailable}")
    return LatencyImpact(
        metrics=counts.metrics, denominators=counts.denominators, sales_delay_s=counts.sales_delay_s,
        bots_per_hour=counts.bots_per_hour, enforcement_s=patterns.enforcement_s,
        enforcement_after_s=patterns.enforcement_after_s, learned_rules=patterns.rules, labels=decided.labels,
        consent_source=CONSENT_FROM_TRUTH if consent is not None else CONSENT_NOT_RECOMPUTED, nightly=nightly,
        events=len(rows), days=sorted({r["event_ts"].date().isoformat() for r in rows}),
        lake_files_pending=decided.lake_files_pending, live=live, live_unavailable=live_unavailable)
