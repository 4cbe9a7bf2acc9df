"""In-session purchase propensity: a strong teacher on full history, distilled into a first-mile student.

The teacher (HistGradientBoosting) may use everything; the student is a logistic model over the session-so-far
features the hot path has at the moment of the event, fitted to the teacher's soft labels (each row twice, weighted
``p`` and ``1 - p``), and exported as coefficients the hot path evaluates as a plain dot product
(:class:`streaming.policy.LinearModel`). The same distillation serves the bot head (:mod:`ml.bot_model`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from ml.datasets import Split, matrix
from streaming.errors import FirstmileError
from streaming.policy import LinearModel, bootstrap_policy, compile_policy, seal
from streaming.sessions import FEATURES

#: OpenMP threads for the teachers (fit and predict). One: on the training sets the warehouse produces (thousands of
#: rows) thread start-up costs more than it saves, and a single-row predict with the default pool measured 8 ms
#: against 1.4 ms with one thread on a busy 2-core host; pass ``threads=None`` to use every core.
TEACHER_THREADS = 1

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


def _transform(x: np.ndarray, transforms: Sequence[str]) -> np.ndarray:
    out = np.array(x, dtype=np.float64, copy=True)
    for j, kind in enumerate(transforms):
        if kind == "log1p":
            out[:, j] = np.log1p(np.maximum(out[:, j], 0.0))
    return out


#: Fewer labels than this of either class: a head keeps the champion's model instead of training.
MIN_PER_CLASS = 20


class InsufficientLabels(FirstmileError, ValueError):
    """Not enough labels of each class to train a head; the loop keeps the champion's model for it."""


def train_teacher(x: np.ndarray, y: np.ndarray, *, seed: int = 7) -> HistGradientBoostingClassifier:
    """HistGradientBoosting with early stopping on a held-out 15%: on thousands of rows 200 full-depth rounds fit
    noise (a feature unrelated to the label moved the distilled student by 4 points), and the student inherits it."""
    positives = int(np.sum(y == 1))
    negatives = len(y) - positives
    if min(positives, negatives) < MIN_PER_CLASS:
        raise InsufficientLabels(f"the training set holds {positives} positives and {negatives} negatives "
                                 f"(at least {MIN_PER_CLASS} of each are needed to learn)")
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.08, max_leaf_nodes=31,
                                           l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
                                           n_iter_no_change=15, random_state=seed)
    return model.fit(x, y)


def distill_student(x: np.ndarray, soft: np.ndarray, *, features: Sequence[str] = FEATURES, c: float = 1.0
                    ) -> dict[str, Any]:
    """Fit a logistic student to the teacher's probabilities ``soft``; return the policy's model document.

    ``features`` names the columns of ``x`` (facts of the hot path, in order); count-like ones get ``log1p``.
    """
    transforms = ["log1p" if f in LOG_FEATURES else "none" for f in features]
    xt = _transform(x, transforms)
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
        "features": list(features),
        "transform": transforms,
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "coef": [float(v) for v in student.coef_[0]],
        "intercept": float(student.intercept_[0]),
    }


def student_batch_scores(doc: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The exported student evaluated in batch with numpy (the reference the hot path must match).

    ``x`` holds the document's ``features`` in order.
    """
    xt = _transform(x, doc.get("transform") or ["none"] * len(doc["features"]))
    z = ((xt - np.array(doc["mean"])) / np.array(doc["scale"])) @ np.array(doc["coef"]) + doc["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def as_linear_model(doc: dict[str, Any], *, name: str = "propensity") -> LinearModel:
    """Compile ``doc`` exactly as the hot path does (through :func:`compile_policy`, validation included)."""
    policy = bootstrap_policy()
    if name == "bot":
        doc = {"threshold": 0.5, **doc}
    policy["models"] = {name: doc}
    compiled = compile_policy(seal(policy))
    model = compiled.propensity if name == "propensity" else compiled.bot_model
    assert model is not None
    return model


def rows_as_facts(doc: dict[str, Any], x: np.ndarray) -> list[dict[str, Any]]:
    """Rows of ``x`` as the hot path's facts dicts (``datacenter`` a bool, like :mod:`streaming.pipeline`)."""
    out = []
    for row in x:
        facts: dict[str, Any] = dict(zip(doc["features"], map(float, row), strict=True))
        if "datacenter" in facts:
            facts["datacenter"] = bool(facts["datacenter"])
        out.append(facts)
    return out


def per_event_cost_us(teacher: HistGradientBoostingClassifier, doc: dict[str, Any], rows: np.ndarray,
                      *, repeat: int = 100, passes: int = 2, name: str = "propensity") -> tuple[float, float]:
    """Median single-event cost (µs) of the teacher's ``predict_proba`` on one row and of the hot-path student
    (``LinearModel.score`` on a facts dict, as the hot path runs it), timed the same way: one thread, the same first
    ``repeat`` rows, ``passes`` passes each, every call timed, the order of the two blocks alternating by pass."""
    model = as_linear_model(doc, name=name)
    sample = rows[:repeat]
    facts = rows_as_facts(doc, sample)
    one_row = [row.reshape(1, -1) for row in sample]
    teacher_ns: list[int] = []
    student_ns: list[int] = []
    with threadpool_limits(1):
        teacher.predict_proba(one_row[0])  # untimed warm-up of each
        model.score(facts[0])
        for p in range(passes):
            blocks: list[tuple[Any, list[Any], list[int]]] = [(teacher.predict_proba, one_row, teacher_ns),
                                                              (model.score, facts, student_ns)]
            for fn, inputs, out in (blocks if p % 2 == 0 else blocks[::-1]):
                for x in inputs:
                    start = time.perf_counter_ns()
                    fn(x)
                    out.append(time.perf_counter_ns() - start)
    return float(np.median(teacher_ns) / 1e3), float(np.median(student_ns) / 1e3)


def fidelity(y: np.ndarray, p_teacher: np.ndarray, p_student: np.ndarray, *, threshold: float = 0.5
             ) -> dict[str, float | None]:
    """How faithfully the student reproduces the teacher on held-out rows (AUCs, gap, agreement, MAE)."""
    teacher_auc, student_auc = _auc(y, p_teacher), _auc(y, p_student)
    n = len(y)
    return {
        "teacher_auc": teacher_auc,
        "student_auc": student_auc,
        "auc_gap": None if teacher_auc is None or student_auc is None else teacher_auc - student_auc,
        "fidelity_agreement": float(np.mean((p_teacher >= threshold) == (p_student >= threshold))) if n else None,
        "fidelity_mae": float(np.mean(np.abs(p_teacher - p_student))) if n else None,
    }


def train_propensity(split: Split, *, seed: int = 7, threads: int | None = TEACHER_THREADS) -> PropensityResult:
    """Teacher on humans' conversions (train split), student distilled from it, fidelity and cost on the test split.
    """
    with threadpool_limits(threads):
        return _train_propensity(split, seed=seed)


def _train_propensity(split: Split, *, seed: int) -> PropensityResult:
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
    teacher_us, student_us = per_event_cost_us(teacher, student_doc, x_test if len(x_test) else x_train)
    metrics: dict[str, float | None] = {
        "rows_train": float(len(x_train)),
        "rows_test": float(len(x_test)),
        "positive_rate_train": float(y_train.mean()) if len(y_train) else None,
        **fidelity(y_test, p_teacher, p_student),
        "teacher_us_per_event": teacher_us,
        "student_us_per_event": student_us,
        "speedup": teacher_us / student_us if student_us > 0 else math.inf,
    }
    return PropensityResult(teacher, student_doc, metrics)
