"""The ``erasure`` job takes a ``SUPPRESS_WITH_DELETE`` request through every state on real components: the
collector's publication (``suppress_at_edge``) on a real broker, the real dbt over the scenario lake, a real MLflow
store. Afterwards no lake file and no DuckDB relation but the suppression list and the requests hold any of the
subject's identifiers, the edge knows the devices it did not, and ``erasure_audit`` holds every state with its time.
A run whose params name the subject's device fails the request at the model-store check (with where, never what)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import polars as pl
import pytest

from ml import registry
from orchestration.defs.regulations import erasure_job, run_request_for
from orchestration.defs.warehouse import dbt_resource
from orchestration.resources import FirstmileResource
from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.control import ControlReader
from streaming.control_tables import ControlTables
from streaming.regulations import Regulation, new_regulation, read_regulations, suppress_at_edge
from streaming.settings import StreamingSettings
from tests.warehouse import scenario
from warehouse.layout import DataLayout

pytestmark = pytest.mark.integration

SUBJECT = "u-x"  # the user of profile p-erase in the scenario (one device, anon-x; email hash eh-x)
IDENTIFIERS = ("p-erase", "anon-x", "u-x", "eh-x")
#: the only relations allowed to name an erased person: what must be suppressed, and the requests themselves
ALLOWED = {"erasure_suppression_list", "stg_erased_identifiers", "stg_erasure_requests"}


def _lake_mentions(lake: Path) -> dict[str, int]:
    """Rows per stream with any column (as text, binary as UTF-8) containing an identifier."""
    out = {}
    for stream_dir in sorted(p for p in lake.iterdir() if p.is_dir()):
        for path in stream_dir.rglob("*.parquet"):
            frame = pl.read_parquet(path, hive_partitioning=False)
            frame = frame.with_columns(pl.col(pl.Binary).cast(pl.String)).with_columns(pl.all().cast(pl.String))
            hit = pl.lit(False)
            for column in frame.columns:
                for value in IDENTIFIERS:
                    hit = hit | pl.col(column).str.contains(value, literal=True).fill_null(False)
            if n := frame.filter(hit).height:
                out[str(path.relative_to(lake))] = n
    return out


def _warehouse_mentions(duckdb_path: Path) -> list[tuple[str, str, int]]:
    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        columns = con.execute("""select table_name, column_name from information_schema.columns
                                 where table_schema = 'main' and data_type = 'VARCHAR'""").fetchall()
        leaks = []
        for table, column in columns:
            if table in ALLOWED:
                continue
            row = con.execute(f'select count(*) from "{table}" where '
                              + " or ".join(f'contains("{column}", ?)' for _ in IDENTIFIERS), list(IDENTIFIERS)
                              ).fetchone()
            if row and row[0]:
                leaks.append((table, column, row[0]))
        return leaks
    finally:
        con.close()


@dataclass
class Setup:
    layout: DataLayout
    broker: str
    settings: StreamingSettings
    reg: Regulation

    @property
    def regulations(self) -> str:
        return self.settings.topic(topics.CONTROL_REGULATIONS)

    def run(self) -> dg.ExecuteInProcessResult:
        """One ``erasure`` run, as the sensor requests it."""
        request = run_request_for(self.reg.id, len(self.reg.states))
        resources = {"firstmile": FirstmileResource(data_dir=str(self.layout.root), kafka_broker_address=self.broker),
                     "dbt": dbt_resource()}
        with dg.DagsterInstance.ephemeral() as instance:
            return erasure_job.execute_in_process(run_config=request.run_config, tags=request.tags,
                                                  resources=resources, instance=instance, raise_on_error=False)

    def request(self) -> Regulation:
        return {r.id: r for r in read_regulations(self.broker, self.regulations)}[self.reg.id]


@contextlib.contextmanager
def erasure_requested(tmp_path: Path, *, leak: bool) -> Iterator[Setup]:
    """The scenario lake, an MLflow store with one run (logging the subject's device id when ``leak``), a broker, and
    the subject's request as the collector publishes it (suppressed at the edge)."""
    layout = DataLayout(tmp_path / "data").ensure()
    scenario.build(layout.lake)
    assert _lake_mentions(layout.lake)
    registry.configure(layout)
    with mlflow.start_run(run_name="debug-export"):
        mlflow.log_param("sample_device", "anon-x" if leak else "none")
        mlflow.set_tag("debug_email", "eh-x" if leak else "none")  # a tag can be removed: removed, not a failure
        mlflow.log_dict({"auc": 0.8}, "metrics.json")
    broker = EmbeddedBroker.start(log_path=tmp_path / "broker.log")
    try:
        settings = StreamingSettings(data_dir=layout.root, KAFKA_BROKER_ADDRESS=broker.address)  # type: ignore[call-arg]
        create_topics(broker.address, settings)
        reg = suppress_at_edge(broker.address, settings.topic(topics.CONTROL_ERASURE),
                               settings.topic(topics.CONTROL_REGULATIONS),
                               new_regulation("SUPPRESS_WITH_DELETE", "USER_ID", [SUBJECT]))
        yield Setup(layout, broker.address, settings, reg)
    finally:
        broker.stop()


def test_erasure_job_takes_a_request_through_every_state_and_leaves_no_identifier(tmp_path):
    with erasure_requested(tmp_path, leak=False) as setup:
        result = setup.run()
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"stg_erased_identifiers", "erasure_suppression_list", "stg_decided", "identity_merges"} <= materialized

        done = setup.request()
        assert [s.state for s in done.states] == ["received", "suppressed_at_edge", "lake_rewritten",
                                                  "warehouse_rebuilt", "ml_artefacts_checked", "done"]
        lake_detail, ml_detail = done.states[2].detail or {}, done.states[4].detail or {}
        assert lake_detail["rows_removed"] > 0 and lake_detail["files_rewritten"] + lake_detail["files_deleted"] > 0
        assert ml_detail["runs"] == 1 and ml_detail["artifact_files"] >= 1 and ml_detail["hits"] == 0
        # the subject and what the warehouse found with it (u-x is too short to search for: counted apart)
        assert (ml_detail["identifiers"], ml_detail["identifiers_too_short"]) == (len(IDENTIFIERS) - 1, 1)

        assert _lake_mentions(setup.layout.lake) == {}
        assert _warehouse_mentions(setup.layout.duckdb_path) == []

        # the devices and emails of the subject the edge did not know reached control.erasure
        tables = ControlTables()
        reader = ControlReader(setup.broker, setup.settings.topic(topics.CONTROL_ERASURE), tables, "erasure")
        reader.start()
        reader.wait_caught_up()
        reader.stop()
        assert set(IDENTIFIERS) <= tables.erased

        con = duckdb.connect(str(setup.layout.duckdb_path), read_only=True)
        audit = con.execute("select seq, state, reached_at is not null from erasure_audit where request_id = ? "
                            "order by seq", [done.id]).fetchall()
        con.close()
        assert audit == [(i, s.state, True) for i, s in enumerate(done.states)]


def test_an_identifier_left_in_the_model_store_fails_the_request_with_where_it_is(tmp_path):
    with erasure_requested(tmp_path, leak=True) as setup:
        result = setup.run()
        assert not result.success
        failed = setup.request()
        assert [s.state for s in failed.states] == ["received", "suppressed_at_edge", "lake_rewritten",
                                                    "warehouse_rebuilt", "failed"]
        detail = failed.states[-1].detail or {}
        run_id = mlflow.search_runs(experiment_names=[registry.EXPERIMENT])["run_id"][0]
        # the param cannot be removed: it fails the request; the tag was removed
        assert detail["step"] == "ml_artefacts" and detail["removed"] == 1
        assert detail["remaining"] == [f"run_param run {run_id} sample_device"]
        assert "anon-x" not in str(failed.states) and SUBJECT not in str(failed.states[2:])  # where, never what
        assert "debug_email" not in mlflow.get_run(run_id).data.tags
        assert _lake_mentions(setup.layout.lake) == {}  # the steps before it were done
        con = duckdb.connect(str(setup.layout.duckdb_path), read_only=True)
        states = con.execute("select state from erasure_audit order by seq").fetchall()
        con.close()
        assert states[-1] == ("failed",)
