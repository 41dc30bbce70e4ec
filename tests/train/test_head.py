"""The head on cached features: a logistic regression fitted on standardised features whose kernel and bias act on
raw features, at the strength best on validation; binary, absent-class, multi-label and weighted cases."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from tasks.scoring import selection
from tasks.train import head

DIMENSIONS = 32


def blobs(per_class: int, seed: int, classes: int = 3, spread: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian blobs, far from standardised: every dimension has its own offset and scale (1/20 to 20)."""
    centres = np.random.default_rng(99).normal(0, 1, (classes, DIMENSIONS))
    offset = np.random.default_rng(98).normal(0, 50, DIMENSIONS)
    scale = np.exp(np.random.default_rng(97).uniform(-3, 3, DIMENSIONS))
    truth = np.repeat(np.arange(classes), per_class)
    features = centres[truth] + np.random.default_rng(seed).normal(0, spread, (len(truth), DIMENSIONS))
    return features * scale + offset, truth


def reference(train_features: np.ndarray, train_truth: np.ndarray, strength: float, weights=None):
    """scikit-learn's own fit at `strength` on the standardised features, and the standardisation. Like the head,
    it starts from the solution at each weaker strength before (lbfgs stops at a tolerance: a cold start lands
    1e-2 away in probability, too far to tell a wrong fold from the solver's slack)."""
    mean, scale = train_features.mean(axis=0), train_features.std(axis=0)
    standardised = (train_features - mean) / scale
    model = LogisticRegression(max_iter=head.MAX_ITERATIONS, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for step in head.STRENGTHS[:head.STRENGTHS.index(strength) + 1]:
            model.set_params(C=step).fit(standardised, train_truth, sample_weight=weights)
    return model, lambda features: (features - mean) / scale


@pytest.fixture(scope="module")
def three_classes():
    (train_features, train_truth), (val_features, val_truth) = blobs(30, seed=1), blobs(20, seed=2)
    fitted = head.fit(train_features, train_truth, val_features, val_truth, 3, False, "macro_f1")
    return fitted, train_features, train_truth, val_features, val_truth


def test_the_head_on_raw_features_is_sklearns_fit_on_standardised_ones(three_classes):
    fitted, train_features, train_truth, val_features, _ = three_classes
    assert fitted.kernel.shape == (DIMENSIONS, 3) and fitted.bias.shape == (3,)
    model, standardise = reference(train_features, train_truth, float(fitted.kept["strength"]))
    for features in (train_features, val_features):
        probabilities = fitted.probabilities(features)
        np.testing.assert_allclose(probabilities, model.predict_proba(standardise(features)), atol=1e-5)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    # the fold: raw kernel = coefficients / scale, so on standardised-scale units it is sklearn's coefficients
    np.testing.assert_allclose(fitted.kernel * train_features.std(axis=0)[:, None], model.coef_.T,
                               rtol=1e-4, atol=1e-6)


def test_one_history_row_per_strength_and_the_best_validation_row_is_kept(three_classes):
    fitted, _, _, val_features, val_truth = three_classes
    history = fitted.history
    assert list(history["strength"]) == list(head.STRENGTHS)
    assert {"loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1"} <= set(history.columns)
    ranked = history.sort_values(["val_macro_f1", "val_loss"], ascending=[False, True], kind="stable")
    assert fitted.kept["strength"] == ranked.iloc[0]["strength"]
    assert history["val_macro_f1"].nunique() > 1  # the data make the choice a real one
    # the kernel kept is the one of the kept row, not the last fitted
    probabilities = fitted.probabilities(val_features)
    val_loss = -np.log(np.clip(probabilities[np.arange(len(val_truth)), val_truth], 1e-7, 1)).mean()
    assert val_loss == pytest.approx(fitted.kept["val_loss"], rel=1e-6)
    assert (probabilities.argmax(axis=1) == val_truth).mean() == pytest.approx(fitted.kept["val_accuracy"])


def test_selecting_on_loss_keeps_the_lowest_val_loss():
    (train_features, train_truth), (val_features, val_truth) = blobs(30, seed=1), blobs(20, seed=2)
    fitted = head.fit(train_features, train_truth, val_features, val_truth, 3, False, "loss")
    assert fitted.kept["val_loss"] == fitted.history["val_loss"].min()
    assert fitted.kept["strength"] not in (head.STRENGTHS[0], head.STRENGTHS[-1])  # an inner optimum here
    assert fitted.history.iloc[selection.best_row(fitted.history, "loss")].equals(fitted.kept)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


def test_a_binary_task_has_two_softmax_columns_that_match_the_sigmoid():
    (train_features, train_truth), (val_features, val_truth) = blobs(30, seed=3, classes=2), blobs(20, 4, classes=2)
    fitted = head.fit(train_features, train_truth, val_features, val_truth, 2, False, "macro_f1")
    probabilities = fitted.probabilities(val_features)
    assert probabilities.shape == (len(val_features), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    model, standardise = reference(train_features, train_truth, float(fitted.kept["strength"]))
    np.testing.assert_allclose(probabilities[:, 1], sigmoid(model.decision_function(standardise(val_features))),
                               atol=1e-5)
    assert (probabilities.argmax(axis=1) == val_truth).mean() > 0.7


def test_a_class_absent_from_training_is_never_predicted():
    (train_features, three), (val_features, val_three) = blobs(30, seed=5), blobs(20, seed=6)
    as_four = np.array([0, 2, 3])  # class 1 of four has no image: the three blobs are classes 0, 2 and 3
    fitted = head.fit(train_features, as_four[three], val_features, as_four[val_three], 4, False, "macro_f1")
    assert fitted.bias[1] == head.ABSENT_CLASS_BIAS and not fitted.kernel[:, 1].any()
    wild = np.concatenate([val_features, np.random.default_rng(7).normal(0, 100, (50, DIMENSIONS))])
    probabilities = fitted.probabilities(wild)
    assert probabilities.shape == (len(wild), 4)
    assert (probabilities.argmax(axis=1) != 1).all() and probabilities[:, 1].max() < 1e-6
    # the present classes keep their own columns: the same fit as on three classes
    model, standardise = reference(train_features, three, float(fitted.kept["strength"]))
    np.testing.assert_allclose(probabilities[:len(val_features)][:, as_four], model.predict_proba(
        standardise(val_features)), atol=1e-5)


def test_a_binary_fit_inside_three_classes_lands_on_the_present_columns():
    (train_features, two), (val_features, val_two) = blobs(30, seed=8, classes=2), blobs(20, seed=9, classes=2)
    as_three = np.array([0, 2])
    fitted = head.fit(train_features, as_three[two], val_features, as_three[val_two], 3, False, "macro_f1")
    probabilities = fitted.probabilities(val_features)
    assert probabilities[:, 1].max() < 1e-6
    model, standardise = reference(train_features, two, float(fitted.kept["strength"]))
    np.testing.assert_allclose(probabilities[:, 2], model.predict_proba(standardise(val_features))[:, 1], atol=1e-5)


def test_multi_label_fits_one_weighted_regression_per_label_and_a_constant_label_stays_constant():
    (train_features, train_class), (val_features, val_class) = blobs(30, seed=10), blobs(20, seed=11)

    def multi_hot(classes: np.ndarray) -> np.ndarray:
        # labels: one per blob, one every image has, one no image has
        return np.column_stack([classes == 0, classes == 1, classes == 2, np.ones(len(classes)),
                                np.zeros(len(classes))]).astype(np.float64)

    weights = np.where(train_class == 0, 3.0, 1.0)  # per image, shared by every label's regression
    fitted = head.fit(train_features, multi_hot(train_class), val_features, multi_hot(val_class), 5, True,
                      "macro_f1", weights)
    assert fitted.multi_label and fitted.kernel.shape == (DIMENSIONS, 5)
    probabilities = fitted.probabilities(val_features)
    assert not fitted.kernel[:, 3:].any()
    np.testing.assert_allclose(probabilities[:, 3], 1 - 1e-4, rtol=1e-9)
    np.testing.assert_allclose(probabilities[:, 4], 1e-4, rtol=1e-6)
    for label in range(3):  # each blob's label is its own binary regression, not a softmax over the labels
        model, standardise = reference(train_features, train_class == label, float(fitted.kept["strength"]),
                                       weights)
        np.testing.assert_allclose(probabilities[:, label], model.predict_proba(standardise(val_features))[:, 1],
                                   atol=1e-5)
    assert not np.allclose(probabilities[:, :3].sum(axis=1), 1.0)
    assert {"val_loss", "val_accuracy", "val_macro_f1"} <= set(fitted.history.columns)


def imbalanced(counts: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    truth = np.repeat([0, 1], counts)
    features = np.where(truth[:, None] == 1, 1.2, 0.0) + np.random.default_rng(seed).normal(0, 2, (len(truth), 8))
    return features * np.arange(1, 9) + 10, truth


@pytest.mark.parametrize("select_on", ["loss", "macro_f1"])
def test_balanced_weights_raise_the_minority_recall(select_on):
    (train_features, train_truth), (val_features, val_truth) = imbalanced([200, 12], 1), imbalanced([40, 40], 2)
    counts = np.bincount(train_truth)
    balanced = (len(train_truth) / (2 * counts))[train_truth]
    recalls = []
    for weights in (None, balanced):
        fitted = head.fit(train_features, train_truth, val_features, val_truth, 2, False, select_on, weights)
        predicted = fitted.probabilities(val_features).argmax(axis=1)
        recalls.append((predicted[val_truth == 1] == 1).mean())
    unweighted, weighted = recalls
    assert weighted >= unweighted + 0.3


def test_weights_change_the_fit(three_classes):
    _, train_features, train_truth, val_features, val_truth = three_classes
    weights = np.where(train_truth == 0, 5.0, 1.0)
    plain = head.fit(train_features, train_truth, val_features, val_truth, 3, False, "loss")
    weighted = head.fit(train_features, train_truth, val_features, val_truth, 3, False, "loss", weights)
    model, standardise = reference(train_features, train_truth, float(weighted.kept["strength"]), weights)
    np.testing.assert_allclose(weighted.probabilities(val_features), model.predict_proba(standardise(val_features)),
                               atol=1e-5)
    assert (weighted.probabilities(val_features).argmax(axis=1) == 0).sum() > (
        plain.probabilities(val_features).argmax(axis=1) == 0).sum()
