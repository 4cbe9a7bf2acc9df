"""Behaviour of the two heads (propensity, bot) and of the exported students as the hot path evaluates them."""

from __future__ import annotations

import numpy as np
import pytest

from ml.bot_model import BOT_FEATURES, BotModelConfig, bot_matrix, human_safe_threshold, train_bot_model
from ml.datasets import matrix, time_split
from ml.propensity import as_linear_model, rows_as_facts, student_batch_scores, train_propensity
from streaming.sessions import FEATURES
from tests.ml.conftest import synthetic_events


@pytest.fixture(scope="module")
def frame():
    return synthetic_events(1500, seed=1)


@pytest.fixture(scope="module")
def propensity(frame):
    return train_propensity(time_split(frame))


@pytest.fixture(scope="module")
def bot(frame):
    return train_bot_model(time_split(frame), config=BotModelConfig(max_human_rate=0.01))


def _typical(frame, columns, **overrides):
    row = {c: float(np.median(frame[f"f_{c}"].to_numpy())) if c in FEATURES else 0.0 for c in columns}
    row.update(overrides)
    return np.array([[row[c] for c in columns]])


@pytest.mark.parametrize("feature", ["cart_adds", "product_views"])
def test_propensity_student_is_monotonic_in_buying_signals(frame, propensity, feature):
    grid = [0.0, 1.0, 2.0, 4.0, 8.0]
    scores = [student_batch_scores(propensity.student_doc, _typical(frame, FEATURES, **{feature: v}))[0]
              for v in grid]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False)), scores
    teacher = [propensity.teacher.predict_proba(_typical(frame, FEATURES, **{feature: v}))[0, 1] for v in grid]
    assert teacher[-1] > teacher[0]


def test_propensity_student_is_nearly_invariant_to_an_irrelevant_feature(frame, propensity):
    scores = [student_batch_scores(propensity.student_doc, _typical(frame, FEATURES, distinct_categories=v))[0]
              for v in (1.0, 3.0, 5.0)]
    assert max(scores) - min(scores) < 0.02, scores


def test_propensity_student_is_faithful_to_its_teacher(propensity):
    assert propensity.metrics["auc_gap"] <= 0.02
    assert propensity.metrics["fidelity_agreement"] >= 0.9


def test_bot_score_rises_with_rate_and_regularity(frame, bot):
    rates = [student_batch_scores(bot.student_doc, _typical(frame, BOT_FEATURES, events_per_minute=v))[0]
             for v in (2.0, 10.0, 40.0, 120.0)]
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False)), rates
    jitter = [student_batch_scores(bot.student_doc, _typical(frame, BOT_FEATURES, interval_std_s=v))[0]
              for v in (30.0, 5.0, 1.0, 0.0)]
    assert all(b > a for a, b in zip(jitter, jitter[1:], strict=False)), jitter
    assert student_batch_scores(bot.student_doc, _typical(frame, BOT_FEATURES, datacenter=1.0))[0] > \
        student_batch_scores(bot.student_doc, _typical(frame, BOT_FEATURES, datacenter=0.0))[0]


def test_bot_student_ships_in_shadow_with_a_threshold_that_spares_known_humans(frame, bot):
    assert bot.student_doc["mode"] == "shadow"
    assert bot.student_doc["features"] == list(BOT_FEATURES)
    scores = student_batch_scores(bot.student_doc, bot_matrix(frame))
    humans = frame["label_bot"].to_numpy() == 0
    assert np.mean(scores[humans] >= bot.threshold) <= 0.01
    assert bot.metrics["auc_gap"] <= 0.02
    assert bot.metrics["test_bot_recall"] > 0.8


def test_human_safe_threshold_allows_at_most_the_configured_rate_of_humans():
    rng = np.random.default_rng(3)
    humans = rng.beta(2, 5, 10_000)
    t = human_safe_threshold(humans, max_human_rate=0.002, min_threshold=0.0)
    assert np.mean(humans >= t) <= 0.002
    assert np.mean(humans >= t - 0.01) > 0.002  # the lowest such threshold, not an arbitrarily safe one
    assert human_safe_threshold(humans, max_human_rate=0.002, min_threshold=0.95) == 0.95


@pytest.mark.parametrize("head", ["propensity", "bot"])
def test_hot_path_evaluator_gives_the_batch_scores_of_the_exported_student(frame, propensity, bot, head):
    doc = propensity.student_doc if head == "propensity" else bot.student_doc
    x = matrix(frame) if head == "propensity" else bot_matrix(frame)
    model = as_linear_model(doc, name=head)  # compiled through compile_policy, as the worker does
    per_row = np.array([model.score(facts) for facts in rows_as_facts(doc, x)])
    np.testing.assert_allclose(per_row, student_batch_scores(doc, x), rtol=0, atol=1e-9)
