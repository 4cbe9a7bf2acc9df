"""The demo's two stories about people: one identity merge and one erasure request going through the loop.

* **Merge.** A person signs in on device A (user id and email); later, on device B, they browse, grant every purpose,
  revoke marketing, and leave their email without signing in. The edge keeps B as its own anonymous profile; the
  warehouse links B to A through the email (``identity_merges``), and the loop's ``published_control`` publishes the
  merge with B's consent. B's first event of day 2 is attributed to A's profile, and marketing stays denied: a
  merge never widens consent.
* **Erasure.** After day 1, one simulated user asks to be forgotten (``SUPPRESS_WITH_DELETE``, as
  ``POST /v1/regulations`` records it): the edge suppresses their next event at once; the regulations sensor starts
  the ``erasure`` job (lake rewritten, warehouse rebuilt, ML artefacts checked, done). Their day-2 events are
  suppressed at the edge, including those of devices only the warehouse knew.

The report names the merged profiles (synthetic) but never the erased person's ids: only the simulator's actor
label, the request id and counts.
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streaming.simulator import SimEvent

MERGE_ACTOR = "demo-merge"
MERGE_USER = "usr_demo_merge"
MERGE_EMAIL = "ada.merge@firstmile.example"
DEVICE_A = "7d1e5a3c-0a4b-4c1e-9d2f-demo0merge0a"
DEVICE_B = "7d1e5a3c-0a4b-4c1e-9d2f-demo0merge0b"
ALL = {"analytics": True, "personalization": True, "marketing": True, "sales": True}
NO_MARKETING = {**ALL, "marketing": False}


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _us_context(events: list[SimEvent]) -> dict[str, Any]:
    for ev in events:
        if ev.truth.get("actor") == "human" and ev.truth.get("country") == "US" and ev.payload["type"] == "page":
            return copy.deepcopy(ev.payload["context"])
    raise RuntimeError("the simulated day has no US visitor to borrow a browser context from")


@dataclass(frozen=True)
class _Step:
    device: str
    offset_s: float
    kind: str  # page | consent | identify | track
    consent: dict[str, bool] | None = None  # the person's consent after this event (the truth)
    user_id: str | None = None
    decision: dict[str, bool] | None = None


#: (day, steps): A signs in on day 1 morning; B browses, decides and leaves the email in the afternoon; B returns.
_STORY: list[tuple[int, list[_Step]]] = [
    (0, [_Step(DEVICE_A, 9 * 3600, "page"),
         _Step(DEVICE_A, 9 * 3600 + 20, "identify", user_id=MERGE_USER),
         _Step(DEVICE_A, 9 * 3600 + 60, "page"),
         _Step(DEVICE_B, 15 * 3600, "page"),
         _Step(DEVICE_B, 15 * 3600 + 30, "consent", consent=ALL, decision=ALL),
         _Step(DEVICE_B, 15 * 3600 + 60, "consent", consent=NO_MARKETING, decision={"marketing": False}),
         _Step(DEVICE_B, 15 * 3600 + 120, "identify", consent=NO_MARKETING),
         _Step(DEVICE_B, 15 * 3600 + 180, "track", consent=NO_MARKETING)]),
    (1, [_Step(DEVICE_B, 10 * 3600, "page", consent=NO_MARKETING),
         _Step(DEVICE_B, 10 * 3600 + 40, "track", consent=NO_MARKETING)]),
]


def _event(step: _Step, day: int, at: datetime, context: dict[str, Any], seq: int) -> SimEvent:
    message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"firstmile-demo-merge:{day}:{seq}"))
    payload: dict[str, Any] = {"type": step.kind, "messageId": message_id, "anonymousId": step.device,
                               "timestamp": _iso(at), "sentAt": _iso(at + timedelta(milliseconds=150)),
                               "context": context}
    if step.kind == "page":
        payload.update(name="Home", properties={"path": "/", "url": "https://shop.firstmile.example/"})
    elif step.kind == "track":
        payload.update(event="Product Viewed", properties={"category": "books", "price": 12.5, "currency": "USD"})
    elif step.kind == "consent":
        payload.update(consent=step.decision, properties={"source": "preference_center"})
    elif step.kind == "identify":
        payload["traits"] = {"email": MERGE_EMAIL}
        if step.user_id:
            payload["userId"] = step.user_id
    truth = {"actor": "human", "actor_id": MERGE_ACTOR, "bot_kind": None, "user_id": MERGE_USER, "region": "US",
             "country": "US", "intent": "low", "will_convert": False,
             "device": 0 if step.device == DEVICE_A else 1, "session": f"{MERGE_ACTOR}:{day}:{step.device[-1]}",
             "clock_skew_s": 0.0, "backfill": False, "consent": step.consent, "event_id": message_id, "day": day}
    return SimEvent(payload=payload, truth=truth, send_at=at)


def add_merge_story(days: list[list[SimEvent]]) -> None:
    """Put the merge story's events into the simulated days (in send order), a US browser context borrowed."""
    for day, steps in _STORY:
        if day >= len(days) or not days[day]:
            continue
        start = days[day][0].send_at.replace(hour=0, minute=0, second=0, microsecond=0)
        context = _us_context(days[day])
        story = [_event(s, day, start + timedelta(seconds=s.offset_s), context, i) for i, s in enumerate(steps)]
        days[day] = sorted(days[day] + story, key=lambda ev: ev.send_at)


def pick_erasure_subject(days: list[list[SimEvent]]) -> tuple[str, str] | None:
    """A simulated user who signed in on day 1 (the edge and the warehouse know their user id) and comes back on
    day 2, with the most day-2 events: ``(actor label, user id as sent)``."""
    signed_in = {ev.truth["actor_id"]: ev.payload["userId"] for ev in days[0]
                 if ev.truth.get("actor") == "human" and ev.payload.get("userId")
                 and ev.truth.get("actor_id") != MERGE_ACTOR}
    returning = Counter(ev.truth["actor_id"] for ev in days[1] if ev.truth.get("actor_id") in signed_in) \
        if len(days) > 1 else Counter()
    if not returning:
        return None
    actor = min(returning, key=lambda a: (-returning[a], a))
    return actor, signed_in[actor]


def event_ids(days: list[list[SimEvent]], *, actor: str, day: int) -> list[str]:
    return [ev.payload["messageId"] for ev in days[day] if ev.truth.get("actor_id") == actor]


# --- the loop's side: the request, the erasure run its sensor starts, what the report shows ------------------------

def request_erasure(broker_address: str, settings: Any, user_id: str) -> Any:
    """What ``POST /v1/regulations`` does for ``SUPPRESS_WITH_DELETE`` of one user id (the collector is not part of the
    demo): the id pseudonymized as events carry it, published to ``control.erasure``, the request recorded on
    ``control.regulations`` (states received, suppressed_at_edge)."""
    from streaming import pii
    from streaming import settings as topics
    from streaming.regulations import new_regulation, suppress_at_edge

    subject = pii.pseudonymous_id(user_id, settings.pii_secret.encode("utf-8")) or user_id
    return suppress_at_edge(broker_address, settings.topic(topics.CONTROL_ERASURE),
                            settings.topic(topics.CONTROL_REGULATIONS),
                            new_regulation("SUPPRESS_WITH_DELETE", "USER_ID", [subject]))


def run_requested_erasures(defs: Any, instance: Any, firstmile: Any, run_config: dict[str, Any]) -> list[bool]:
    """One tick of ``regulations_sensor``, and the ``erasure`` runs it requests executed in-process on ``instance``
    (as the daemon would launch them under ``firstmile up``); whether each succeeded."""
    import dagster as dg

    sensor = defs.get_sensor_def("regulations_sensor")
    context = dg.build_sensor_context(instance=instance, resources={"firstmile": firstmile})
    requests = [r for r in sensor(context) if isinstance(r, dg.RunRequest)]
    job = defs.resolve_job_def("erasure")
    return [job.execute_in_process(instance=instance, run_config={**run_config, **(r.run_config or {})},
                                   tags=r.tags, raise_on_error=False).success for r in requests]


def published_merge(duckdb_path: Any) -> dict[str, Any]:
    """The story's merge as the warehouse found it (and ``published_control`` published it)."""
    from warehouse.control import read_merges

    merge = next((m for m in read_merges(duckdb_path) if m.from_profile_id == DEVICE_B), None)
    return {} if merge is None else {"from": merge.from_profile_id, "into": merge.to_profile_id,
                                     "consent": merge.consent}


def after_day_two(con: Any, lake: Any, *, merge: dict[str, Any], erased_day1: list[str], erased_day2: list[str]
                  ) -> dict[str, Any]:
    """What the warehouse shows after day 2 (``stg_decided``): where device B's events went, and what became of the
    erased person's events (day 1: gone from the lake files and the warehouse; day 2: suppressed at the edge)."""
    from orchestration.demo import lake_event_ids

    out: dict[str, Any] = {}
    if merge:
        rows = con.execute("""
            select profile_id, json_extract_string(ledger, '$.identity.merged_from'),
                   coalesce(json_extract_string(consent, '$.marketing'), 'null'), stream
            from stg_decided where device_id = ? and event_date = (select max(event_date) from stg_decided)
            order by received_at""", [DEVICE_B]).fetchall()
        out["merge_day2"] = [{"profile_id": p, "merged_from": f, "marketing": m, "stream": s} for p, f, m, s in rows]
    if erased_day1 or erased_day2:
        def outcomes(ids: list[str]) -> dict[str, int]:
            if not ids:
                return {}
            found = con.execute("""
                select stream || coalesce(':' || json_extract_string(ledger, '$.reason'), ''), count(*)
                from stg_decided where sent_event_id in (select unnest(?)) group by all""", [ids]).fetchall()
            return {k: int(n) for k, n in found}

        out["erased_day1"] = {"sent": len(erased_day1), "in_warehouse": outcomes(erased_day1),
                              "in_lake_files": len(lake_event_ids(lake) & set(erased_day1))}
        out["erased_day2"] = {"sent": len(erased_day2), "in_warehouse": outcomes(erased_day2)}
    return out


def run_erasure(settings: Any, broker_address: str, streaming: Any, reg: Any, actor: str) -> dict[str, Any]:
    """One tick of the regulations sensor and the ``erasure`` run it requests, on the data directory's instance (the
    UI shows the run); the request's states as ``control.regulations`` holds them after it."""
    from dagster import DagsterInstance

    from orchestration.demo import QUIET, _definitions, lake_accounted
    from streaming import settings as topics
    from streaming.regulations import read_regulations

    defs = _definitions(settings, broker_address=broker_address, topic_prefix=streaming.topic_prefix)
    before = lake_accounted(settings.layout.lake)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        ok = run_requested_erasures(defs, instance, (defs.resources or {})["firstmile"], QUIET)
    if ok != [True]:
        raise RuntimeError(f"the erasure run of {reg.id} did not succeed ({ok}); see the run in the Dagster UI")
    final = {r.id: r for r in read_regulations(broker_address, streaming.topic(topics.CONTROL_REGULATIONS))}[reg.id]
    return {"id": final.id, "type": final.regulation_type, "actor": actor, "status": final.status,
            "states": [(s.state, s.at, _short_detail(s.detail)) for s in final.states],
            "lake_inputs_erased": before - lake_accounted(settings.layout.lake)}


def _short_detail(detail: dict[str, Any] | None) -> str:
    keys = ("subject_ids", "rows_removed", "files_rewritten", "files_deleted", "runs", "logged_models",
            "model_versions", "artifact_files", "hits")
    parts = [f"{k} {detail[k]}" for k in keys if detail and k in detail]
    found = (detail or {}).get("identifiers")
    if isinstance(found, dict):  # lake_rewritten: what the warehouse found with the subject, and told the edge
        parts.append(f"identifiers found {found['identifiers']} ({found['published']} new to the edge)")
    return ", ".join(parts)


def people_lines(merge: dict[str, Any], erasure: dict[str, Any]) -> list[str]:
    """The demo report's lines about the two stories."""
    lines = [""]
    if merge:
        day2 = merge.get("day2", [])
        lines.append(f"identity merge found by the warehouse, published to control.identity: {merge['from']} → "
                     f"{merge['into']}, carrying the merged device's consent {merge['consent']}")
        lines.append(f"  day 2, the merged device's events: {len(day2)}, attributed to "
                     f"{sorted({r['profile_id'] for r in day2})} (ledger: merged from "
                     f"{sorted({str(r['merged_from']) for r in day2})}); marketing granted: "
                     f"{sorted({r['marketing'] for r in day2})} (a merge never widens consent)")
    if erasure:
        lines.append(f"erasure request {erasure['id']} ({erasure['type']}, simulated user {erasure['actor']}): "
                     f"{erasure['status']}")
        for state, at, detail in erasure["states"]:
            lines.append(f"  {at}  {state:<22}{detail}")
        d1, d2 = erasure.get("day1", {}), erasure.get("day2", {})
        lines.append(f"  day 1: {d1.get('sent', 0)} events sent before the request; left in lake files: "
                     f"{d1.get('in_lake_files', '?')}, in the warehouse: {d1.get('in_warehouse') or 0}")
        lines.append(f"  day 2: {d2.get('sent', 0)} events sent after it; in the warehouse: "
                     f"{d2.get('in_warehouse') or 0} (suppressed at the edge, identifiers dropped)")
    return lines if len(lines) > 1 else []
