"""In-session purchase propensity: a strong teacher on full history, distilled into a first-mile student.

The teacher (HistGradientBoosting) may use everything; the student is a logistic model over the session-so-far
features the hot path has at the moment of the event, fitted to the teacher's soft labels (each row twice, weighted
``p`` and ``1 - p``), and exported as coefficients the hot path evaluates as a plain dot product.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ml.datasets import Split, matrix
from streaming.policy import LinearModel, compile_policy
from streaming.sessions import FEATURES

#: Count-like features enter the student through log1p (heavy tails; keeps the logistic model well-behaved).
LOG_FEATURES = frozenset({"session_event_count", "session_duration_s", "seconds_since_prev", "mean_interval_s",
                          "interval_std_s", "min_interval_s", "events_per_minute", "page_views", "product_views",
                          "cart_adds", "cart_value"})


@dataclass
class PropensityResult:
    teacher: HistGradientBoostingClassifier
    student_doc: dict[str, Any]
    metrics: dict[str, float | None]


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _transform(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    for j, name in enumerate(FEATURES):
        if name in LOG_FEATURES:
            out[:, j] = np.log1p(np.maximum(out[:, j], 0.0))
    return out


def train_teacher(x: np.ndarray, y: np.ndarray, *, seed: int = 7) -> HistGradientBoostingClassifier:
    if len(np.unique(y)) < 2:
        raise ValueError("the training set holds a single class: no conversions (or none missing) to learn from")
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.08, max_leaf_nodes=31,
                                           l2_regularization=1.0, random_state=seed)
    return model.fit(x, y)


def distill_student(x: np.ndarray, soft: np.ndarray, *, c: float = 1.0) -> dict[str, Any]:
    """Fit a logistic student to the teacher's probabilities; return the policy's model document."""
    xt = _transform(x)
    mean = xt.mean(axis=0)
    scale = xt.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (xt - mean) / scale
    n = len(z)
    stacked = np.vstack([z, z])
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    weights = np.concatenate([soft, 1.0 - soft])
    student = LogisticRegression(C=c, max_iter=2000).fit(stacked, labels, sample_weight=weights)
    return {
        "kind": "logistic",
        "features": list(FEATURES),
        "transform": ["log1p" if f in LOG_FEATURES else "none" for f in FEATURES],
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "coef": [float(v) for v in student.coef_[0]],
        "intercept": float(student.intercept_[0]),
    }


def student_batch_scores(doc: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The exported student evaluated in batch with numpy (the reference the hot path must match)."""
    xt = _transform(x) if doc.get("transform") else x
    z = (xt - np.array(doc["mean"])) / np.array(doc["scale"]) @ np.array(doc["coef"]) + doc["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def as_linear_model(doc: dict[str, Any]) -> LinearModel:
    from streaming.policy import seal, bootstrap_policy

    policy = bootstrap_policy()
    policy["models"] = {"propensity": doc}
    compiled = compile_policy(seal(policy))
    assert compiled.propensity is not None
    return compiled.propensity


def per_event_cost_us(teacher: HistGradientBoostingClassifier, doc: dict[str, Any], rows: np.ndarray,
                      *, repeat: int = 200) -> tuple[float, float]:
    """Median single-event cost (µs) of the teacher's ``predict_proba`` on one row and of the hot-path student."""
    model = as_linear_model(doc)
    facts = [dict(zip(FEATURES, map(float, r), strict=True)) for r in rows[:repeat]]
    teacher_times, student_times = [], []
    for i, row in enumerate(rows[: min(repeat, 50)]):
        start = time.perf_counter()
        teacher.predict_proba(row.reshape(1, -1))
        teacher_times.append(time.perf_counter() - start)
        del i
    for f in facts:
        start = time.perf_counter()
        model.score(f)
        student_times.append(time.perf_counter() - start)
    return float(np.median(teacher_times) * 1e6), float(np.median(student_times) * 1e6)


def train_propensity(split: Split, *, seed: int = 7) -> PropensityResult:
    humans_train = split.train.filter(split.train["label_bot"] == 0) if "label_bot" in split.train.columns \
        else split.train
    humans_test = split.test.filter(split.test["label_bot"] == 0) if "label_bot" in split.test.columns \
        else split.test
    x_train, y_train = matrix(humans_train), humans_train["label_converted"].cast(int).to_numpy()
    x_test, y_test = matrix(humans_test), humans_test["label_converted"].cast(int).to_numpy()
    teacher = train_teacher(x_train, y_train, seed=seed)
    student_doc = distill_student(x_train, teacher.predict_proba(x_train)[:, 1])
    p_teacher = teacher.predict_proba(x_test)[:, 1] if len(x_test) else np.array([])
    p_student = student_batch_scores(student_doc, x_test) if len(x_test) else np.array([])
    teacher_auc, student_auc = _auc(y_test, p_teacher), _auc(y_test, p_student)
    teacher_us, student_us = per_event_cost_us(teacher, student_doc, x_test if len(x_test) else x_train)
    metrics: dict[str, float | None] = {
        "rows_train": float(len(x_train)),
        "rows_test": float(len(x_test)),
        "positive_rate_train": float(y_train.mean()) if len(y_train) else None,
        "teacher_auc": teacher_auc,
        "student_auc": student_auc,
        "auc_gap": None if teacher_auc is None or student_auc is None else teacher_auc - student_auc,
        "fidelity_agreement": float(np.mean((p_teacher >= 0.5) == (p_student >= 0.5))) if len(x_test) else None,
        "fidelity_mae": float(np.mean(np.abs(p_teacher - p_student))) if len(x_test) else None,
        "teacher_us_per_event": teacher_us,
        "student_us_per_event": student_us,
        "speedup": teacher_us / student_us if student_us > 0 else math.inf,
    }
    return PropensityResult(teacher, student_doc, metrics)
