"""The learning-rate range test on tiny real data: a loss curve, a plot and a suggestion inside the range tried."""

import pandas as pd
import pytest

from tasks.config import ArgumentError
from tasks.ingest import stage as ingest
from tasks.preprocess import stage as preprocess
from tasks.tune import lr_find


@pytest.fixture
def prepared(shrunk_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    return config, paths


def test_the_range_test_writes_the_curve_and_suggests_a_rate(prepared):
    config, paths = prepared
    result = lr_find.run(config.train, config.preprocess.augment, config.base.seed, paths, min_rate=1e-5,
                         max_rate=10.0, steps=40)
    curve = pd.read_csv(result.table)
    assert list(curve.columns) == ["learning_rate", "loss", "smoothed_loss"]
    assert len(curve) == result.steps and 20 <= result.steps <= 40
    assert curve["learning_rate"].is_monotonic_increasing
    assert curve["learning_rate"].iloc[0] == pytest.approx(1e-5)
    assert 1e-5 <= result.suggested <= result.minimum_loss_rate <= 10.0
    assert result.suggested == pytest.approx(max(1e-5, result.minimum_loss_rate / 10))
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    assert result.plot.parent == paths.reports / "tuning"


def test_the_suggestion_is_a_tenth_of_the_lowest_loss():
    import numpy as np

    rates = np.geomspace(1e-4, 1, 5)
    suggested, lowest = lr_find.suggest(rates, np.array([3.0, 2.0, 1.0, np.nan, 9.0]))
    assert lowest == pytest.approx(1e-2) and suggested == pytest.approx(1e-3)


@pytest.mark.parametrize("arguments, message", [
    ({"min_rate": 0}, "`min_rate` must be > 0"),
    ({"min_rate": 1e-2, "max_rate": 1e-3}, "`min_rate` must be > 0 and below `max_rate`"),
    ({"max_rate": 100}, "`max_rate` must be <= 10"),
    ({"steps": 5}, "`steps` must be >= 20"),
])
def test_bad_arguments_name_the_argument(shrunk_config, arguments, message):
    config, paths = shrunk_config
    with pytest.raises(ArgumentError, match=message):
        lr_find.run(config.train, config.preprocess.augment, config.base.seed, paths, **arguments)


def test_without_the_training_split_the_error_says_what_to_run(shrunk_config):
    config, paths = shrunk_config
    with pytest.raises(ValueError, match="preprocess.json: not found.*imgpipe lr-find"):
        lr_find.run(config.train, config.preprocess.augment, config.base.seed, paths)


def test_the_defaults_batch_size_auto_and_weights_auto_run(prepared):
    """params.yaml's own train section (batch_size auto, weights auto, model auto): it crashed on batch_size auto."""
    config, paths = prepared
    defaults = config.train.model_copy(update={"batch_size": "auto", "weights": "auto", "model": "auto"})
    result = lr_find.run(defaults, config.preprocess.augment, config.base.seed, paths, steps=20)
    assert 10 <= result.steps <= 20 and result.plot.is_file()


def test_a_head_on_features_has_no_learning_rate_to_find(prepared):
    config, paths = prepared
    import json

    summary_file = paths.processed / "preprocess.json"
    summary = json.loads(summary_file.read_text())
    summary["model"] = {"model": "efficientnet_lite2", "reason": "test", "route": "head_on_features",
                        "weights_id": "x"}
    summary_file.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="no learning rate to find"):
        lr_find.run(config.train, config.preprocess.augment, config.base.seed, paths, steps=20)
