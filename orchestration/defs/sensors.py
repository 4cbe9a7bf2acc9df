"""Sensors and the schedule: the landing zone and the hot path's signals start batch runs.

* ``landing_zone_sensor``: new Parquet files → one run of ``landing_zone_day`` per affected day partition, and a
  run of the ``loop`` job tagged with the affected days (at most one loop in flight, at most one request per
  ``LOOP_MIN_INTERVAL_S``; days that arrive meanwhile stay pending in the cursor and go with the next request).
* ``quarantine_rate_sensor``: "real-time trigger, batch execution": when the share of decided events the hot path
  quarantined in the newly landed files jumps against its running baseline (a new bot wave the current rules
  partly see), it starts the loop early instead of waiting for the nightly retrain.
* ``novelty_sensor``: a new pattern in the first mile's own features (the distribution of any session feature in
  newly landed decided events shifts against its running baseline: PSI ≥ 0.25), or shadow rules the hot path
  recorded enough hits for to be judged, starts the loop within minutes; a shift that persists asks again every
  ``NOVELTY_MIN_INTERVAL_S`` while it lasts (the first run may find its sessions not yet settled enough to label).
* ``daily_retrain``: the loop every night at 03:00 UTC.

All of them are on by default (the daemon of ``firstmile up`` runs them) and none requests the loop when no broker is
configured (``KAFKA_BROKER_ADDRESS`` unset, as under ``firstmile ui`` on the demo's data): its publish step could
only fail.

Why the dbt models are not day-partitioned: every mart (sessions, identity graph, profiles, bot labels) is a
function of the whole history, and sessions and identities cross midnight; partitioning them would need
incremental models with look-back windows in ``dbt_project/``. The day partitions live on a light asset
(``landing_zone_day``: what landed per day, per stream) and the loop runs carry the days as a tag.
"""


import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from ml.candidate import GateConfig
from orchestration.defs.jobs import LOOP_JOB, loop_job
from orchestration.landing import (
    DECIDED_STREAMS,
    LandingCursor,
    QuarantineCursor,
    RateJump,
    landed_files,
    quarantine_counts,
)
from orchestration.novelty import DriftThresholds, NoveltyCursor, read_window, top_shift
from orchestration.resources import FirstmileResource

OWNER = "team:first-mile"
#: At most one loop request per this many seconds from the landing sensor (the nightly schedule and the
#: quarantine-rate sensor are not limited by it).
LOOP_MIN_INTERVAL_S = 15 * 60
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]

#: Day partitions of the landing zone. Backfilled orders can be a year old; ``end_offset=1`` includes today.
DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)


@dg.asset(partitions_def=DAYS, deps=["landing_zone"], group_name="streaming", kinds={"parquet"}, owners=[OWNER])
def landing_zone_day(context: dg.AssetExecutionContext, firstmile: FirstmileResource) -> dg.MaterializeResult:
    """One day of the landing zone: files and rows per stream, and the share of decided events quarantined."""
    day = context.partition_key
    lake = firstmile.layout.lake
    files = [f for f in landed_files(lake) if f.day == day]
    rows: dict[str, int] = {}
    for f in files:
        rows[f.stream] = rows.get(f.stream, 0) + f.rows(lake)
    quarantined, decided = quarantine_counts(lake, files)
    return dg.MaterializeResult(metadata={
        "files": len(files), "rows": dg.MetadataValue.json(rows),
        "decided_events": decided, "quarantine_rate": (quarantined / decided) if decided else 0.0,
        "lake_path": dg.MetadataValue.path(str(lake))})


landing_zone_day_job = dg.define_asset_job("landing_zone_day_job", selection=[landing_zone_day],
                                           partitions_def=DAYS,
                                           description="Summarize one day partition of the landing zone")


def _loop_in_flight(instance: dg.DagsterInstance) -> bool:
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=LOOP_JOB, statuses=IN_FLIGHT), limit=1))


@dg.sensor(jobs=[landing_zone_day_job, loop_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="New Parquet files in the landing zone → their day partitions, and the loop")
def landing_zone_sensor(context: dg.SensorEvaluationContext, firstmile: FirstmileResource
                        ) -> Iterator[dg.RunRequest | dg.SkipReason]:
    cursor = LandingCursor.loads(context.cursor)
    new = landed_files(firstmile.layout.lake, after=cursor.mark)
    days = sorted({f.day for f in new})
    requested = False
    for day in days:
        if not DAYS.has_partition_key(day):
            context.log.warning("landing zone day %s is outside the day partitions (%s..): not summarized",
                                day, DAYS.start.date())
            continue
        requested = True
        yield dg.RunRequest(run_key=f"landing_zone_day:{day}:{new[-1].mark.mtime_ns}", partition_key=day,
                            job_name=landing_zone_day_job.name, tags={"firstmile/trigger": "landing_zone"})
    pending = tuple(sorted(set(cursor.pending_days) | set(days)))
    now = time.time()
    if pending:
        if firstmile.streaming_settings().embedded:
            context.log.info("no broker configured (KAFKA_BROKER_ADDRESS): the loop is not requested")
            pending = ()
        elif _loop_in_flight(context.instance):
            context.log.info("a loop run is in flight; days %s wait for the next request", ",".join(pending))
        elif now - cursor.last_loop_at < LOOP_MIN_INTERVAL_S:
            context.log.info("last loop request %.0fs ago; days %s wait", now - cursor.last_loop_at,
                             ",".join(pending))
        else:
            requested = True
            yield dg.RunRequest(run_key=f"loop:{','.join(pending)}:{int(now)}", job_name=LOOP_JOB,
                                tags={"firstmile/trigger": "landing_zone", "firstmile/days": ",".join(pending)})
            pending, cursor.last_loop_at = (), now
    context.update_cursor(LandingCursor(new[-1].mark if new else cursor.mark, pending,
                                        cursor.last_loop_at).dumps())
    if not requested:
        yield dg.SkipReason(f"no new files in the landing zone (pending days: {','.join(pending) or 'none'})")


@dg.sensor(job=loop_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="The quarantine rate in newly landed files jumped vs its baseline → run the loop now")
def quarantine_rate_sensor(context: dg.SensorEvaluationContext, firstmile: FirstmileResource
                           ) -> Iterator[dg.RunRequest | dg.SkipReason]:
    cursor = QuarantineCursor.loads(context.cursor)
    lake = firstmile.layout.lake
    new = landed_files(lake, streams=DECIDED_STREAMS, after=cursor.mark)
    if not new:
        yield dg.SkipReason("no new decided events in the landing zone")
        return
    quarantined, decided = quarantine_counts(lake, new)
    rate = quarantined / decided if decided else 0.0
    thresholds = RateJump()
    signal: dict[str, Any] = {"recent_rate": round(rate, 4), "recent_decided": decided,
                              "baseline_rate": round(cursor.baseline_rate, 4),
                              "baseline_decided": cursor.baseline_decided}
    jumped = thresholds.jumped(baseline_rate=cursor.baseline_rate, baseline_n=cursor.baseline_decided,
                               recent_rate=rate, recent_n=decided)
    if decided < thresholds.min_recent and not jumped:
        # too few events to judge: keep accumulating them into the next window (the cursor does not move)
        yield dg.SkipReason(f"only {decided} new decided events (< {thresholds.min_recent}); waiting for more")
        return
    context.update_cursor(QuarantineCursor(new[-1].mark, cursor.baseline_quarantined + quarantined,
                                           cursor.baseline_decided + decided).dumps())
    if not jumped:
        yield dg.SkipReason(f"quarantine rate {rate:.3f} vs baseline {cursor.baseline_rate:.3f}: no jump")
        return
    if firstmile.streaming_settings().embedded:
        yield dg.SkipReason(f"quarantine rate jumped ({signal}) but no broker is configured to publish to")
        return
    if _loop_in_flight(context.instance):
        # the run in flight builds from the same landing zone; queueing one per tick would stack them up
        yield dg.SkipReason(f"quarantine rate jumped ({signal}) but a loop run is in flight")
        return
    context.log.warning("quarantine rate jumped: %s", signal)
    yield dg.RunRequest(run_key=f"quarantine_rate:{new[-1].mark.mtime_ns}", job_name=LOOP_JOB,
                        tags={"firstmile/trigger": "quarantine_rate",
                              **{f"firstmile/{k}": str(v) for k, v in signal.items()}})


#: At most one loop request per this many seconds from the novelty sensor.
NOVELTY_MIN_INTERVAL_S = 120


@dg.sensor(job=loop_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A new pattern in the first mile's features, or shadow rules ready to judge → the loop now")
def novelty_sensor(context: dg.SensorEvaluationContext, firstmile: FirstmileResource
                   ) -> Iterator[dg.RunRequest | dg.SkipReason]:
    cursor = NoveltyCursor.loads(context.cursor)
    lake = firstmile.layout.lake
    new = landed_files(lake, streams=DECIDED_STREAMS, after=cursor.mark)
    if not new:
        yield dg.SkipReason("no new decided events in the landing zone")
        return
    thresholds = DriftThresholds()
    window = read_window(lake, new)
    hits = dict(cursor.shadow_hits)
    for rule_id, n in window.shadow_hits.items():
        hits[rule_id] = hits.get(rule_id, 0) + n
    ready = sorted(r for r, n in hits.items() if n >= GateConfig().min_shadow_support)
    if cursor.baseline.ready and window.rows < thresholds.min_recent and not ready:
        # too few rows to judge a distribution: keep accumulating them into the next window (the mark stays)
        yield dg.SkipReason(f"only {window.rows} new decided events (< {thresholds.min_recent}); waiting for more")
        return
    judged = cursor.baseline.ready
    feature, psi = top_shift(cursor.baseline.psi(window.features)) if judged else ("", 0.0)
    cursor.baseline.fold(window.features, min_baseline=thresholds.min_baseline, adapt=thresholds.adapt)
    cursor.mark, cursor.shadow_hits = new[-1].mark, hits
    drift = judged and psi >= thresholds.psi_threshold
    signal = {"rows": window.rows, "top_feature": feature, "psi": round(psi, 3),
              "shadow_rules_ready": ",".join(ready)}
    reason = ""
    if not (drift or ready):
        context.update_cursor(cursor.dumps())
        if judged:
            yield dg.SkipReason(f"no novelty ({signal})")
        elif cursor.baseline.ready:
            yield dg.SkipReason(f"feature baseline fixed on {cursor.baseline.rows} rows")
        else:
            yield dg.SkipReason(f"building the feature baseline ({cursor.baseline.rows} of "
                                f"{thresholds.min_baseline} rows)")
        return
    now = time.time()
    if firstmile.streaming_settings().embedded:
        reason = "no broker is configured to publish to"
    elif _loop_in_flight(context.instance):
        reason = "a loop run is in flight"
    elif now - cursor.last_request_at < NOVELTY_MIN_INTERVAL_S:
        reason = f"last novelty request {now - cursor.last_request_at:.0f}s ago"
    if reason:
        context.update_cursor(cursor.dumps())
        yield dg.SkipReason(f"novelty {signal}, but {reason}")
        return
    context.log.warning("novelty in the first mile's events: %s", signal)
    cursor.shadow_hits, cursor.last_request_at = {}, now
    context.update_cursor(cursor.dumps())
    yield dg.RunRequest(run_key=f"novelty:{new[-1].mark.mtime_ns}", job_name=LOOP_JOB,
                        tags={"firstmile/trigger": "novelty" if drift else "shadow_evidence",
                              **{f"firstmile/{k}": str(v) for k, v in signal.items()}})


@dg.schedule(job=loop_job, cron_schedule="0 3 * * *", execution_timezone="UTC", name="daily_retrain",
             default_status=dg.DefaultScheduleStatus.RUNNING, description="The loop every night at 03:00 UTC")
def daily_retrain(context: dg.ScheduleEvaluationContext, firstmile: FirstmileResource
                  ) -> dg.RunRequest | dg.SkipReason:
    if firstmile.streaming_settings().embedded:
        return dg.SkipReason("no broker configured (KAFKA_BROKER_ADDRESS): the loop's publish step needs one")
    scheduled = context.scheduled_execution_time
    return dg.RunRequest(run_key=f"daily_retrain:{scheduled.isoformat() if scheduled else 'now'}",
                         tags={"firstmile/trigger": "daily_retrain"})


SENSORS = [landing_zone_sensor, quarantine_rate_sensor, novelty_sensor]
