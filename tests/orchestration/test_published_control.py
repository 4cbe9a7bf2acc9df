"""``published_control`` on a real broker and a warehouse built by the real dbt over the scenario lake: it publishes
the merge with the merged profile's consent and every erased identifier, as the hot path's own reader applies
them; a second run publishes nothing; each blocking check fails on a crafted warehouse and stops the publish."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from orchestration.defs.control import published_control
from orchestration.resources import FirstmileResource
from streaming import settings as topics
from streaming.broker import EmbeddedBroker, create_topics
from streaming.control import ControlReader, publish_records
from streaming.control_tables import ControlTables, erasure_value
from streaming.settings import StreamingSettings
from tests.warehouse import scenario
from tests.warehouse.dbt_runner import run_dbt

pytestmark = pytest.mark.integration

ERASED = {"p-erase", "anon-x", "u-x", "eh-x"}


@dataclass
class Platform:
    broker: str
    warehouse: Path  # a data directory whose DuckDB file dbt built


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    built = tmp_path_factory.mktemp("warehouse")
    scenario.add_merged_profile_consent(built / "lake", scenario.build(built / "lake"))
    result = run_dbt(["build", "--select", "+identity_merges", "+erasure_suppression_list", "--indirect-selection",
                      "cautious"], lake=built / "lake", workdir=built,
                     vars_yaml=f"{{erase_profile_ids: [{scenario.ERASED_PROFILE}]}}")
    assert result.returncode == 0, result.stdout[-4000:]
    broker = EmbeddedBroker.start(log_path=built / "broker.log")
    try:
        yield Platform(broker.address, built)
    finally:
        broker.stop()


def _data_dir(platform: Platform, tmp_path: Path) -> Path:
    """A data directory of its own (a copy of the built warehouse, no lake needed)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(platform.warehouse / "warehouse.duckdb", data_dir / "warehouse.duckdb")
    return data_dir


def _settings(platform: Platform, data_dir: Path, prefix: str) -> StreamingSettings:
    settings = StreamingSettings(data_dir=data_dir, topic_prefix=prefix,  # type: ignore[call-arg]
                                 KAFKA_BROKER_ADDRESS=platform.broker)
    create_topics(platform.broker, settings)
    return settings


def _materialize(platform: Platform, data_dir: Path, prefix: str) -> dg.ExecuteInProcessResult:
    resource = FirstmileResource(data_dir=str(data_dir), kafka_broker_address=platform.broker, topic_prefix=prefix)
    return dg.materialize([published_control], resources={"firstmile": resource}, raise_on_error=False)


def _edge(platform: Platform, settings: StreamingSettings) -> ControlTables:
    """The control tables as a worker builds them from the topics (the hot path's own reader)."""
    tables = ControlTables()
    readers = [ControlReader(platform.broker, settings.topic(topics.CONTROL_IDENTITY), tables, "identity"),
               ControlReader(platform.broker, settings.topic(topics.CONTROL_ERASURE), tables, "erasure")]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.wait_caught_up()
        reader.stop()
    return tables


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_publishes_the_merge_with_warehouse_consent_and_every_erased_identifier_once(platform, tmp_path):
    data_dir = _data_dir(platform, tmp_path)
    settings = _settings(platform, data_dir, "t1.")

    first = _materialize(platform, data_dir, "t1.")
    assert first.success
    assert all(c.passed for c in _checks(first).values()) and len(_checks(first)) == 3
    summary = first.output_for_node("published_control")
    assert summary["merges_published"] == 1 and summary["merges_already_present"] == 0
    assert summary["erasures_published"] >= len(ERASED) and summary["erasures_already_present"] == 0
    assert summary["control_identity_offset"] == 1
    assert summary["control_erasure_offset"] == summary["erasures_published"]

    edge = _edge(platform, settings)
    assert edge.survivor("p-h2") == "p-h1"
    # the consent h2's decisions amounted to, from the warehouse (a revocation nobody received included)
    assert dict(edge.merged_consent("p-h2")) == {
        "analytics": (True, scenario.received_ms(scenario.H2_CONSENT_AT)),
        "marketing": (False, scenario.received_ms(scenario.H2_REVOKED_AT))}
    assert edge.erased >= ERASED

    again = _materialize(platform, data_dir, "t1.")
    assert again.success
    summary = again.output_for_node("published_control")
    assert (summary["merges_published"], summary["erasures_published"]) == (0, 0)
    assert summary["merges_already_present"] == 1 and summary["erasures_already_present"] >= len(ERASED)
    assert summary["control_identity_offset"] == 1


def _blocked(platform: Platform, data_dir: Path, prefix: str, check: str) -> dg.ExecuteInProcessResult:
    settings = _settings(platform, data_dir, prefix)
    result = _materialize(platform, data_dir, prefix)
    assert not result.success
    checks = _checks(result)
    assert checks[check].passed is False and checks[check].severity == dg.AssetCheckSeverity.ERROR
    assert [name for name, c in checks.items() if not c.passed] == [check]
    assert not result.get_asset_materialization_events()
    edge = _edge(platform, settings)
    assert edge.offsets.identity == 0 and edge.offsets.erasure == (1 if prefix == "t3." else 0)
    return result


def test_a_merge_cycle_stops_the_publish(platform, tmp_path):
    data_dir = _data_dir(platform, tmp_path)
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    con.execute("""insert into identity_merges (merge_id, from_profile_id, to_profile_id, consent)
                   values ('p-h1 -> p-h2', 'p-h1', 'p-h2', '{}')""")
    con.close()
    result = _blocked(platform, data_dir, "t2.", "no_merge_cycle")
    examples = _checks(result)["no_merge_cycle"].metadata["examples"].value
    assert examples == ["p-h1 -> p-h2 -> p-h1"]


def test_a_merge_into_a_profile_erased_on_the_topic_stops_the_publish(platform, tmp_path):
    data_dir = _data_dir(platform, tmp_path)
    settings = _settings(platform, data_dir, "t3.")
    # the regulations API erased the survivor at the edge before the warehouse knew
    publish_records(platform.broker, settings.topic(topics.CONTROL_ERASURE),
                    [("p-h1", erasure_value(request_id="reg_x", at=None, source="regulations_api"))])
    result = _blocked(platform, data_dir, "t3.", "no_merge_of_erased_profile")
    examples = _checks(result)["no_merge_of_erased_profile"].metadata["examples"].value
    assert examples == ["p-h2 -> <erased>"]  # the erased side is not named in the event log
