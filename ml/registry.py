"""MLflow: tracking, the model registry and the ``champion``/``previous`` aliases.

The hot path never reads the registry: it runs what the published policy names. The registry is the audit trail
and the switch: the policy document is attached to the model version it came from, status lives in tags
(``validation_status``, ``distilled_from``, ``policy_version``), and promotion moves the alias ``champion``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from warehouse.layout import DataLayout

logger = logging.getLogger(__name__)

MODEL_NAME = "firstmile-propensity"
EXPERIMENT = "firstmile-loop"
PIP_REQUIREMENTS = ["scikit-learn>=1.9,<2", "numpy"]
SKOPS_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def configure(layout: DataLayout, *, tracking_uri: str | None = None) -> MlflowClient:
    """Point MLflow at ``tracking_uri`` or, when it is None or empty, the data directory's SQLite store, and ensure
    the experiment exists.

    ``tracking_uri`` is an MLflow server (``FIRSTMILE_MLFLOW_TRACKING_URI``, read by the entry point's settings and
    passed down: orchestration/settings.py); nothing here reads the environment.
    """
    layout.ensure()
    uri = tracking_uri or layout.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        # A tracking server manages its own artifact store; the local SQLite store keeps artifacts in the data dir.
        local = uri == layout.mlflow_tracking_uri
        client.create_experiment(EXPERIMENT, artifact_location=layout.mlflow_artifacts.resolve().as_uri()
                                 if local else None)
    mlflow.set_experiment(EXPERIMENT)
    return client


def _alias_version(client: MlflowClient, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException:
        return None


def policy_artifact_path(policy_doc: dict[str, Any]) -> str:
    """Where a policy document lives in its run's artifacts: one file per policy version, so two candidates built
    from the same training run never overwrite each other's document."""
    return f"policy/v{policy_doc['policy_version']}/policy.json"


def policy_of_version(client: MlflowClient, version: Any) -> dict[str, Any]:
    """The policy document attached to a model version (tags ``policy_run`` and ``policy_artifact``; older versions:
    the version's run's ``policy/policy.json``)."""
    tags = getattr(version, "tags", None) or {}
    if "policy_artifact" not in tags:
        tags = client.get_model_version(MODEL_NAME, version.version).tags or {}
    # the run the policy was logged to: a version whose head kept the champion's model registers that model (its
    # source is another run), so the version's own run_id is not where the policy is
    path = client.download_artifacts(tags.get("policy_run", version.run_id),
                                     tags.get("policy_artifact", "policy/policy.json"))
    return json.loads(Path(path).read_text())


def champion_model_uri(client: MlflowClient) -> str | None:
    """Where the champion's teacher is (a version whose head kept the champion's model registers that model)."""
    version = _alias_version(client, "champion")
    return str(version.source) if version is not None else None


def champion_policy(client: MlflowClient) -> dict[str, Any] | None:
    version = _alias_version(client, "champion")
    return policy_of_version(client, version) if version is not None else None


MODEL_DESCRIPTION = (
    "firstmile's learned first-mile policy. Each version is the propensity teacher (HistGradientBoosting) of one "
    "loop run; the policy document it produced (distilled students, mined rules, thresholds) is attached as "
    "artifact `policy_artifact` of the version. The alias `champion` is what the hot path runs, `previous` what a "
    "rollback returns to. Tags: validation_status, distilled_from (teacher run), policy_version.")


def register_candidate(client: MlflowClient, run_id: str, policy_doc: dict[str, Any], *, status: str,
                       teacher_run: str, description: str = "", extra_tags: dict[str, str] | None = None,
                       model_uri: str | None = None) -> Any:
    """Register the run's model as a new version, tagged with its policy and status.

    The policy document must already be logged to the run at :func:`policy_artifact_path`.
    """
    version = mlflow.register_model(model_uri or f"runs:/{run_id}/teacher", MODEL_NAME)
    client.update_registered_model(MODEL_NAME, description=MODEL_DESCRIPTION)
    text = policy_doc.get("description", "") + ("\n\n" + description if description else "")
    client.update_model_version(MODEL_NAME, version.version, description=text[:5000])
    for key, value in {"validation_status": status, "distilled_from": teacher_run,
                       "policy_version": str(policy_doc["policy_version"]),
                       "policy_checksum": policy_doc["checksum"],
                       "policy_artifact": policy_artifact_path(policy_doc), "policy_run": run_id,
                       **(extra_tags or {})}.items():
        client.set_model_version_tag(MODEL_NAME, version.version, key, value)
    return version


def promote(client: MlflowClient, version: str) -> str | None:
    """Make ``version`` the champion; the old champion keeps the alias ``previous``. Returns the old version."""
    old = _alias_version(client, "champion")
    if old is not None and str(old.version) != str(version):
        client.set_registered_model_alias(MODEL_NAME, "previous", old.version)
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    client.set_model_version_tag(MODEL_NAME, version, "validation_status", "champion")
    return None if old is None else str(old.version)


def rollback(client: MlflowClient) -> tuple[str, dict[str, Any]]:
    """Re-point ``champion`` to ``previous``; return that version and its policy document (to republish)."""
    previous = _alias_version(client, "previous")
    if previous is None:
        raise LookupError(f"{MODEL_NAME} has no 'previous' version to roll back to")
    current = _alias_version(client, "champion")
    client.set_registered_model_alias(MODEL_NAME, "champion", previous.version)
    if current is not None:
        client.set_registered_model_alias(MODEL_NAME, "previous", current.version)
        client.set_model_version_tag(MODEL_NAME, current.version, "validation_status", "rolled_back")
    return str(previous.version), policy_of_version(client, previous)
