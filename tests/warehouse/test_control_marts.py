"""What the warehouse hands the edge about people, from a real ``dbt build`` over the tiny scenario lake (one build
for the module): the merge carries the merged profile's latest explicit consent decisions (a revocation nobody
received included), the regulations API's requests reach the suppression list through the erasure trail (by user
id and by anonymous id), and ``erasure_audit`` reads the trail's states."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.warehouse import scenario
from tests.warehouse.dbt_runner import REPO, run_dbt
from warehouse.control import read_erasures, read_merges
from warehouse.erasure_trail import ErasureTrail

pytestmark = pytest.mark.integration

H2_CONSENT_AT, H2_REVOKED_AT, _ms = scenario.H2_CONSENT_AT, scenario.H2_REVOKED_AT, scenario.received_ms


@dataclass
class Built:
    workdir: Path
    con: duckdb.DuckDBPyConnection


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> typing.Iterator[Built]:
    workdir = tmp_path_factory.mktemp("control")
    lake = workdir / "lake"
    scenario.add_merged_profile_consent(lake, scenario.build(lake))

    trail = ErasureTrail(workdir / "regulations").ensure()
    trail.record_request("reg_user", regulation_type="SUPPRESS_WITH_DELETE", subject_type="USER_ID",
                         subject_ids=["u-x"], requested_at="2026-03-04T10:00:00.000Z")
    trail.record_request("reg_anon", regulation_type="SUPPRESS_WITH_DELETE", subject_type="ANONYMOUS_ID",
                         subject_ids=["anon-r1"], requested_at="2026-03-04T10:05:00.000Z")
    for seq, state in enumerate(["received", "suppressed_at_edge", "lake_rewritten"]):
        trail.record_state("reg_user", regulation_type="SUPPRESS_WITH_DELETE", seq=seq, state=state,
                           reached_at=f"2026-03-04T10:0{seq}:00.000Z", detail={"rows_removed": 3} if seq == 2 else None)
    # a re-run recording a state again changes nothing
    assert not trail.record_state("reg_user", regulation_type="SUPPRESS_WITH_DELETE", seq=1,
                                  state="suppressed_at_edge", reached_at="2026-03-04T11:00:00.000Z")

    result = run_dbt(["build"], lake=lake, workdir=workdir)
    assert result.returncode == 0, result.stdout[-6000:]
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    yield Built(workdir, con)
    con.close()


def test_merge_carries_the_merged_profiles_latest_decisions_including_a_suppressed_revocation(built: Built) -> None:
    merges = read_merges(built.workdir / "warehouse.duckdb")
    assert [(m.from_profile_id, m.to_profile_id) for m in merges] == [("p-h2", "p-h1")]
    # analytics: the consent event's decision; marketing: granted there, revoked 30 s later on a suppressed event
    # (a flip of the stamped consent); personalization and sales never decided by h2 (constant: not a decision)
    assert merges[0].consent == {"analytics": [True, _ms(H2_CONSENT_AT)],
                                 "marketing": [False, _ms(H2_REVOKED_AT)]}


def test_consent_decisions_hold_no_region_default(built: Built) -> None:
    # c1's events stamp ANALYTICS_ONLY then NONE: the switch to NONE is a flip for analytics; the other purposes
    # were false throughout (defaults as far as the warehouse can tell): no decision
    decisions = built.con.execute("""select purpose, granted from int_consent_decisions where profile_id = 'p-c1'
                                     order by purpose""").fetchall()
    assert decisions == [("analytics", False)]


def test_regulations_requests_reach_the_suppression_list_by_user_and_by_anonymous_id(built: Built) -> None:
    by_user = {(e.identifier_type, e.identifier_value)
               for e in read_erasures(built.workdir / "warehouse.duckdb", profile_ids=["u-x"])}
    assert {("profile", "p-erase"), ("anonymous", "anon-x"), ("user", "u-x"), ("email_hash", "eh-x"),
            ("device", "anon-x")} <= by_user
    by_anonymous = {(e.identifier_type, e.identifier_value)
                    for e in read_erasures(built.workdir / "warehouse.duckdb", profile_ids=["anon-r1"])}
    assert {("anonymous", "anon-r1"), ("profile", "p-anon-r1")} <= by_anonymous
    # and staging dropped their rows
    assert built.con.execute("""select count(*) from stg_decided
                                where device_id in ('anon-x', 'anon-r1') or user_id = 'u-x'""").fetchone() == (0,)
    assert built.con.execute("select count(*) from stg_decided where device_id = 'anon-r2'").fetchone() == (1,)


def test_erasure_audit_reads_the_trail_one_row_per_request_and_state(built: Built) -> None:
    rows = built.con.execute("""select request_id, seq, state, cast(reached_at as varchar), detail
                                from erasure_audit order by request_id, seq""").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("reg_user", 0, "received"), ("reg_user", 1, "suppressed_at_edge"),
                                                  ("reg_user", 2, "lake_rewritten")]
    assert rows[1][3].startswith("2026-03-04 10:01:00")  # the first record of the state, not the re-run's
    assert json.loads(rows[2][4]) == {"rows_removed": 3}
    # a view over the trail: a state recorded after the build is there at once
    ErasureTrail(built.workdir / "regulations").record_state(
        "reg_user", regulation_type="SUPPRESS_WITH_DELETE", seq=3, state="warehouse_rebuilt",
        reached_at="2026-03-04T10:03:00.000Z")
    assert built.con.execute("select count(*) from erasure_audit").fetchone() == (4,)


def test_erasure_audit_accepts_exactly_the_hot_paths_states() -> None:
    from streaming.regulations import State

    doc = yaml.safe_load((REPO / "dbt_project/models/marts/core/erasure_audit.yml").read_text())
    state = next(c for c in doc["models"][0]["columns"] if c["name"] == "state")
    accepted = next(t["accepted_values"]["arguments"]["values"] for t in state["data_tests"]
                    if isinstance(t, dict) and "accepted_values" in t)
    assert accepted == list(typing.get_args(State))
