"""A loop never fails for lack of data (issue 20): a head without enough labels of each class keeps the champion's
model and says so (MLflow tag, the gate's reasons); the other head still trains, and the candidate is built,
backtested and gated as usual. Real warehouse file, real MLflow store."""

from __future__ import annotations

import mlflow
import polars as pl
import pytest

from ml import loop, registry
from ml.propensity import MIN_PER_CLASS, InsufficientLabels, train_teacher
from tests.ml.conftest import synthetic_events, write_lake, write_warehouse
from warehouse.layout import DataLayout


def test_too_few_labels_of_a_class_is_its_own_error_naming_the_counts():
    import numpy as np

    with pytest.raises(InsufficientLabels, match=f"3 positives and 97 negatives .at least {MIN_PER_CLASS}"):
        train_teacher(np.zeros((100, 2)), np.array([1] * 3 + [0] * 97))


def test_clean_traffic_without_bots_trains_propensity_and_keeps_the_champions_bot_model(tmp_path):
    layout = DataLayout(tmp_path)
    registry.configure(layout)
    frame = synthetic_events(1200, bot_share=0.0)  # a fresh installation: real humans, no bot yet
    write_warehouse(layout, frame)
    write_lake(layout, frame)
    training = loop.train_propensity_run(layout)
    assert training["student"] is not None and training["bot"]["student"] is None
    assert "bot" in training["skipped"] and "0 positives" in training["skipped"]["bot"]
    skipped_run = mlflow.get_run(training["bot"]["run_id"])
    assert "0 positives" in skipped_run.data.tags["skipped"]

    outcome = loop.build_and_backtest(layout, champion=loop.current_champion(layout), training=training, mined=[])
    assert "models" not in outcome["candidate"] or "bot" not in outcome["candidate"].get("models", {})
    assert any(r.startswith("bot head kept the champion's model") for r in outcome["gate"]["reasons"])
    assert outcome["candidate"]["models"]["propensity"] == training["student"]


def test_no_conversions_yet_keeps_the_propensity_model_and_still_trains_the_bot_head(tmp_path):
    layout = DataLayout(tmp_path)
    registry.configure(layout)
    frame = synthetic_events(1200).with_columns(pl.lit(0).cast(pl.Int8).alias("label_converted"))
    write_warehouse(layout, frame)
    write_lake(layout, frame)
    training = loop.train_propensity_run(layout)
    assert training["student"] is None and training["bot"]["student"] is not None
    assert set(training["skipped"]) == {"propensity"}
    outcome = loop.build_and_backtest(layout, champion=loop.current_champion(layout), training=training, mined=[])
    assert any(r.startswith("propensity head kept the champion's model") for r in outcome["gate"]["reasons"])
    assert outcome["candidate"]["models"]["bot"]["mode"] == "shadow"
    # registered, it registers another run's model (the bot head's teacher, on a fresh installation): the next
    # loop still reads the champion's policy from the run it was logged to
    registered = loop.register_and_promote(layout, candidate=outcome["candidate"], training=training,
                                           gate={**outcome["gate"], "passed": True},
                                           kept_heads=outcome["kept_heads"])
    assert registered["promoted"]
    assert loop.current_champion(layout)["policy_version"] == outcome["candidate"]["policy_version"]
