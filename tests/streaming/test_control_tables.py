"""The control tables every worker holds (streaming/control_tables.py): merge semantics, erasure, snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.control_tables import ERASURE, IDENTITY, ControlTables, erasure_value, merge_value
from tests.streaming.events import control


def test_chains_resolve_to_the_end_whatever_order_the_merges_arrive_in():
    forward = control(merges={"a": "b", "b": "c"})
    backward = control(merges={"b": "c", "a": "b"})
    for tables in (forward, backward):
        assert [tables.survivor(x) for x in ("a", "b", "c", "z")] == ["c", "c", "c", "z"]
        assert tables.members_of("c") == {"a", "b"} and tables.members_of("b") is None


def test_a_survivor_merged_later_takes_its_members_along():
    tables = control(merges={"a": "b", "x": "b"})
    tables.load_many(IDENTITY, [("b", merge_value("c"))])
    assert {m: tables.survivor(m) for m in "abx"} == {"a": "c", "b": "c", "x": "c"}
    assert tables.members_of("c") == {"a", "b", "x"}


def test_cycles_and_self_merges_are_rejected_and_logged(caplog: pytest.LogCaptureFixture):
    tables = control(merges={"a": "b", "b": "a", "c": "c"})
    assert tables.rejected == [(IDENTITY, "b"), (IDENTITY, "c")]
    assert tables.survivor("a") == "b" and tables.survivor("b") == "b"
    assert "closes a cycle" in caplog.text and "cannot merge into itself" in caplog.text
    # re-pointing a merged profile so that it would loop back is a cycle too
    tables.load_many(IDENTITY, [("x", merge_value("a"))])  # x -> a -> b
    tables.load_many(IDENTITY, [("b", merge_value("x"))])
    assert tables.rejected[-1] == (IDENTITY, "b") and tables.survivor("x") == "b"


def test_a_record_without_into_is_rejected_naming_the_field():
    tables = ControlTables()
    tables.apply(IDENTITY, "a", b'{"consent": {}}', 0)
    tables.apply(IDENTITY, "a", b"not json", 1)
    assert tables.rejected == [(IDENTITY, "a"), (IDENTITY, "a")] and tables.survivor("a") == "a"
    assert tables.offsets.identity == 2


def test_a_tombstone_undoes_a_merge_but_never_an_erasure():
    tables = control(merges={"a": "b", "b": "c"}, erased=["u-1"])
    tables.apply(IDENTITY, "b", None, 2)
    assert tables.survivor("a") == "b" and tables.survivor("b") == "b" and tables.members_of("c") is None
    tables.apply(ERASURE, "u-1", None, 1)
    assert tables.is_erased("u-1")


def test_re_pointing_a_merge_recomputes_every_chain():
    tables = control(merges={"a": "b", "x": "a"})
    tables.load_many(IDENTITY, [("a", merge_value("d"))])
    assert tables.survivor("x") == "d" and tables.members_of("d") == {"a", "x"} and tables.members_of("b") is None


def test_a_snapshot_round_trips_tables_offsets_and_merge_consent(tmp_path: Path):
    tables = control(merges={"a": "b", "b": "c"}, erased=["u-1", "d-2"], consent={"a": {"marketing": [False, 7]}})
    path = tmp_path / "state" / "w.control.snapshot"
    tables.save(path)
    again = ControlTables.load(path)
    assert again.offsets == tables.offsets == type(tables.offsets)(identity=2, erasure=2)
    assert again.erased == {"u-1", "d-2"} and again.survivor("a") == "c" and again.members_of("c") == {"a", "b"}
    assert dict(again.merged_consent("a")) == {"marketing": (False, 7)}
    path.write_bytes(b"\x00garbage")
    assert ControlTables.load(path).offsets.identity == 0  # unreadable: read the topics from the start instead


def test_erasure_records_need_a_key():
    tables = ControlTables()
    tables.apply(ERASURE, "", erasure_value(request_id=None, at=None, source="t"), 0)
    assert tables.rejected == [(ERASURE, "")] and not tables.erased
