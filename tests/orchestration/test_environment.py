"""The environment is resolved in one place: dbt's lake location and the resource's env-sourced fields."""

from __future__ import annotations

import dagster as dg

from orchestration.environment import dbt_env, env_or_default, lake_uri
from orchestration.resources import FirstmileResource, default_resource
from warehouse.layout import DataLayout


def test_dbt_env_reads_the_local_lake_when_no_lake_uri_is_set(tmp_path):
    layout = DataLayout(tmp_path)
    env = dbt_env(layout, {"AWS_SECRET_ACCESS_KEY": "never-passed-for-a-local-lake"})
    assert env == {"FIRSTMILE_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                   "FIRSTMILE_LAKE_DIR": str(tmp_path / "lake")}


def test_dbt_env_points_dbt_at_firstmile_lake_uri_and_passes_the_s3_settings_through(tmp_path):
    environ = {"FIRSTMILE_LAKE_URI": "s3://firstmile-lake/lake/", "FIRSTMILE_S3_ENDPOINT": "minio:9000",
               "FIRSTMILE_S3_URL_STYLE": "path", "AWS_ACCESS_KEY_ID": "firstmile", "AWS_SECRET_ACCESS_KEY": "s3cret",
               "UNRELATED": "x"}
    env = dbt_env(DataLayout(tmp_path), environ)
    assert env["FIRSTMILE_LAKE_DIR"] == "s3://firstmile-lake/lake"
    assert env["FIRSTMILE_DUCKDB_PATH"] == str(tmp_path / "warehouse.duckdb")
    assert env["FIRSTMILE_S3_ENDPOINT"] == "minio:9000" and env["AWS_SECRET_ACCESS_KEY"] == "s3cret"
    assert "UNRELATED" not in env
    assert lake_uri(DataLayout(tmp_path), {"FIRSTMILE_LAKE_URI": "  "}) == str(tmp_path / "lake")


def test_env_or_default_uses_envvar_only_when_the_variable_is_set(monkeypatch):
    monkeypatch.delenv("FIRSTMILE_TOPIC_PREFIX", raising=False)
    assert env_or_default("FIRSTMILE_TOPIC_PREFIX", "") == ""
    monkeypatch.setenv("FIRSTMILE_TOPIC_PREFIX", "staging.")
    assert env_or_default("FIRSTMILE_TOPIC_PREFIX", "") == dg.EnvVar("FIRSTMILE_TOPIC_PREFIX")


def _resolved(resource: FirstmileResource) -> FirstmileResource:
    """The resource as a run sees it (EnvVar fields resolved at run start)."""

    @dg.asset
    def probe(firstmile: FirstmileResource) -> dict[str, str]:
        return {"data_dir": firstmile.data_dir, "broker": firstmile.kafka_broker_address,
                "topic": firstmile.streaming_settings().topic("control.policy")}

    result = dg.materialize([probe], resources={"firstmile": resource})
    return result.output_for_node("probe")


def test_default_resource_honours_the_topic_prefix_and_runs_when_the_variables_are_unset(monkeypatch, tmp_path):
    for name in ("FIRSTMILE_TOPIC_PREFIX", "KAFKA_BROKER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTMILE_DATA_DIR", str(tmp_path))
    assert _resolved(default_resource()) == {"data_dir": str(tmp_path), "broker": "unset",
                                             "topic": "control.policy"}
    monkeypatch.setenv("FIRSTMILE_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("KAFKA_BROKER_ADDRESS", "kafka:9092")
    assert _resolved(default_resource()) == {"data_dir": str(tmp_path), "broker": "kafka:9092",
                                             "topic": "acme.control.policy"}
