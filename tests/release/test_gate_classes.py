"""The gate's per-class check on hand-made predictions: a degenerate production model cannot fool it, and a class
that production handles well cannot be collapsed (no training: production's predictions are faked)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import parse_config, read_params
from tasks.params import GateParams
from tasks.release import gate

LABELS = [str(digit) for digit in range(10)]


def _test_set(eights: int = 115, others: int = 885) -> np.ndarray:
    """The true class index of each test image: `eights` images of '8', the rest spread over the other classes."""
    rest = [index for index in range(10) if index != 8]
    return np.array([8] * eights + [rest[position % 9] for position in range(others)])


def _champion_folder(tmp_path):
    folder = tmp_path / "production"
    folder.mkdir()
    (folder / "labels.json").write_text(json.dumps(LABELS))
    (folder / "model_card.json").write_text(json.dumps({"version": "production01"}))
    return folder


def _compare(tmp_path, monkeypatch, params: GateParams, truth: np.ndarray, champion: np.ndarray,
             candidate: np.ndarray) -> tuple[list[dict], dict]:
    """compare_with_champion with production's predictions faked (one-hot probabilities of `champion`)."""
    monkeypatch.setattr(gate, "predict_stored", lambda *arguments: np.eye(10)[champion])
    table = pd.DataFrame({"actual": [LABELS[i] for i in truth], "predicted": [LABELS[i] for i in candidate]})
    return gate.compare_with_champion(params, 42, LABELS, table, _champion_folder(tmp_path), [], tmp_path, 10**8)


def _macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    scores = []
    for index in range(10):
        hits = np.sum((truth == index) & (predicted == index))
        scores.append(2 * hits / (np.sum(truth == index) + np.sum(predicted == index)))
    return float(np.mean(scores))


def test_a_production_model_that_predicts_one_class_for_everything_cannot_refuse_a_far_better_candidate(
        tmp_path, monkeypatch):
    # the reported case: production predicts '8' for every image (accuracy 0.115, macro-F1 0.021, recall of '8'
    # 1.0); the candidate is far better (macro-F1 about 0.877) but finds only about 0.745 of the '8's
    truth = _test_set()
    champion = np.full(len(truth), 8)
    candidate = truth.copy()
    rng = np.random.default_rng(0)
    eights = np.flatnonzero(truth == 8)
    candidate[eights[:29]] = rng.choice([0, 1, 2, 3], size=29)  # 86 of 115 '8's found: recall 0.748
    others = np.flatnonzero(truth != 8)
    wrong = rng.choice(others, size=90, replace=False)
    candidate[wrong] = (truth[wrong] + 1 + rng.integers(0, 8, size=90)) % 10
    assert np.mean(champion == truth) == pytest.approx(0.115) and _macro_f1(truth, champion) == pytest.approx(0.021, abs=1e-3)
    assert _macro_f1(truth, candidate) == pytest.approx(0.877, abs=0.02)
    assert np.mean(candidate[eights] == 8) == pytest.approx(0.745, abs=0.01)

    checks, summary = _compare(tmp_path, monkeypatch, GateParams(), truth, champion, candidate)
    failed = [check for check in checks if not check["passed"]]
    assert failed == [], failed
    assert checks[0]["name"] == "macro_f1 not worse than production" and checks[0]["value"] > 0.8
    eight = next(check for check in checks if check["name"] == "F1 of '8'")
    assert eight["detail"].startswith("not judged: production's F1 on '8' is 0.206, no better than giving '8' to "
                                      "every image")
    assert "recall 1.000 -> 0.748" in eight["detail"]
    zero = next(check for check in checks if check["name"] == "F1 of '0'")
    assert zero["detail"].startswith("not judged: production's F1 on '0' is 0.000, no better than giving '0'")
    assert summary["metrics"]["accuracy"] == pytest.approx(0.115)


def _good_production(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A production model right on about 90% of each class, its mistakes spread over the other classes."""
    champion = truth.copy()
    wrong = rng.random(len(truth)) < 0.1
    champion[wrong] = (truth[wrong] + 1 + rng.integers(0, 9, size=int(wrong.sum()))) % 10
    return champion


def test_a_candidate_that_collapses_a_class_production_handles_well_is_still_refused(tmp_path, monkeypatch):
    truth = _test_set(eights=100, others=900)
    rng = np.random.default_rng(1)
    champion = _good_production(truth, rng)
    candidate = truth.copy()  # perfect everywhere else, but never says '3' (its '3's become '5's)
    candidate[truth == 3] = 5
    lenient = GateParams(tolerance=1.0)  # the headline alone would let it through: the class check must not
    checks, _ = _compare(tmp_path, monkeypatch, lenient, truth, champion, candidate)
    failed = [check["name"] for check in checks if not check["passed"]]
    assert failed == ["F1 of '3'", "F1 of '5'"]
    three = next(check for check in checks if check["name"] == "F1 of '3'")
    assert three["threshold"] == 0.10 and three["value"] > 0.8 and "-> 0.000 (drop" in three["detail"]
    # precision counts too: giving '5' to every '3' fails the F1 of '5', though the recall of '5' rose to 1.0
    five = next(check for check in checks if check["name"] == "F1 of '5'")
    assert "recall 0.9" in five["detail"] and "-> 1.000, precision" in five["detail"] and five["value"] > 0.1


def test_a_candidate_that_gives_a_class_to_every_image_is_refused_on_the_other_classes(tmp_path, monkeypatch):
    truth = _test_set()
    champion = _good_production(truth, np.random.default_rng(2))
    candidate = np.full(len(truth), 8)  # recall of '8' rises to 1.0; every other class collapses
    checks, _ = _compare(tmp_path, monkeypatch, GateParams(tolerance=1.0), truth, champion, candidate)
    failed = {check["name"] for check in checks if not check["passed"]}
    assert failed == {f"F1 of '{label}'" for label in LABELS}  # '8' too: its F1 falls though its recall rose


def test_a_class_production_is_poor_at_is_judged_only_from_min_production_class_f1():
    actual = np.arange(100) < 10  # 10 images of the class among 100
    champion = (np.arange(100) >= 2) & (np.arange(100) < 32)  # 8 found, 22 false alarms: F1 0.4 (everywhere: 0.18)
    candidate = np.zeros(100, dtype=bool)  # never gives the class
    poor = gate.class_check(GateParams(), "x", actual, champion, candidate)
    assert poor["passed"] and poor["threshold"] is None and poor["value"] == pytest.approx(0.4)
    assert "not judged: production's F1 on 'x' is 0.400, below evaluate.gate.min_production_class_f1 (0.5)" \
        in poor["detail"]
    judged = gate.class_check(GateParams(min_production_class_f1=0.3), "x", actual, champion, candidate)
    assert not judged["passed"] and judged["threshold"] == 0.10
    assert judged["detail"].startswith("F1 0.400 -> 0.000 (drop 0.400); recall 0.800 -> 0.000, precision 0.267 -> "
                                       "0.000; a drop in F1 of at most 0.1 allowed")


def test_the_old_name_of_the_class_check_is_refused_with_its_new_name():
    values = read_params(Path(__file__).parents[2] / "params.yaml")
    values["evaluate"]["gate"]["max_recall_drop"] = 0.1
    with pytest.raises(ValueError, match="evaluate.gate: max_recall_drop is now max_class_f1_drop"):
        parse_config(values)


def _label_set_refusal(metrics: dict) -> str:
    """The gate's sentence for a candidate of another label set with these test scores (export parity passing)."""
    compared = gate.compare_label_sets(["a", "b", "c"], ["a", "b", "d"])
    checks = [gate.check_record("export parity", True, 0.0, 1e-4, "every export agrees"),
              *gate.floor_checks(GateParams(), metrics), gate.label_set_check(compared)]
    champion = {"version": "production01", "metrics": None, "difference": None}
    return gate._sentence(all(check["passed"] for check in checks), champion, checks, compared)


def test_a_label_set_refusal_suggests_forcing_only_a_candidate_that_passes_the_floors():
    fit = _label_set_refusal({"accuracy": 0.9, "macro_f1": 0.88})
    assert fit.startswith("The candidate was refused: its label set differs from the production model's")
    assert "passes the floors and the export checks" in fit and "imgpipe promote, given `force` and a `reason`" in fit

    under_one = _label_set_refusal({"accuracy": 0.7, "macro_f1": 0.3})
    assert "`force`" not in under_one and "do not force it" in under_one
    assert "macro-F1 floor: test macro-F1 0.3000, at least 0.5 required (evaluate.gate.min_macro_f1)" in under_one
    assert "accuracy floor" not in under_one

    under_both = _label_set_refusal({"accuracy": 0.115, "macro_f1": 0.021})
    assert "`force`" not in under_both
    assert "accuracy floor: test accuracy 0.1150" in under_both and "macro-F1 floor: test macro-F1 0.0210" in under_both


def test_only_the_candidates_own_checks_decide_whether_forcing_is_sensible():
    from tasks.release import gate_record

    compared = gate.compare_label_sets(["a", "b"], ["a", "c"])
    checks = [gate.check_record("export parity", True, 0.0, 1e-4, "agrees"),
              *gate.floor_checks(GateParams(), {"accuracy": 0.9, "macro_f1": 0.3}), gate.label_set_check(compared),
              gate.check_record("F1 of 'a'", False, 0.5, 0.1, "F1 0.9 -> 0.4")]
    assert [check["name"] for check in gate_record.failed_own_checks(checks)] == ["macro-F1 floor"]
    assert gate_record.failed_own_checks(checks[:2] + checks[3:]) == []


def test_a_candidate_that_names_one_class_for_everything_fails_whatever_its_accuracy():
    """Issue 25: a one-class model on a 2-class test split (90% one class: accuracy 0.9) raised no flag."""
    import pandas as pd
    from tasks.release import gate_record

    one_class = pd.DataFrame({"actual": ["cat"] * 18 + ["dog"] * 2, "predicted": ["cat"] * 20})
    [check] = gate.spread_check(one_class)
    assert not check["passed"] and check["name"] == "more than one class"
    assert "names 'cat' for every one of the 20 test images, which hold 2 classes" in check["detail"]
    assert gate_record.failed_own_checks([check]) == [check]  # never suggested for forcing

    both = pd.DataFrame({"actual": ["cat", "dog", "dog"], "predicted": ["cat", "dog", "cat"]})
    assert [check["passed"] for check in gate.spread_check(both)] == [True]
    assert gate.spread_check(pd.DataFrame({"actual": ["cat"] * 3, "predicted": ["cat"] * 3})) == []
