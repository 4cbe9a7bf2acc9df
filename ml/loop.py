"""The learning steps the orchestration runs, in order. Each returns plain data; Dagster assets stay thin.

training set → :func:`train_propensity_run` (propensity teacher + student, and the bot head as a second MLflow
run) → :func:`mine_rules` → :func:`build_and_backtest` (candidate policy, backtest vs champion, gate) →
:func:`register_and_promote`.
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
import polars as pl

from ml import registry
from ml.backtest import backtest, record_backtest
from ml.bot_model import BOT_FEATURES, BotModelConfig, bot_matrix, train_bot_model, with_datacenter
from ml.bot_rules import MiningConfig, mine_bot_rules
from ml.candidate import (
    GateConfig,
    GateResult,
    StartMode,
    build_candidate,
    evaluate_gate,
    sales_threshold_from_scores,
    shadow_ids,
    shadow_rule_agreement,
)
from ml.datasets import FEATURE_COLUMNS, Split, data_version, load_training_events, matrix, time_split
from ml.propensity import InsufficientLabels, student_batch_scores, train_propensity
from streaming.policy import bootstrap_policy
from streaming.sessions import FEATURES
from warehouse.duck import connect
from warehouse.layout import DataLayout

logger = logging.getLogger(__name__)


def current_champion(layout: DataLayout, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """The champion's policy document, or the bootstrap policy before anything was promoted."""
    client = registry.configure(layout, tracking_uri=tracking_uri)
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


def _log_model(model: Any, name: str, example: np.ndarray) -> str:
    """Log the model; return its URI (MLflow 3 keeps logged models apart from run artifacts)."""
    # pip_requirements given explicitly: inferring them costs 8-11 s per model (STACK-FACTS.md).
    # MLflow 3.17 saves sklearn models with skops and refuses types it has not been told to trust; we made
    # this model ourselves a second ago.
    info = mlflow.sklearn.log_model(model, name=name, pip_requirements=registry.PIP_REQUIREMENTS,
                                    skops_trusted_types=registry.SKOPS_TRUSTED,
                                    input_example=example[:2] if len(example) else None)
    return str(info.model_uri)


def _log_files(files: dict[str, Any], artifact_path: str, tmp: Path) -> None:
    for filename, content in files.items():
        path = tmp / filename
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2, default=str))
        mlflow.log_artifact(str(path), artifact_path)


def _finite(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {prefix + k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)}


def _describe_run(head: str, metrics: dict[str, Any], features: tuple[str, ...], version: str) -> str:
    def f(key: str) -> str:
        v = metrics.get(key)
        return "n/a" if v is None else f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"

    return (f"{head}: HistGradientBoosting teacher on full history (time split), distilled into a logistic "
            f"first-mile student over {len(features)} features ({', '.join(features)}). Held-out AUC teacher "
            f"{f('teacher_auc')}, student {f('student_auc')} (gap {f('auc_gap')}), agreement "
            f"{f('fidelity_agreement')}; per event: teacher {f('teacher_us_per_event')} µs, student "
            f"{f('student_us_per_event')} µs ({f('speedup')}×). Data: {version}.")


def train_bot_run(layout: DataLayout, *, frame: Any = None, split: Split | None = None,
                  config: BotModelConfig | None = None, parent_run_id: str | None = None,
                  tracking_uri: str | None = None) -> dict[str, Any]:
    """The bot head: teacher on ``label_bot``, distilled student with a human-safe threshold, one MLflow run.

    Returns ``{"run_id", "metrics", "student", "threshold"}``; ``student`` is the ``models.bot`` document (mode
    ``shadow``; :func:`ml.candidate.build_candidate` decides its mode in the candidate). ``tracking_uri``: an MLflow
    server; None: the data directory's store (:func:`ml.registry.configure`), as in every step below.
    """
    registry.configure(layout, tracking_uri=tracking_uri)
    frame = load_training_events(layout.duckdb_path) if frame is None else frame
    split = split or time_split(frame)
    config = config or BotModelConfig()
    try:
        result = train_bot_model(split, config=config, history=frame)
    except InsufficientLabels as exc:
        return _skipped_head("bot", str(exc), data_version(frame), parent_run_id)
    test = with_datacenter(split.test)
    x_test, y_test = bot_matrix(test), test["label_bot"].cast(int).to_numpy()
    p_teacher = result.teacher.predict_proba(x_test)[:, 1] if len(x_test) else np.array([])
    p_student = student_batch_scores(result.student_doc, x_test) if len(x_test) else np.array([])
    version = data_version(frame)
    description = _describe_run("Bot likelihood", result.metrics, BOT_FEATURES, version) + (
        f" Threshold {result.threshold} keeps known humans at or under {config.max_human_rate:.2%} on history.")
    with mlflow.start_run(run_name="bot-teacher-student") as run, tempfile.TemporaryDirectory() as tmp:
        result.student_doc["source"] = {"run_id": run.info.run_id, "data_version": version,
                                        "teacher": "HistGradientBoostingClassifier"}
        mlflow.log_params({"teacher": "HistGradientBoostingClassifier", "teacher_max_iter": 200,
                           "student": "logistic (distilled, soft labels)", "split": "time",
                           "split_cutoff": split.cutoff, "features": ",".join(BOT_FEATURES),
                           "max_human_rate": config.max_human_rate, "min_threshold": config.min_threshold,
                           "label": "label_bot (hindsight, per session)"})
        mlflow.set_tags({"data_version": version, "kind": "bot", "mlflow.note.content": description,
                         **({"loop_run_id": parent_run_id} if parent_run_id else {})})
        mlflow.log_metrics(_finite(result.metrics))
        tmp_path = Path(tmp)
        _log_files({"student.json": result.student_doc, "features.json": list(BOT_FEATURES),
                    "description.md": description}, "student", tmp_path)
        for plot in _plots(y_test, p_teacher, p_student, tmp_path):
            mlflow.log_artifact(str(plot), "plots")
        _log_model(result.teacher, "teacher", x_test)
        run_id = run.info.run_id
    return {"run_id": run_id, "metrics": result.metrics, "student": result.student_doc,
            "threshold": result.threshold, "description": description}


def _skipped_head(head: str, reason: str, version: str, parent_run_id: str | None) -> dict[str, Any]:
    """A head that could not train: an MLflow run that says why (tag ``skipped``), no student (the candidate keeps
    the champion's model for this head), and the reason for the asset's metadata and the gate's reasons."""
    note = f"{head} head not trained on data {version}: {reason}. The champion's model is kept."
    with mlflow.start_run(run_name=f"{head}-skipped") as run:
        mlflow.set_tags({"data_version": version, "kind": head, "skipped": reason, "mlflow.note.content": note,
                         **({"loop_run_id": parent_run_id} if parent_run_id else {})})
        run_id = run.info.run_id
    return {"run_id": run_id, "metrics": {}, "student": None, "threshold": None, "description": note,
            "skipped": {head: reason}}


def train_propensity_run(layout: DataLayout, *, bot_head: bool = True,
                         bot_config: BotModelConfig | None = None, tracking_uri: str | None = None
                         ) -> dict[str, Any]:
    """Train teacher and student on the warehouse's training set; log everything to one MLflow run.

    With ``bot_head`` (default) the bot-likelihood head is trained on the same split and logged as a second run;
    it is returned under ``"bot"`` (see :func:`train_bot_run`).
    """
    registry.configure(layout, tracking_uri=tracking_uri)
    frame = load_training_events(layout.duckdb_path)
    split = time_split(frame)
    try:
        result = train_propensity(split)
    except InsufficientLabels as exc:
        # this head keeps the champion's model; the other head still trains
        kept: dict[str, Any] = _skipped_head("propensity", str(exc), data_version(frame), None)
        kept.update(rows=frame.height, data_version=data_version(frame), sales_threshold=None)
        if bot_head:
            kept["bot"] = train_bot_run(layout, frame=frame, split=split, config=bot_config,
                                       parent_run_id=kept["run_id"], tracking_uri=tracking_uri)
            kept["metrics"] = {f"bot_{k}": v for k, v in kept["bot"]["metrics"].items()}
            kept["skipped"] = {**kept["skipped"], **kept["bot"].get("skipped", {})}
        return kept
    humans_test = split.test.filter(split.test["label_bot"] == 0)
    x_test = matrix(humans_test)
    y_test = humans_test["label_converted"].cast(int).to_numpy()
    p_teacher = result.teacher.predict_proba(x_test)[:, 1] if len(x_test) else np.array([])
    p_student = student_batch_scores(result.student_doc, x_test) if len(x_test) else np.array([])
    humans_all = frame.filter(frame["label_bot"] == 0)
    threshold = sales_threshold_from_scores(student_batch_scores(result.student_doc, matrix(humans_all)))
    version = data_version(frame)
    description = _describe_run("Purchase propensity", result.metrics, FEATURES, version) + (
        f" Routes the top 5% of human propensity (score ≥ {threshold:.4f}) to dest.sales.")
    with mlflow.start_run(run_name="propensity-teacher-student") as run, tempfile.TemporaryDirectory() as tmp:
        result.student_doc["source"] = {"run_id": run.info.run_id, "data_version": version,
                                        "teacher": "HistGradientBoostingClassifier"}
        mlflow.log_params({"teacher": "HistGradientBoostingClassifier", "teacher_max_iter": 200,
                           "student": "logistic (distilled, soft labels)", "split": "time",
                           "split_cutoff": split.cutoff, "features": ",".join(FEATURE_COLUMNS),
                           "label": "label_converted (order later in the session), humans only"})
        mlflow.set_tags({"data_version": version, "kind": "propensity", "mlflow.note.content": description})
        mlflow.log_metrics(_finite(result.metrics))
        mlflow.log_metric("sales_threshold", threshold)
        tmp_path = Path(tmp)
        _log_files({"student.json": result.student_doc, "features.json": list(FEATURES),
                    "description.md": description}, "student", tmp_path)
        for plot in _plots(y_test, p_teacher, p_student, tmp_path):
            mlflow.log_artifact(str(plot), "plots")
        model_uri = _log_model(result.teacher, "teacher", x_test)
        run_id = run.info.run_id
    out: dict[str, Any] = {"run_id": run_id, "model_uri": model_uri, "metrics": result.metrics,
                           "student": result.student_doc,
                           "sales_threshold": threshold, "rows": frame.height, "data_version": version,
                           "description": description}
    if bot_head:
        bot = train_bot_run(layout, frame=frame, split=split, config=bot_config, parent_run_id=run_id,
                            tracking_uri=tracking_uri)
        out["bot"] = bot
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tag("bot_run_id", bot["run_id"])
            mlflow.log_metrics(_finite(bot["metrics"], "bot_"))
        # Dagster shows these as the asset's metadata next to the propensity metrics.
        out["metrics"] = {**result.metrics, **{f"bot_{k}": v for k, v in bot["metrics"].items()}}
        out["propensity_metrics"] = result.metrics
        if bot.get("skipped"):
            out["skipped"] = bot["skipped"]
    return out


def mine_rules(layout: DataLayout, *, config: MiningConfig | None = None) -> list[dict[str, Any]]:
    """Bot rules the champion missed, mined from the training set's hindsight labels (:mod:`ml.bot_rules`).

    Only settled sessions are mined: a session that ended moments ago may still buy, so its hindsight label
    ("never bought") cannot be judged yet, and mining it would teach the tree that a hoarder is a human."""
    frame = load_training_events(layout.duckdb_path)
    if "label_settled" in frame.columns:
        frame = frame.filter(pl.col("label_settled").fill_null(False))
    return mine_bot_rules(frame, config=config or MiningConfig())


def build_and_backtest(layout: DataLayout, *, champion: dict[str, Any], training: dict[str, Any],
                       mined: list[dict[str, Any]], start_mode: StartMode = "auto",
                       gate_config: GateConfig | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Candidate policy from the champion; backtest both on the lake; evaluate the gate; keep the comparison.

    Shadow rules of the champion (and its bot model, id ``model.bot``) are judged on what the hot path recorded
    for them in the lake's ledger; those that agree with hindsight are enforced in the candidate.
    """
    gate_config = gate_config or GateConfig()
    ids, since = shadow_ids(champion)
    rejected = _rejected_heads(training, gate_config)
    if rejected:
        # A head whose student fails its own checks keeps the champion's model, like a head without labels: the
        # other head and the mined rules still ship (one head's failure never blocks another's).
        training = {**training, "skipped": {**(training.get("skipped") or {}), **rejected}}
        if "propensity" in rejected:
            training.update(student=None, sales_threshold=None)
        if "bot" in rejected:
            training["bot"] = {}
    bot = training.get("bot") or {}
    with connect(layout.duckdb_path) as con:
        agreement = shadow_rule_agreement(con, ids, since_versions=since)
        candidate = build_candidate(champion, student=training.get("student"), mined=mined,
                                    shadow_agreement=agreement, start_mode=start_mode, gate=gate_config,
                                    sales_threshold=training.get("sales_threshold"), bot_model=bot.get("student"))
        result = backtest(con, candidate, champion)
    skipped = training.get("skipped") or {}
    propensity: dict[str, Any] | None = None
    if "propensity" not in skipped:
        propensity = dict(training.get("propensity_metrics") or training.get("metrics") or {})
        propensity["new_model"] = "propensity" not in (champion.get("models") or {})
    shipped_bot = (candidate.get("models") or {}).get("bot") or {}
    bot_metrics = None
    if bot and (shipped_bot.get("source") or {}).get("run_id") == bot.get("run_id"):
        # Only a bot student this run trained is judged on its fidelity; a promoted champion model was judged
        # when it entered.
        bot_metrics = {**bot["metrics"], "new_model": "bot" not in (champion.get("models") or {})}
    gate: GateResult = evaluate_gate(result, propensity, config=gate_config, bot=bot_metrics)
    gate.reasons.extend(f"{head} head kept the champion's model: {why}" for head, why in sorted(skipped.items()))
    result["shadow_agreement"] = agreement
    record_backtest(layout.duckdb_path, {**result, "gate_passed": gate.passed, "gate_reasons": gate.reasons})
    registry.configure(layout, tracking_uri=tracking_uri)
    with mlflow.start_run(run_id=training["run_id"]):
        mlflow.log_metrics({f"backtest_{k}": float(v) for k, v in result.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.log_dict(result, "backtest/backtest.json")
        mlflow.log_dict({"passed": gate.passed, "reasons": gate.reasons, "checks": gate.checks}, "backtest/gate.json")
    return {"candidate": candidate, "backtest": result, "shadow_agreement": agreement,
            "gate": {"passed": gate.passed, "reasons": gate.reasons, "checks": gate.checks},
            "kept_heads": skipped}


def _rejected_heads(training: dict[str, Any], gate: GateConfig) -> dict[str, str]:
    """Heads this run trained whose student fails the gate's per-head checks (fidelity, latency), with why."""
    out: dict[str, str] = {}
    skipped = training.get("skipped") or {}
    heads = {"propensity": training.get("propensity_metrics") or training.get("metrics") or {},
             "bot": (training.get("bot") or {}).get("metrics") or {}}
    for head, metrics in heads.items():
        if head in skipped or not metrics:
            continue
        gap, cost = metrics.get("auc_gap"), metrics.get("student_us_per_event") or 0.0
        if gap is not None and gap > gate.max_auc_gap:
            out[head] = f"its new student's AUC is {gap:.3f} below the teacher's (max {gate.max_auc_gap})"
        elif cost > gate.latency_budget_us:
            out[head] = f"its new student costs {cost:.1f} µs per event (budget {gate.latency_budget_us} µs)"
    return out


def register_and_promote(layout: DataLayout, *, candidate: dict[str, Any], training: dict[str, Any],
                         gate: dict[str, Any], tracking_uri: str | None = None,
                         kept_heads: dict[str, str] | None = None) -> dict[str, Any]:
    """Attach the policy to the run, register a model version, and move ``champion`` if the gate passed.

    The version carries the tags ``validation_status`` (``passed_gate``/``rejected_by_gate``, then ``champion``),
    ``distilled_from`` (the teacher run), ``policy_version``, ``policy_artifact``, ``data_version`` and, with a
    bot head, ``bot_distilled_from``; its description is the policy's plus the models'.
    """
    client = registry.configure(layout, tracking_uri=tracking_uri)
    with mlflow.start_run(run_id=training["run_id"]):
        mlflow.log_dict(candidate, registry.policy_artifact_path(candidate))
        mlflow.log_dict(candidate, "policy/policy.json")  # the newest, where earlier versions looked
    kept = kept_heads or {}
    bot = {} if "bot" in kept else (training.get("bot") or {})
    extra = {"data_version": str(training.get("data_version", ""))[:5000],
             "gate_reasons": "; ".join(gate.get("reasons") or [])[:5000] or "none"}
    if bot:
        extra["bot_distilled_from"] = bot["run_id"]
        extra["bot_mode"] = str(((candidate.get("models") or {}).get("bot") or {}).get("mode", "absent"))
    description = "\n".join(d for d in (training.get("description"), bot.get("description")) if d)
    version = registry.register_candidate(client, training["run_id"], candidate,
                                          status="passed_gate" if gate["passed"] else "rejected_by_gate",
                                          teacher_run=training["run_id"], description=description, extra_tags=extra,
                                          model_uri=(None if "propensity" in kept else training.get("model_uri"))
                                          or registry.champion_model_uri(client)
                                          or (f"runs:/{bot['run_id']}/teacher" if bot.get("student") else None))
    layout.policies.mkdir(parents=True, exist_ok=True)
    (layout.policies / f"policy-v{candidate['policy_version']}.json").write_text(json.dumps(candidate, indent=2))
    previous = registry.promote(client, version.version) if gate["passed"] else None
    return {"model_version": str(version.version), "promoted": gate["passed"], "previous": previous,
            "policy_version": candidate["policy_version"]}
