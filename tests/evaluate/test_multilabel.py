"""Multi-label metrics and thresholds against scikit-learn and brute force, and label-set helpers."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from tasks import label_sets
from tasks.scoring import multilabel


@pytest.fixture
def predictions():
    generator = np.random.default_rng(3)
    truth = generator.random((80, 4)) < [0.5, 0.3, 0.1, 0.0]  # the last label never present
    probabilities = np.clip(truth * 0.35 + generator.random((80, 4)) * 0.65, 0, 1)
    return truth, probabilities


def test_scores_match_scikit_learn(predictions):
    truth, probabilities = predictions
    predicted = probabilities >= 0.5
    assert multilabel.score(truth, predicted, "macro_f1") == pytest.approx(
        sk_metrics.f1_score(truth, predicted, average="macro", zero_division=0))
    assert multilabel.score(truth, predicted, "micro_f1") == pytest.approx(
        sk_metrics.f1_score(truth, predicted, average="micro", zero_division=0))
    assert multilabel.score(truth, predicted, "accuracy") == pytest.approx(sk_metrics.accuracy_score(truth, predicted))
    labels = ["a", "b", "c", "d"]
    thresholds = [0.5, 0.4, 0.6, 0.5]
    metrics = multilabel.compute_metrics(truth, probabilities, thresholds, labels, seed=1)
    decided = probabilities >= np.array(thresholds)
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(truth, decided, zero_division=0)
    for index, label in enumerate(labels):
        row = metrics["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[index], recall[index], f1[index], support[index]))
        assert row["threshold"] == thresholds[index]
    assert metrics["per_class"]["d"]["average_precision"] is None  # no positive image: undefined, left out of mAP
    assert metrics["mean_average_precision"] == pytest.approx(np.mean(
        [sk_metrics.average_precision_score(truth[:, index], probabilities[:, index]) for index in range(3)]))
    assert metrics["macro_f1_ci"][0] <= metrics["macro_f1"] <= metrics["macro_f1_ci"][1]
    assert metrics["hamming_loss"] == pytest.approx(sk_metrics.hamming_loss(truth, decided))


def test_thresholds_give_the_best_f1_on_their_split(predictions):
    truth, probabilities = predictions
    thresholds = multilabel.choose_thresholds(truth, probabilities)
    assert thresholds[3] == multilabel.DEFAULT_THRESHOLD  # nothing to choose from
    for label in range(3):
        chosen = sk_metrics.f1_score(truth[:, label], probabilities[:, label] >= thresholds[label])
        grid = max(sk_metrics.f1_score(truth[:, label], probabilities[:, label] >= cut, zero_division=0)
                   for cut in np.unique(probabilities[:, label]))
        assert chosen == pytest.approx(grid)
        assert not np.isin(thresholds[label], probabilities[:, label])  # between two scores, not on one


def test_thresholds_separate_when_the_scores_do():
    truth = np.array([[1], [1], [0], [0]], dtype=bool)
    assert multilabel.choose_thresholds(truth, np.array([[0.3], [0.25], [0.2], [0.1]]))[0] == pytest.approx(0.225)


def test_paired_difference_of_a_model_with_itself_is_zero(predictions):
    truth, probabilities = predictions
    predicted = probabilities >= 0.5
    assert multilabel.paired_difference(truth, predicted, predicted, "macro_f1", seed=0) == (0.0, [0.0, 0.0])
    worse = multilabel.paired_difference(truth, predicted, truth, "macro_f1", seed=0)
    assert worse[0] < 0 and worse[1][1] <= 0


def test_label_sets_round_trip_and_task_choice():
    assert label_sets.split(" b;a;;a ") == ["a", "b"] and label_sets.join(["b", "a", "b"]) == "a;b"
    assert label_sets.vocabulary(["cat", "cat;dog", "bird"]) == ["bird", "cat", "dog"]
    hot = label_sets.multi_hot(["a;c", "", "b"], ["a", "b", "c"])
    assert hot.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert label_sets.cells_from(hot, ["a", "b", "c"]) == ["a;c", "", "b"]
    with pytest.raises(ValueError, match="'z' is not one of the model's labels"):
        label_sets.multi_hot(["z"], ["a"])
    assert label_sets.multi_hot(["a;z"], ["a"], strict=False).tolist() == [[1]]
    assert label_sets.decide_task("auto", True) == "multi_label"
    assert label_sets.decide_task("auto", False) == "single_label"
    assert label_sets.decide_task("multi_label", False) == "multi_label"
    with pytest.raises(ValueError, match="train.task is single_label, but some images have several labels"):
        label_sets.decide_task("single_label", True)
    confidence = label_sets.decision_confidence(np.array([[0.9, 0.2], [0.6, 0.55]]), [0.5, 0.5])
    assert confidence.tolist() == pytest.approx([0.8, 0.55])
