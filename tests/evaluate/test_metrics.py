"""Metrics with bootstrap intervals, calibration error and the paired difference the gate uses."""

import numpy as np
import pytest

from tasks.scoring import metrics


def test_intervals_bracket_the_point_estimate_and_calibration_error_is_exact():
    rng = np.random.default_rng(0)
    true_index = rng.integers(0, 4, 400)
    probabilities = np.full((400, 4), 0.1)
    probabilities[np.arange(400), true_index] = 0.7  # always right, 70% confident
    result = metrics.compute_metrics(true_index, probabilities, list("abcd"), top_k=2, seed=1)
    assert result["accuracy"] == 1.0 and result["accuracy_ci"] == [1.0, 1.0]
    assert result["ece"] == pytest.approx(0.3)
    noisy = np.where(rng.random(400) < 0.2, (true_index + 1) % 4, true_index)
    noisy_result = metrics.compute_metrics(true_index, np.eye(4)[noisy], list("abcd"), top_k=2, seed=1)
    low, high = noisy_result["macro_f1_ci"]
    assert low < noisy_result["macro_f1"] < high and high - low < 0.15


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    rng = np.random.default_rng(2)
    true_index, predicted = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert metrics.paired_difference(true_index, predicted, predicted, 3, "macro_f1", 0) == (0.0, [0.0, 0.0])
