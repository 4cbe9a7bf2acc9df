"""Sensors on a real landing zone (written with warehouse.lake.write_batch), evaluated with build_sensor_context and
their cursors, on a real ephemeral Dagster instance."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.sensors import DAYS, landing_zone_day, landing_zone_sensor, quarantine_rate_sensor
from orchestration.landing import LandingCursor, QuarantineCursor
from orchestration.resources import FirstmileResource
from warehouse.lake import write_batch

DAY1 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def _records(n: int, *, at: datetime, bot: bool = False) -> list[dict]:
    return [{"event_id": uuid.uuid4().hex, "type": "track", "event_name": "Product Viewed",
             "device_id": f"d{i % 7}", "profile_id": f"p{i % 7}", "event_ts": (at + timedelta(seconds=i)).isoformat(),
             "received_at": (at + timedelta(seconds=i)).isoformat(), "is_bot": bot, "policy_version": 1,
             "raw_partition": 0, "raw_offset": i} for i in range(n)]


def _land(lake: Path, stream: str, n: int, *, at: datetime) -> list[Path]:
    paths = write_batch(lake, stream, _records(n, at=at, bot=stream == "quarantine"))
    # distinct, increasing mtimes even on coarse filesystems
    _land.clock = getattr(_land, "clock", time.time_ns()) + 1_000_000  # type: ignore[attr-defined]
    for path in paths:
        os.utime(path, ns=(_land.clock, _land.clock))  # type: ignore[attr-defined]
    return paths


def _resource(data_dir: Path, *, broker: str = "127.0.0.1:9092") -> FirstmileResource:
    return FirstmileResource(data_dir=str(data_dir), kafka_broker_address=broker)


def _evaluate(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None,
              resource: FirstmileResource) -> tuple[list[dg.RunRequest], str | None, list[str]]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"firstmile": resource})
    result = list(sensor(context))
    requests = [r for r in result if isinstance(r, dg.RunRequest)]
    skips = [r.skip_message for r in result if isinstance(r, dg.SkipReason)]
    return requests, context.cursor, skips


@pytest.fixture()
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def test_landing_sensor_requests_the_affected_day_partitions_and_the_loop_tagged_with_the_days(tmp_path, instance):
    lake = tmp_path / "lake"
    resource = _resource(tmp_path)
    requests, cursor, skips = _evaluate(landing_zone_sensor, instance, None, resource)
    assert requests == [] and skips and "no new files" in skips[0]

    _land(lake, "events", 5, at=DAY1)
    _land(lake, "quarantine", 2, at=DAY1)
    requests, cursor, _ = _evaluate(landing_zone_sensor, instance, cursor, resource)
    partitions = [r.partition_key for r in requests if r.job_name == "landing_zone_day_job"]
    loops = [r for r in requests if r.job_name == "loop"]
    assert partitions == ["2026-11-02"]
    assert len(loops) == 1 and loops[0].tags["firstmile/days"] == "2026-11-02"
    assert LandingCursor.loads(cursor).mark is not None

    # nothing new: the cursor holds, nothing is requested again
    requests, cursor2, skips = _evaluate(landing_zone_sensor, instance, cursor, resource)
    assert requests == [] and cursor2 == cursor

    # a late event for day 1 and new day-2 traffic: both partitions; the loop waits (requested < 15 min ago) and
    # keeps the days pending in the cursor
    _land(lake, "events", 3, at=DAY1 + timedelta(hours=5))
    _land(lake, "suppressed", 3, at=DAY2)
    requests, cursor3, _ = _evaluate(landing_zone_sensor, instance, cursor, resource)
    assert sorted(r.partition_key for r in requests) == ["2026-11-02", "2026-11-03"]
    assert all(r.job_name == "landing_zone_day_job" for r in requests)
    assert LandingCursor.loads(cursor3).pending_days == ("2026-11-02", "2026-11-03")

    # once the interval has passed, the pending days go with the next loop request even without new files
    aged = LandingCursor.loads(cursor3)
    aged.last_loop_at -= 3600
    requests, cursor4, _ = _evaluate(landing_zone_sensor, instance, aged.dumps(), resource)
    assert [(r.job_name, r.tags["firstmile/days"]) for r in requests] == [("loop", "2026-11-02,2026-11-03")]
    assert LandingCursor.loads(cursor4).pending_days == ()


def test_landing_sensor_does_not_request_the_loop_without_a_broker_to_publish_to(tmp_path, instance):
    _land(tmp_path / "lake", "events", 5, at=DAY1)
    requests, _, _ = _evaluate(landing_zone_sensor, instance, None, _resource(tmp_path, broker="unset"))
    assert [r.job_name for r in requests] == ["landing_zone_day_job"]


def test_landing_sensor_holds_the_loop_while_one_is_in_flight(tmp_path, instance):
    from dagster._core.test_utils import create_run_for_test

    create_run_for_test(instance, job_name="loop", status=dg.DagsterRunStatus.STARTED)
    _land(tmp_path / "lake", "events", 5, at=DAY1)
    requests, cursor, _ = _evaluate(landing_zone_sensor, instance, None, _resource(tmp_path))
    assert [r.job_name for r in requests] == ["landing_zone_day_job"]
    assert LandingCursor.loads(cursor).pending_days == ("2026-11-02",)


def test_quarantine_rate_sensor_triggers_the_loop_early_when_the_rate_jumps_against_its_baseline(tmp_path, instance):
    lake = tmp_path / "lake"
    resource = _resource(tmp_path)
    # baseline: 5 % quarantined
    _land(lake, "events", 570, at=DAY1)
    _land(lake, "quarantine", 30, at=DAY1)
    requests, cursor, skips = _evaluate(quarantine_rate_sensor, instance, None, resource)
    assert requests == [] and "no jump" in skips[0]
    base = QuarantineCursor.loads(cursor)
    assert (base.baseline_quarantined, base.baseline_decided) == (30, 600)

    # ordinary traffic at the same rate: no run
    _land(lake, "events", 285, at=DAY1 + timedelta(hours=1))
    _land(lake, "quarantine", 15, at=DAY1 + timedelta(hours=1))
    requests, cursor, skips = _evaluate(quarantine_rate_sensor, instance, cursor, resource)
    assert requests == [] and "no jump" in skips[0]

    # too few new events to judge: the window keeps growing, the cursor does not move
    _land(lake, "quarantine", 40, at=DAY2)
    requests, cursor2, skips = _evaluate(quarantine_rate_sensor, instance, cursor, resource)
    assert requests == [] and cursor2 == cursor and "waiting for more" in skips[0]

    # a bot wave: 40 + 100 of 340 new decided events quarantined (41 %) vs a 5 % baseline → the loop, now
    _land(lake, "quarantine", 100, at=DAY2 + timedelta(minutes=5))
    _land(lake, "events", 200, at=DAY2 + timedelta(minutes=5))
    requests, cursor3, _ = _evaluate(quarantine_rate_sensor, instance, cursor2, resource)
    assert len(requests) == 1 and requests[0].job_name == "loop"
    tags = requests[0].tags
    assert tags["firstmile/trigger"] == "quarantine_rate"
    assert float(tags["firstmile/recent_rate"]) == pytest.approx(140 / 340, abs=1e-3)
    assert float(tags["firstmile/baseline_rate"]) == pytest.approx(0.05, abs=1e-3)
    # the wave is folded into the baseline: the same level next time is not a jump again
    assert QuarantineCursor.loads(cursor3).baseline_decided == 900 + 340


def test_landing_zone_day_summarizes_one_partition(tmp_path):
    lake = tmp_path / "lake"
    _land(lake, "events", 8, at=DAY1)
    _land(lake, "quarantine", 2, at=DAY1)
    _land(lake, "events", 4, at=DAY2)
    result = dg.materialize([landing_zone_day], partition_key="2026-11-02",
                            resources={"firstmile": _resource(tmp_path)})
    metadata = result.asset_materializations_for_node("landing_zone_day")[0].metadata
    assert metadata["rows"].value == {"events": 8, "quarantine": 2}
    assert metadata["quarantine_rate"].value == pytest.approx(0.2)
    assert DAYS.has_partition_key("2026-11-02")


def test_daily_retrain_runs_the_loop_nightly_only_when_a_broker_can_receive_the_policy(tmp_path, instance):
    from orchestration.defs.sensors import daily_retrain

    at = datetime(2026, 11, 3, 3, 0, tzinfo=UTC)
    with_broker = dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                            resources={"firstmile": _resource(tmp_path)})
    request = daily_retrain.evaluate_tick(with_broker).run_requests[0]
    assert request.tags["firstmile/trigger"] == "daily_retrain"
    assert daily_retrain.job_name == "loop" and daily_retrain.cron_schedule == "0 3 * * *"
    without = dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                        resources={"firstmile": _resource(tmp_path, broker="unset")})
    assert "no broker" in daily_retrain.evaluate_tick(without).skip_message
