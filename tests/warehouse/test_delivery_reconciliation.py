"""Delivery reconciliation (issue 18) with the real dbt over a real landing zone: per destination and day, routed
= delivered + retrying + dead-lettered + withheld + in flight, exactly; an outcome for an event never routed fails
the build."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.warehouse.dbt_runner import build_models, run_dbt
from warehouse.lake import write_batch

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 10, tzinfo=UTC)


def routed(i: int) -> dict[str, object]:
    return {"event_id": f"e{i}", "profile_id": f"p{i}", "device_id": f"d{i}", "type": "track",
            "event_name": "Order Completed", "event_ts": (T0 + timedelta(minutes=i)).isoformat(),
            "received_at": (T0 + timedelta(minutes=i)).isoformat(), "policy_version": 1, "raw_partition": 0,
            "raw_offset": i, "kafka_topic": "dest.sales", "kafka_partition": 0, "kafka_offset": i}


def outcome(i: int, status: str, at_s: int, *, destination: str = "crm") -> dict[str, object]:
    return {"event_id": f"e{i}", "destination": destination, "routed_topic": "dest.sales", "profile_id": f"p{i}",
            "event_ts": (T0 + timedelta(minutes=i)).isoformat(), "status": status, "attempt": 1, "lane": "fresh",
            "http_status": None, "reason": None, "at": (T0 + timedelta(hours=1, seconds=at_s)).isoformat(),
            "kafka_topic": "delivery.outcomes", "kafka_partition": 0, "kafka_offset": at_s}


def test_routed_events_are_accounted_for_exactly(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_batch(lake, "deliveries", [routed(i) for i in range(6)], file_stem="dest.sales+0+0+5")
    write_batch(lake, "delivery_outcomes", [
        outcome(0, "delivered", 1),
        outcome(1, "retrying", 2), outcome(1, "delivered", 9),           # retried, then delivered
        outcome(2, "dead_lettered", 3),
        outcome(3, "withheld", 4),
        outcome(4, "retrying", 5),                                       # still retrying
        outcome(5, "dead_lettered", 6), outcome(5, "retrying", 7),      # replayed, retrying again
        # (e6 routed nowhere: the delivery tier saw no such event)
    ], file_stem="delivery.outcomes+0+1+9")
    build_models("delivery_reconciliation", lake=lake, workdir=tmp_path)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        row = con.execute("select routed, delivered, retrying, dead_lettered, withheld, in_flight, unaccounted "
                          "from delivery_reconciliation where destination = 'crm'").fetchone()
    finally:
        con.close()
    assert row == (6, 2, 2, 1, 1, 0, 0)

    # an outcome for an event the lake never saw routed breaks the balance: the build fails and names the test
    write_batch(lake, "delivery_outcomes", [outcome(99, "delivered", 20)], file_stem="delivery.outcomes+0+20+20")
    result = run_dbt(["build", "--select", "+delivery_reconciliation", "--indirect-selection", "cautious"],
                     lake=lake, workdir=tmp_path)
    assert result.returncode != 0 and "assert_delivery_reconciliation_balances" in result.stdout
