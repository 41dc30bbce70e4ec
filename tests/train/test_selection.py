"""How training chooses: the automatic batch size, the kept epoch on small data, and when a split is too small."""

import math

import pandas as pd
import pytest

from tasks.scoring import selection


@pytest.mark.parametrize(("images", "expected"), [(60_000, 64), (1260, 64), (470, 16), (170, 8), (40, 8)])
def test_auto_batch_size_gives_an_epoch_enough_steps(images, expected):
    size = selection.batch_size("auto", images)
    assert size == expected
    if size > selection.SMALLEST_AUTO_BATCH:
        assert math.ceil(images / size) >= selection.MIN_STEPS_PER_EPOCH
    assert selection.batch_size(32, images) == 32  # a number in params is kept as it is


def test_auto_batch_size_counts_every_replica():
    assert selection.batch_size("auto", 2560, replicas=1) == 64
    assert selection.batch_size("auto", 2560, replicas=4) == 32  # 32 x 4 replicas: 20 steps


def test_a_uniform_first_epoch_with_the_lowest_val_loss_is_not_kept():
    """The issue's case: on a 36-image validation split the near-uniform first epoch had the lowest val_loss."""
    history = pd.DataFrame({
        "epoch": [0, 1, 2, 3],
        "val_loss": [0.690, 0.700, 0.710, 0.705],
        "val_accuracy": [0.50, 0.61, 0.64, 0.64],
        "val_macro_f1": [0.333, 0.60, 0.64, 0.64],
    })
    assert selection.best_row(history, "loss") == 0
    assert selection.best_row(history, "macro_f1") == 3  # a tie on macro-F1: the lower val_loss wins
    history.loc[2, "val_loss"] = 0.70
    assert selection.best_row(history, "macro_f1") == 2
    history.loc[3, "val_loss"] = 0.70
    assert selection.best_row(history, "accuracy") == 2  # a full tie: the earlier epoch


def test_score_keys_order_by_score_then_loss_and_survive_missing_values():
    assert selection.score_key("macro_f1", {"val_macro_f1": 0.7, "val_loss": 0.5}) > \
        selection.score_key("macro_f1", {"val_macro_f1": 0.7, "val_loss": 0.6})
    assert selection.score_key("macro_f1", {"val_macro_f1": 0.8, "val_loss": 9.0}) > \
        selection.score_key("macro_f1", {"val_macro_f1": 0.7, "val_loss": 0.1})
    nan = selection.score_key("macro_f1", {"val_macro_f1": float("nan"), "val_loss": float("nan")})
    assert nan < selection.score_key("macro_f1", {"val_macro_f1": 0.0, "val_loss": 5.0})


def test_a_split_too_small_for_a_decision_is_named_with_its_interval():
    note = selection.interval_note("validation", "macro_f1", [0.45, 0.76], 36)
    assert "validation split is too small for a decision" in note and "0.31 wide" in note and "36 images" in note
    assert "preprocess.val_fraction" in note
    assert "preprocess.test_fraction" in selection.interval_note("test", "accuracy", (0.5, 0.9), 20)
    assert selection.interval_note("test", "macro_f1", [0.80, 0.95], 400) is None
    perfect = selection.interval_note("validation", "macro_f1", [1.0, 1.0], 9)  # every image right, but only 9
    assert "9 images cannot give macro_f1 a 95% interval narrower than 0.2" in perfect
