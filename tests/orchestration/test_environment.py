"""The environment is resolved in one place: the settings an entry point reads, dbt's lake location derived from
them, and the resource's env-sourced fields."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from orchestration.environment import env_or_default
from orchestration.resources import FirstmileResource, default_resource
from orchestration.settings import OrchestrationSettings, load_orchestration_settings


def test_dbt_env_reads_the_local_lake_when_no_lake_uri_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRSTMILE_S3_ENDPOINT", "never-passed-for-a-local-lake:9000")
    env = OrchestrationSettings(data_dir=tmp_path).dbt_env()
    assert env == {"FIRSTMILE_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                   "FIRSTMILE_LAKE_DIR": str(tmp_path / "lake"),
                   "FIRSTMILE_REGULATIONS_DIR": str(tmp_path / "regulations")}


def test_dbt_env_points_dbt_at_firstmile_lake_uri_and_passes_the_s3_settings_through(tmp_path, monkeypatch):
    for name, value in {"FIRSTMILE_LAKE_URI": "s3://firstmile-lake/lake/", "FIRSTMILE_S3_ENDPOINT": "minio:9000",
                        "FIRSTMILE_S3_URL_STYLE": "path", "FIRSTMILE_S3_USE_SSL": "false",
                        "FIRSTMILE_S3_REGION": "", "UNRELATED": "x"}.items():
        monkeypatch.setenv(name, value)
    env = OrchestrationSettings(data_dir=tmp_path).dbt_env()
    assert env == {"FIRSTMILE_LAKE_DIR": "s3://firstmile-lake/lake",
                   "FIRSTMILE_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                   "FIRSTMILE_REGULATIONS_DIR": str(tmp_path / "regulations"),
                   "FIRSTMILE_S3_ENDPOINT": "minio:9000", "FIRSTMILE_S3_URL_STYLE": "path",
                   "FIRSTMILE_S3_USE_SSL": "false"}
    assert OrchestrationSettings(data_dir=tmp_path, lake_uri="  ").lake_location == str(tmp_path / "lake")


def test_settings_resolve_the_environment_the_data_dir_and_the_mlflow_store_once(tmp_path, monkeypatch):
    for name in ("FIRSTMILE_ENV", "FIRSTMILE_MLFLOW_TRACKING_URI", "FIRSTMILE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    default = load_orchestration_settings()
    assert (default.env, default.data_dir, default.mlflow_tracking_uri) == ("local", Path("data"), "")
    assert default.tracking_uri == f"sqlite:///{tmp_path / 'data' / 'mlflow' / 'mlflow.db'}"
    assert default.child_env() == {"FIRSTMILE_DATA_DIR": str(tmp_path / "data"),
                                   "DAGSTER_HOME": str(tmp_path / "data" / "dagster")}

    (tmp_path / ".env").write_text("FIRSTMILE_ENV=ci\nFIRSTMILE_DATA_DIR=from-dotenv\n")
    monkeypatch.setenv("FIRSTMILE_ENV", "prod")  # the environment wins over .env
    monkeypatch.setenv("FIRSTMILE_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    settings = load_orchestration_settings(data_dir=tmp_path / "cli")  # --data-dir wins over both
    assert (settings.env, settings.data_dir, settings.tracking_uri) == ("prod", tmp_path / "cli",
                                                                       "http://mlflow:5000")
    assert load_orchestration_settings().data_dir == Path("from-dotenv")
    monkeypatch.setenv("FIRSTMILE_ENV", "staging")
    with pytest.raises(ValidationError, match="FIRSTMILE_ENV|env"):
        load_orchestration_settings()


def test_resource_settings_take_its_fields_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRSTMILE_MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    monkeypatch.setenv("FIRSTMILE_S3_ENDPOINT", "minio:9000")
    resource = FirstmileResource(data_dir=str(tmp_path), mlflow_tracking_uri="", lake_uri="s3://bucket/lake")
    settings = resource.settings()
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert settings.dbt_env()["FIRSTMILE_LAKE_DIR"] == "s3://bucket/lake"
    assert settings.dbt_env()["FIRSTMILE_S3_ENDPOINT"] == "minio:9000"


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
                "topic": firstmile.streaming_settings().topic("control.policy"),
                "mlflow": firstmile.settings().tracking_uri}

    result = dg.materialize([probe], resources={"firstmile": resource})
    return result.output_for_node("probe")


def test_default_resource_honours_the_topic_prefix_and_runs_when_the_variables_are_unset(monkeypatch, tmp_path):
    for name in ("FIRSTMILE_TOPIC_PREFIX", "KAFKA_BROKER_ADDRESS", "FIRSTMILE_MLFLOW_TRACKING_URI",
                 "FIRSTMILE_LAKE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTMILE_DATA_DIR", str(tmp_path))
    assert _resolved(default_resource()) == {"data_dir": str(tmp_path), "broker": "unset",
                                             "topic": "control.policy",
                                             "mlflow": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"}
    monkeypatch.setenv("FIRSTMILE_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("KAFKA_BROKER_ADDRESS", "kafka:9092")
    monkeypatch.setenv("FIRSTMILE_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert _resolved(default_resource()) == {"data_dir": str(tmp_path), "broker": "kafka:9092",
                                             "topic": "acme.control.policy", "mlflow": "http://mlflow:5000"}


def test_registry_uses_the_tracking_uri_it_is_given_and_never_reads_the_environment(tmp_path, monkeypatch):
    from ml import registry
    from warehouse.layout import DataLayout

    monkeypatch.setenv("FIRSTMILE_MLFLOW_TRACKING_URI", "http://unreachable.invalid:5000")
    layout = DataLayout(tmp_path)
    client = registry.configure(layout)
    assert client.tracking_uri == layout.mlflow_tracking_uri
    other = DataLayout(tmp_path / "other")
    assert registry.configure(layout, tracking_uri=other.mlflow_tracking_uri).tracking_uri == \
        other.mlflow_tracking_uri
