"""Bot likelihood, the policy's second head: a teacher on hindsight bot labels, distilled into a first-mile student.

The teacher (HistGradientBoosting) learns ``label_bot`` (the warehouse's hindsight verdict on the whole session)
from what the hot path knows at the event: the session-so-far features and the ``datacenter`` flag. The student is
the same logistic distillation as the propensity head (:func:`ml.propensity.distill_student`) and ships as the
policy's ``models.bot`` document with a ``threshold`` chosen on history so that known humans are hit at most at
``max_human_rate``, and ``mode`` ``shadow`` when first introduced (the hot path records ``model.bot`` in the ledger's
``shadow_rules_fired`` without quarantining; :mod:`ml.candidate` promotes it once the record agrees with hindsight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from ml.datasets import FEATURE_COLUMNS, Split
from ml.propensity import (
    TEACHER_THREADS,
    distill_student,
    fidelity,
    per_event_cost_us,
    student_batch_scores,
    train_teacher,
)
from streaming.bots import is_datacenter
from streaming.sessions import FEATURES

#: The bot head's facts, in the model's order: session so far plus the network flag the hot path derives from ASN.
BOT_FEATURES: tuple[str, ...] = (*FEATURES, "datacenter")


@dataclass(frozen=True)
class BotModelConfig:
    """How the bot head is trained and where its threshold sits.

    ``max_human_rate`` (default 0.002, like :class:`ml.bot_rules.MiningConfig`): the threshold is the lowest one at
    which at most this fraction of known humans in history would score at or above it. ``min_threshold`` (0.5)
    keeps the model from flagging events it thinks are more likely human than bot.
    """

    max_human_rate: float = 0.002
    min_threshold: float = 0.5
    seed: int = 7
    threads: int | None = TEACHER_THREADS


@dataclass
class BotModelResult:
    teacher: HistGradientBoostingClassifier
    student_doc: dict[str, Any]
    threshold: float
    metrics: dict[str, float | None]


def with_datacenter(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the ``datacenter`` flag when the training set lacks it, derived from ``asn`` exactly as the hot path does.

    The hot path stamps ``datacenter = streaming.bots.is_datacenter(asn)``; recomputing it from the same ASN string
    gives the same value, so the student sees at training time what it will see at the first mile.
    """
    if "datacenter" in frame.columns:
        return frame.with_columns(pl.col("datacenter").cast(pl.Boolean).fill_null(False))
    if "asn" not in frame.columns:
        return frame.with_columns(pl.lit(False).alias("datacenter"))
    return frame.with_columns(pl.col("asn").map_elements(is_datacenter, return_dtype=pl.Boolean)
                              .fill_null(False).alias("datacenter"))


def bot_matrix(frame: pl.DataFrame) -> np.ndarray:
    """Rows × :data:`BOT_FEATURES` as float64 (``datacenter`` as 0/1)."""
    frame = with_datacenter(frame)
    return frame.select([pl.col(c).cast(pl.Float64).fill_null(0.0) for c in FEATURE_COLUMNS]
                        + [pl.col("datacenter").cast(pl.Float64)]).to_numpy()


def human_safe_threshold(human_scores: np.ndarray, *, max_human_rate: float, min_threshold: float = 0.5) -> float:
    """The lowest threshold (≥ ``min_threshold``, 6 decimals) at which ``score >= threshold`` hits at most
    ``max_human_rate`` of ``human_scores``. Rounded up, never down, so the bound holds for the rounded value."""
    n = len(human_scores)
    if n == 0:
        return max(min_threshold, 0.5)
    allowed = int(math.floor(max_human_rate * n))
    ordered = np.sort(human_scores)[::-1]
    # The (allowed+1)-th highest human score must fall below the threshold.
    cut = float(ordered[allowed]) if allowed < n else -math.inf
    threshold = max(min_threshold, math.ceil(np.nextafter(cut, math.inf) * 1e6) / 1e6)
    return min(threshold, 1.0)


def train_bot_model(split: Split, *, config: BotModelConfig = BotModelConfig(),
                    history: pl.DataFrame | None = None) -> BotModelResult:
    """Teacher on the train split, student distilled from it, fidelity on the test split, threshold on history.

    ``history`` (default: train + test) is where the threshold is chosen: the same events the backtest replays.
    """
    with threadpool_limits(config.threads):
        return _train_bot_model(split, config=config, history=history)


def _train_bot_model(split: Split, *, config: BotModelConfig, history: pl.DataFrame | None) -> BotModelResult:
    train, test = with_datacenter(split.train), with_datacenter(split.test)
    x_train, y_train = bot_matrix(train), train["label_bot"].cast(int).to_numpy()
    x_test, y_test = bot_matrix(test), test["label_bot"].cast(int).to_numpy()
    teacher = train_teacher(x_train, y_train, seed=config.seed)
    student_doc = distill_student(x_train, teacher.predict_proba(x_train)[:, 1], features=BOT_FEATURES)
    hist = with_datacenter(history) if history is not None else pl.concat([train, test], how="diagonal_relaxed")
    hist_scores = student_batch_scores(student_doc, bot_matrix(hist))
    hist_labels = hist["label_bot"].cast(int).to_numpy()
    threshold = human_safe_threshold(hist_scores[hist_labels == 0], max_human_rate=config.max_human_rate,
                                     min_threshold=config.min_threshold)
    student_doc["threshold"] = threshold
    student_doc["mode"] = "shadow"
    p_teacher = teacher.predict_proba(x_test)[:, 1] if len(x_test) else np.array([])
    p_student = student_batch_scores(student_doc, x_test) if len(x_test) else np.array([])
    teacher_us, student_us = per_event_cost_us(teacher, student_doc, x_test if len(x_test) else x_train, name="bot")
    flagged = p_student >= threshold
    caught_before = test["is_bot"].fill_null(False).to_numpy() if "is_bot" in test.columns \
        else np.zeros(len(test), dtype=bool)
    bots, humans = y_test == 1, y_test == 0
    missed = bots & ~caught_before
    hist_flagged = hist_scores >= threshold
    metrics: dict[str, float | None] = {
        "rows_train": float(len(x_train)),
        "rows_test": float(len(x_test)),
        "bot_rate_train": float(y_train.mean()) if len(y_train) else None,
        **fidelity(y_test, p_teacher, p_student),
        "agreement_at_threshold": float(np.mean((p_teacher >= threshold) == flagged)) if len(x_test) else None,
        "threshold": threshold,
        "test_bot_recall": float(flagged[bots].mean()) if bots.any() else None,
        "test_recall_of_missed": float(flagged[missed].mean()) if missed.any() else None,
        "test_human_hit_rate": float(flagged[humans].mean()) if humans.any() else None,
        "history_human_hit_rate": float(hist_flagged[hist_labels == 0].mean()) if (hist_labels == 0).any()
        else None,
        "teacher_us_per_event": teacher_us,
        "student_us_per_event": student_us,
        "speedup": teacher_us / student_us if student_us > 0 else math.inf,
    }
    return BotModelResult(teacher, student_doc, threshold, metrics)
