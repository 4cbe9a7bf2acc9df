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


def test_quarantine_rate_and_novelty_sensors_do_not_stack_loop_runs_while_one_is_in_flight(tmp_path, instance):
    from dagster._core.test_utils import create_run_for_test

    from orchestration.defs.sensors import novelty_sensor

    lake = tmp_path / "lake"
    resource = _resource(tmp_path)
    _land(lake, "events", 570, at=DAY1)
    _land(lake, "quarantine", 30, at=DAY1)
    _land_records(lake, "events", _featured(600, at=DAY1, seed=1))
    _, q_cursor, _ = _evaluate(quarantine_rate_sensor, instance, None, resource)
    _, n_cursor, _ = _evaluate(novelty_sensor, instance, None, resource)
    create_run_for_test(instance, job_name="loop", status=dg.DagsterRunStatus.STARTED)
    _land(lake, "quarantine", 150, at=DAY2)
    _land(lake, "events", 200, at=DAY2)
    _land_records(lake, "events", _featured(300, at=DAY2, seed=4, hoarders=0.5))
    requests, _, skips = _evaluate(quarantine_rate_sensor, instance, q_cursor, resource)
    assert requests == [] and "in flight" in skips[0], skips
    requests, _, skips = _evaluate(novelty_sensor, instance, n_cursor, resource)
    assert requests == [] and "in flight" in skips[0], skips


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


def _featured(n: int, *, at: datetime, seed: int, hoarders: float = 0.0, shadow: str | None = None) -> list[dict]:
    """Decided events with session features: shoppers browse (cart values of tens), a hoarder wave puts hundreds
    in the cart within seconds; ``shadow`` names a shadow rule the hot path recorded on the hoarders."""
    import random

    from streaming.sessions import FEATURES

    rng = random.Random(seed)
    out = []
    for i, rec in enumerate(_records(n, at=at)):
        hoarder = rng.random() < hoarders
        features = {name: rng.uniform(0, 5) for name in FEATURES}
        features["cart_value"] = rng.uniform(600, 2000) if hoarder else rng.choice([0.0, 0.0, rng.uniform(5, 80)])
        features["session_duration_s"] = rng.uniform(1, 40) if hoarder else rng.uniform(30, 900)
        ledger = {"shadow_rules_fired": [shadow]} if hoarder and shadow else {}
        out.append({**rec, "event_id": f"{seed}-{i}", "features": features, "ledger": ledger})
    return out


def _land_records(lake: Path, stream: str, records: list[dict]) -> None:
    paths = write_batch(lake, stream, records)
    _land.clock = getattr(_land, "clock", time.time_ns()) + 1_000_000  # type: ignore[attr-defined]
    for path in paths:
        os.utime(path, ns=(_land.clock, _land.clock))  # type: ignore[attr-defined]


def test_novelty_sensor_starts_the_loop_when_the_first_miles_features_shift_and_again_for_shadow_evidence(
        tmp_path, instance):
    from orchestration.defs.sensors import novelty_sensor
    from orchestration.novelty import NoveltyCursor

    lake = tmp_path / "lake"
    resource = _resource(tmp_path)
    # the baseline: ordinary shoppers
    _land_records(lake, "events", _featured(600, at=DAY1, seed=1))
    requests, cursor, skips = _evaluate(novelty_sensor, instance, None, resource)
    assert requests == [] and "baseline fixed on 600 rows" in skips[0]
    assert NoveltyCursor.loads(cursor).baseline.ready

    # more of the same: judged, no shift
    _land_records(lake, "events", _featured(300, at=DAY1 + timedelta(hours=1), seed=2))
    requests, cursor, skips = _evaluate(novelty_sensor, instance, cursor, resource)
    assert requests == [] and "no novelty" in skips[0], skips

    # too few rows to judge: the window keeps growing, the cursor does not move
    _land_records(lake, "events", _featured(50, at=DAY2, seed=3, hoarders=0.4))
    requests, held, skips = _evaluate(novelty_sensor, instance, cursor, resource)
    assert requests == [] and held == cursor and "waiting for more" in skips[0]

    # a wave of hoarders, 40 % of the new events: the cart values and durations shift → the loop, now
    _land_records(lake, "events", _featured(250, at=DAY2 + timedelta(minutes=5), seed=4, hoarders=0.4))
    requests, cursor, _ = _evaluate(novelty_sensor, instance, held, resource)
    assert len(requests) == 1 and requests[0].job_name == "loop", requests
    tags = requests[0].tags
    assert tags["firstmile/trigger"] == "novelty"
    assert tags["firstmile/top_feature"] in ("f_cart_value", "f_session_duration_s")
    assert float(tags["firstmile/psi"]) >= 0.25

    # the policy now shadows a rule on them: once it has enough recorded hits, the loop is asked to judge it —
    # but not within NOVELTY_MIN_INTERVAL_S of the last request, and the hits are kept meanwhile
    _land_records(lake, "events", _featured(300, at=DAY2 + timedelta(minutes=10), seed=5, hoarders=0.1,
                                           shadow="bot.mined.0.v2"))
    requests, cursor, skips = _evaluate(novelty_sensor, instance, cursor, resource)
    assert requests == [] and "last novelty request" in skips[0], skips
    assert NoveltyCursor.loads(cursor).shadow_hits["bot.mined.0.v2"] >= 10
    state = NoveltyCursor.loads(cursor)
    state.last_request_at -= 3600
    _land_records(lake, "events", _featured(250, at=DAY2 + timedelta(minutes=15), seed=6))
    requests, cursor, _ = _evaluate(novelty_sensor, instance, state.dumps(), resource)
    assert len(requests) == 1 and "bot.mined.0.v2" in requests[0].tags["firstmile/shadow_rules_ready"]
    assert NoveltyCursor.loads(cursor).shadow_hits == {}


def test_novelty_sensor_does_not_request_the_loop_without_a_broker(tmp_path, instance):
    from orchestration.defs.sensors import novelty_sensor

    lake = tmp_path / "lake"
    resource = _resource(tmp_path, broker="")
    _land_records(lake, "events", _featured(600, at=DAY1, seed=1))
    _, cursor, _ = _evaluate(novelty_sensor, instance, None, resource)
    _land_records(lake, "events", _featured(300, at=DAY2, seed=4, hoarders=0.5))
    requests, _, skips = _evaluate(novelty_sensor, instance, cursor, resource)
    assert requests == [] and "no broker" in skips[0]
