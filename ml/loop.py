"""The learning steps the orchestration runs, in order. Each returns plain data; Dagster assets stay thin.

training set → :func:`train_propensity_run` (teacher + student, MLflow run) → :func:`mine_rules` →
:func:`build_and_backtest` (candidate policy, backtest vs champion, gate) → :func:`register_and_promote`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np

from ml import registry
from ml.backtest import backtest, record_backtest
from ml.bot_rules import MiningConfig, mine_bot_rules
from ml.candidate import (GateConfig, GateResult, StartMode, build_candidate, evaluate_gate,
                          sales_threshold_from_scores, shadow_rule_agreement)
from ml.datasets import FEATURE_COLUMNS, data_version, load_training_events, matrix, time_split
from ml.propensity import student_batch_scores, train_propensity
from streaming.policy import bootstrap_policy
from warehouse.duck import connect
from warehouse.layout import DataLayout

logger = logging.getLogger(__name__)


def current_champion(layout: DataLayout) -> dict[str, Any]:
    """The champion's policy document, or the bootstrap policy before anything was promoted."""
    client = registry.configure(layout)
    return registry.champion_policy(client) or bootstrap_policy()


def _plots(y: np.ndarray, p_teacher: np.ndarray, p_student: np.ndarray, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    paths = []
    if len(np.unique(y)) == 2:
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, p in (("teacher", p_teacher), ("student", p_student)):
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], "k--", lw=0.5)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, time-based test split")
        ax.legend()
        fig.savefig(out / "roc.png", dpi=90)
        plt.close(fig)
        paths.append(out / "roc.png")
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, p in (("teacher", p_teacher), ("student", p_student)):
            frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
            ax.plot(mean, frac, marker="o", label=name)
        ax.plot([0, 1], [0, 1], "k--", lw=0.5)
        ax.set(xlabel="predicted", ylabel="observed", title="Calibration")
        ax.legend()
        fig.savefig(out / "calibration.png", dpi=90)
        plt.close(fig)
        paths.append(out / "calibration.png")
    return paths


def train_propensity_run(layout: DataLayout) -> dict[str, Any]:
    """Train teacher and student on the warehouse's training set; log everything to one MLflow run."""
    registry.configure(layout)
    frame = load_training_events(layout.duckdb_path)
    split = time_split(frame)
    result = train_propensity(split)
    humans_test = split.test.filter(split.test["label_bot"] == 0)
    x_test = matrix(humans_test)
    y_test = humans_test["label_converted"].cast(int).to_numpy()
    p_teacher = result.teacher.predict_proba(x_test)[:, 1] if len(x_test) else np.array([])
    p_student = student_batch_scores(result.student_doc, x_test) if len(x_test) else np.array([])
    humans_all = frame.filter(frame["label_bot"] == 0)
    threshold = sales_threshold_from_scores(student_batch_scores(result.student_doc, matrix(humans_all)))
    with mlflow.start_run(run_name="propensity-teacher-student") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"teacher": "HistGradientBoostingClassifier", "teacher_max_iter": 200,
                           "student": "logistic (distilled, soft labels)", "split": "time",
                           "split_cutoff": split.cutoff, "features": ",".join(FEATURE_COLUMNS)})
        mlflow.set_tags({"data_version": data_version(frame), "kind": "propensity"})
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if v is not None and np.isfinite(v)})
        mlflow.log_metric("sales_threshold", threshold)
        tmp_path = Path(tmp)
        (tmp_path / "student.json").write_text(json.dumps(result.student_doc, indent=2))
        (tmp_path / "features.json").write_text(json.dumps(list(FEATURE_COLUMNS)))
        mlflow.log_artifact(str(tmp_path / "student.json"), "student")
        mlflow.log_artifact(str(tmp_path / "features.json"), "student")
        for plot in _plots(y_test, p_teacher, p_student, tmp_path):
            mlflow.log_artifact(str(plot), "plots")
        # pip_requirements given explicitly: inferring them costs 8-11 s per model (STACK-FACTS.md).
        # MLflow 3.17 saves sklearn models with skops and refuses types it has not been told to trust; we made
        # this model ourselves a second ago.
        mlflow.sklearn.log_model(result.teacher, name="teacher", pip_requirements=registry.PIP_REQUIREMENTS,
                                 skops_trusted_types=registry.SKOPS_TRUSTED,
                                 input_example=x_test[:2] if len(x_test) else None)
        run_id = run.info.run_id
    return {"run_id": run_id, "metrics": result.metrics, "student": result.student_doc,
            "sales_threshold": threshold, "rows": frame.height}


def mine_rules(layout: DataLayout, *, config: MiningConfig = MiningConfig()) -> list[dict[str, Any]]:
    frame = load_training_events(layout.duckdb_path)
    return mine_bot_rules(frame, config=config)


def build_and_backtest(layout: DataLayout, *, champion: dict[str, Any], training: dict[str, Any],
                       mined: list[dict[str, Any]], start_mode: StartMode = "auto",
                       gate_config: GateConfig = GateConfig()) -> dict[str, Any]:
    """Candidate policy from the champion; backtest both on the lake; evaluate the gate; keep the comparison."""
    shadow_ids = [r["id"] for r in champion["rules"] if r.get("mode") == "shadow"]
    with connect(layout.duckdb_path) as con:
        agreement = shadow_rule_agreement(con, layout.lake, shadow_ids)
        candidate = build_candidate(champion, student=training.get("student"), mined=mined,
                                    shadow_agreement=agreement, start_mode=start_mode, gate=gate_config,
                                    sales_threshold=training.get("sales_threshold"))
        result = backtest(con, layout.lake, candidate, champion)
    propensity = dict(training.get("metrics") or {})
    propensity["new_model"] = "propensity" not in (champion.get("models") or {})
    gate: GateResult = evaluate_gate(result, propensity, config=gate_config)
    record_backtest(layout.duckdb_path, {**result, "gate_passed": gate.passed, "gate_reasons": gate.reasons})
    registry.configure(layout)
    with mlflow.start_run(run_id=training["run_id"]):
        mlflow.log_metrics({f"backtest_{k}": float(v) for k, v in result.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.log_dict(result, "backtest/backtest.json")
        mlflow.log_dict({"passed": gate.passed, "reasons": gate.reasons, "checks": gate.checks}, "backtest/gate.json")
    return {"candidate": candidate, "backtest": result, "gate": {"passed": gate.passed, "reasons": gate.reasons,
                                                                 "checks": gate.checks}}


def register_and_promote(layout: DataLayout, *, candidate: dict[str, Any], training: dict[str, Any],
                         gate: dict[str, Any]) -> dict[str, Any]:
    """Attach the policy to the run, register a model version, and move ``champion`` if the gate passed."""
    client = registry.configure(layout)
    with mlflow.start_run(run_id=training["run_id"]):
        mlflow.log_dict(candidate, "policy/policy.json")
    version = registry.register_candidate(client, training["run_id"], candidate,
                                          status="passed_gate" if gate["passed"] else "rejected_by_gate",
                                          teacher_run=training["run_id"])
    (layout.policies / f"policy-v{candidate['policy_version']}.json").write_text(json.dumps(candidate, indent=2))
    previous = registry.promote(client, version.version) if gate["passed"] else None
    return {"model_version": str(version.version), "promoted": gate["passed"], "previous": previous,
            "policy_version": candidate["policy_version"]}
