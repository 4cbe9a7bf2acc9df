"""The model store searched for an erased person's identifiers, on a real MLflow store (SQLite + artifacts): hits in
params, artifacts (a zipped model file too) and registered versions are found and reported without the identifier;
hits in tags are removed; a clean store passes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import mlflow

from ml import registry
from ml.artefact_scan import scan_tracking_store
from warehouse.layout import DataLayout

SUBJECT = ("usr_5e1ec7ed", "anon-5e1ec7ed")


def test_scan_finds_params_artifacts_and_zipped_files_removes_tag_hits_and_never_names_the_identifier(
        mlflow_layout: DataLayout, tmp_path: Path) -> None:
    uri = mlflow_layout.mlflow_tracking_uri
    archive = tmp_path / "model.skops"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json", json.dumps({"seen": [SUBJECT[1]] * 50}))  # compressed: not in the raw bytes
    with mlflow.start_run(run_name="leaky") as leaky:
        mlflow.log_param("sample_user", SUBJECT[0])
        mlflow.set_tag("debug_device", SUBJECT[1])
        mlflow.log_dict({"top_users": [SUBJECT[0]]}, "analysis/top.json")
        mlflow.log_artifact(str(archive), "model")
    with mlflow.start_run(run_name="clean") as clean:
        mlflow.log_param("teacher", "HistGradientBoostingClassifier")
        mlflow.log_dict({"auc": 0.8}, "metrics.json")
    assert SUBJECT[1].encode() not in archive.read_bytes()

    scan = scan_tracking_store(uri, [*SUBJECT, "x"])

    assert scan.runs == 2 and scan.artifact_files == 3 and scan.identifiers == 2 and scan.identifiers_too_short == 1
    found = {(h.kind, h.location, h.removed) for h in scan.hits}
    run = leaky.info.run_id
    assert found == {("run_param", f"run {run} sample_user", False), ("run_tag", f"run {run} debug_device", True),
                     ("run_artifact", f"run {run} analysis/top.json", False),
                     ("run_artifact", f"run {run} model/model.skops", False)}
    summary = json.dumps(scan.summary())
    assert not any(s in summary for s in SUBJECT)
    assert "debug_device" not in mlflow.get_run(run).data.tags  # removed
    assert clean.info.run_id not in summary

    again = scan_tracking_store(uri, SUBJECT)
    assert {h.kind for h in again.hits} == {"run_param", "run_artifact"}  # what could not be removed remains


def test_a_clean_store_passes_and_registered_versions_are_scanned(logged_run, mlflow_layout: DataLayout) -> None:
    run = logged_run()
    client = registry.configure(mlflow_layout)
    version = mlflow.register_model(f"runs:/{run['run_id']}/teacher", registry.MODEL_NAME)
    scan = scan_tracking_store(mlflow_layout.mlflow_tracking_uri, SUBJECT)
    assert scan.remaining == [] and scan.model_versions == 1 and scan.logged_models == 1
    assert scan.artifact_files > 0

    client.update_model_version(registry.MODEL_NAME, version.version, description=f"trained on {SUBJECT[0]}")
    hits = scan_tracking_store(mlflow_layout.mlflow_tracking_uri, SUBJECT).remaining
    assert [(h.kind, h.location) for h in hits] == [("model_version_description",
                                                     f"model {registry.MODEL_NAME} v{version.version}")]
