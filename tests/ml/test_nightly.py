"""The batch-only platform's nightly learner (ml/nightly.py) on training sets whose answer is known by construction.

A bot pattern sends ``PER_DAY`` events a day from noon of day 0; the miner needs ``MiningConfig.min_support`` (20)
bot events before it proposes a rule, so the first nightly run that can learn it is the one after
``ceil(20 / PER_DAY)`` days of the pattern — whatever the code under test does.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ml.bot_rules import MiningConfig
from ml.datasets import FEATURE_COLUMNS
from ml.nightly import fact_rows, first_enforcing_run, midnights, simulate_nightly
from streaming import facts as fact_catalog

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
BOT = {"f_events_per_minute": 80.0, "f_mean_interval_s": 0.75, "f_session_event_count": 5.0}


def _row(event_id: str, ts: datetime, session: str, features: dict[str, float], *, bot: bool,
         hot_caught: bool = False) -> dict[str, object]:
    row: dict[str, object] = {c: 1.0 for c in FEATURE_COLUMNS}
    row.update(features)
    row.update({"event_id": event_id, "event_ts": ts, "session_id": session, "is_bot": hot_caught,
                "label_bot": int(bot), "label_bot_behaviour": bot})
    return row


def training_set(*, per_day: int, days: int = 5, humans_per_day: int = 300, lookalike_human: bool = False,
                 hot_caught_from: datetime | None = None, jitter: bool = True) -> pl.DataFrame:
    """Humans (slow, irregular) all day; the pattern (fast, regular, under the bootstrap's rate_flood rule: fewer
    than 10 events a session) ``per_day`` events a day from noon of day 0. ``hot_caught_from``: the hot path
    quarantined the pattern from then on (as a first-mile learned rule would). Without ``jitter`` every event of
    the pattern has the same features (a look-alike human then cannot be split from it)."""
    rng = random.Random(7)
    rows = []
    for day in range(days):
        start = DAY0 + timedelta(days=day)
        for i in range(humans_per_day):
            features = {"f_events_per_minute": rng.uniform(0.5, 30.0), "f_mean_interval_s": rng.uniform(2.0, 120.0),
                        "f_session_event_count": float(rng.randint(1, 30))}
            rows.append(_row(f"h{day}-{i}", start + timedelta(seconds=i * 86_000 / humans_per_day),
                             f"hs{day}-{i // 5}", features, bot=False))
        for i in range(per_day):
            ts = start + timedelta(hours=12, minutes=i * 11 * 60 / per_day)
            spread = {"f_events_per_minute": BOT["f_events_per_minute"] + rng.uniform(-5, 5),
                      "f_mean_interval_s": BOT["f_mean_interval_s"] + rng.uniform(-0.05, 0.05)} if jitter else {}
            rows.append(_row(f"b{day}-{i}", ts, f"bs{day}", {**BOT, **spread}, bot=True,
                             hot_caught=hot_caught_from is not None and ts >= hot_caught_from))
    if lookalike_human:  # one known human with exactly the pattern's behaviour, on day 0
        rows.append(_row("lookalike", DAY0 + timedelta(hours=13), "hs-lookalike", BOT, bot=False))
    return pl.DataFrame(rows).sort("event_ts")


def pattern_facts(frame: pl.DataFrame) -> list[dict[str, object]]:
    """The pattern's events as the facts a rule reads (selected with the fact catalog's expressions)."""
    return fact_rows(frame.filter(pl.col("event_id").str.starts_with("b")))


def nights(days: int = 5) -> list[datetime]:
    return midnights(DAY0, DAY0 + timedelta(days=days - 1, hours=23))


@pytest.mark.parametrize("per_day", [8, 12, 25])
def test_the_batch_learns_a_pattern_at_the_first_midnight_with_enough_evidence_before_it(per_day):
    frame = training_set(per_day=per_day)
    runs = simulate_nightly(frame, nights())
    run = first_enforcing_run(runs, pattern_facts(frame))
    days_needed = math.ceil(MiningConfig().min_support / per_day)  # 8 → 3 days, 12 → 2, 25 → 1
    assert run is not None
    assert run.midnight == DAY0 + timedelta(days=days_needed)
    assert run.rows == frame.filter(pl.col("event_ts") < run.midnight).height
    # the runs before it had the pattern's events too, but fewer than the miner's support
    assert all(not r.enforced for r in runs if r.midnight < run.midnight)


def test_a_rule_that_hits_a_known_human_enters_in_shadow_and_is_enforced_the_night_after():
    # 20 a day with one look-alike human: precision 20/21, 40/41 < 0.98 until day 3 (60/61), so the rule is mined
    # at the third midnight, not flawless (it hits a human): shadow; its 20 hits of day 3 are all bots → enforced
    # at the fourth midnight.
    frame = training_set(per_day=20, humans_per_day=600, lookalike_human=True, jitter=False)
    runs = simulate_nightly(frame, nights())
    by_night = {r.midnight: r for r in runs}
    third, fourth = DAY0 + timedelta(days=3), DAY0 + timedelta(days=4)
    assert not any(r.enforced for r in runs if r.midnight <= third)
    shadow = [rule for rule in by_night[third].policy["rules"] if rule.get("mode") == "shadow"]
    assert [rule["id"] for rule in shadow] == ["bot.mined.0.v2"]
    assert first_enforcing_run(runs, pattern_facts(frame)) is by_night[fourth]
    assert "bot.mined.0.v2" in by_night[fourth].enforced


def test_what_the_first_mile_caught_with_its_own_learned_rule_is_not_credited_to_the_batch():
    # From day 1 the hot path quarantines the pattern with a rule the first mile learned. Taken at face value
    # (is_bot), those events are "already caught" and the miner never sees 20 missed ones: the batch would never
    # learn the pattern. Named as first-mile-only catches, they count as missed, and the batch learns it when the
    # data allow (8 a day → third midnight).
    frame = training_set(per_day=8, hot_caught_from=DAY0 + timedelta(days=1))
    caught = set(frame.filter(pl.col("is_bot"))["event_id"])
    assert first_enforcing_run(simulate_nightly(frame, nights()), pattern_facts(frame)) is None
    runs = simulate_nightly(frame, nights(), first_mile_only=caught)
    run = first_enforcing_run(runs, pattern_facts(frame))
    assert run is not None and run.midnight == DAY0 + timedelta(days=3)


def test_the_facts_a_nightly_rule_reads_are_the_fact_catalogs_columns_of_the_training_set():
    # f_<feature> is read as <feature>, event_type as the fact "type" (its catalog SQL), columns that are no fact
    # (event_id, label_bot) are left out, and "identified" — a ledger expression the training set cannot carry — is
    # absent rather than guessed from user_id
    frame = training_set(per_day=1, days=1, humans_per_day=1).with_columns(
        pl.lit("track").alias("event_type"), pl.lit("u1").alias("user_id"))
    facts = fact_rows(frame)[0]
    assert facts["events_per_minute"] == frame["f_events_per_minute"][0]
    assert facts["type"] == "track"
    assert "identified" not in facts and "event_id" not in facts and "label_bot" not in facts
    assert set(facts) == {name for name, sql in fact_catalog.SQL.items() if sql in frame.columns}
    assert len(facts) >= len(FEATURE_COLUMNS) + 1


def test_midnights_are_the_utc_day_boundaries_after_the_first_event_up_to_the_one_after_the_last():
    assert midnights(DAY0 + timedelta(hours=5), DAY0 + timedelta(days=1, hours=23)) == [
        DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)]
    assert midnights(DAY0 + timedelta(hours=5), DAY0 + timedelta(hours=6)) == [DAY0 + timedelta(days=1)]
