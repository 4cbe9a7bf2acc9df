"""The checks that gate publishing merges and erasures (pure functions), and the erasure trail's idempotent writes."""

from __future__ import annotations

import json

from warehouse.control import Merge, ambiguous_merges, merge_cycles, merges_touching_erased
from warehouse.erasure_trail import ErasureTrail


def test_merge_cycles_finds_each_cycle_once_and_accepts_chains_into_a_survivor():
    assert merge_cycles([("a", "b"), ("b", "c"), ("d", "c")]) == []
    assert merge_cycles([("b", "c"), ("c", "a"), ("a", "b"), ("x", "y"), ("y", "x"), ("d", "a")]) == [
        ["a", "b", "c"], ["x", "y"]]
    assert merge_cycles([("a", "a")]) == [["a"]]
    # a profile sent into two survivors: a cycle through either edge is found
    assert merge_cycles([("a", "b"), ("a", "c"), ("c", "a")]) == [["a", "c"]]


def test_ambiguous_and_erased_merges_are_named():
    merges = [Merge("a", "b"), Merge("a", "c"), Merge("d", "e"), Merge("f", "g")]
    assert ambiguous_merges(merges) == {"a": ["b", "c"]}
    assert [(m.from_profile_id, m.to_profile_id) for m in merges_touching_erased(merges, {"e", "f"})] == [
        ("d", "e"), ("f", "g")]


def test_erasure_trail_records_each_request_subject_and_state_once(tmp_path):
    trail = ErasureTrail(tmp_path / "regulations").ensure()
    assert trail.requests_path.read_text() == trail.audit_path.read_text() == ""  # dbt reads both from the start
    args = {"regulation_type": "SUPPRESS_WITH_DELETE", "subject_type": "USER_ID", "requested_at": "2026-01-01T00:00Z"}
    assert trail.record_request("r1", subject_ids=["u-2", "u-1", "u-1"], **args) == 2
    assert trail.record_request("r1", subject_ids=["u-1", "u-3"], **args) == 1
    assert trail.record_state("r1", regulation_type="SUPPRESS_WITH_DELETE", seq=0, state="received",
                              reached_at="2026-01-01T00:00Z", detail={"n": 1})
    assert not trail.record_state("r1", regulation_type="SUPPRESS_WITH_DELETE", seq=0, state="received",
                                  reached_at="2026-01-02T00:00Z")
    assert trail.states("r1") == [(0, "received", "2026-01-01T00:00Z")]
    rows = [json.loads(line) for line in trail.audit_path.read_text().splitlines()]
    assert json.loads(rows[0]["detail"]) == {"n": 1} and rows[0]["recorded_at"]
