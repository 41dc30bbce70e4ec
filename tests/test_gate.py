"""Metrics with intervals, the champion/challenger gate, promotion and rollback, on a tiny trained model."""

import json

import numpy as np
import pandas as pd
import pytest

from tasks import evaluate, gate, ingest, metrics, preprocess, promote, train


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


@pytest.fixture
def evaluated(shrunk_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    train.run(config.train.model_copy(update={"epochs": 6, "width": 8}), config.preprocess.augment,
              config.base.seed, paths)
    evaluate.run(config.evaluate, config.base.seed, paths)
    return config, paths


def _make_candidate_worse(paths) -> None:
    """Pretend the candidate got every test image wrong (a unit test of the gate's arithmetic, not of training)."""
    table = pd.read_csv(paths.evaluation / "test_predictions.csv")
    labels = sorted(table["actual"].unique())
    table["predicted"] = [labels[(labels.index(actual) + 1) % len(labels)] for actual in table["actual"]]
    table.to_csv(paths.evaluation / "test_predictions.csv", index=False)


def test_first_gate_uses_the_floors_and_always_writes_gate_json(evaluated):
    config, paths = evaluated
    strict = config.evaluate.gate.model_copy(update={"min_accuracy": 1.01 - 1e-9, "min_macro_f1": 0.0})
    decision = gate.run(strict, config.base.seed, paths)
    assert decision["decision"] == "fail" and decision["champion"] is None
    assert "accuracy floor" in decision["sentence"] and "Production is unchanged" in decision["sentence"]
    assert json.loads(paths.gate.read_text()) == decision
    assert {check["name"] for check in decision["checks"]} == {"export parity", "accuracy floor", "macro-F1 floor"}
    parity = next(check for check in decision["checks"] if check["name"] == "export parity")
    assert parity["passed"] and parity["value"] <= 1e-4
    with pytest.raises(promote.PromotionRefused, match="the gate refused"):
        promote.promote(paths, reason="try")
    assert not paths.production.exists()


def test_promote_compare_refuse_force_and_roll_back(evaluated):
    config, paths = evaluated
    lenient = config.evaluate.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0})
    assert gate.run(lenient, config.base.seed, paths)["decision"] == "pass"
    first = promote.promote(paths, reason="passed the gate")
    assert (paths.production / "model.keras").read_bytes() == (paths.candidate / "model.keras").read_bytes()
    assert gate.is_current(paths)

    # the same model against itself: no worse, so it passes the comparison
    same = gate.run(lenient, config.base.seed, paths)
    assert same["decision"] == "pass" and same["champion"]["difference"]["value"] == 0.0
    with pytest.raises(ValueError, match="already the production model"):
        promote.promote(paths, reason="again")

    _make_candidate_worse(paths)
    refused = gate.run(lenient, config.base.seed, paths)
    assert refused["decision"] == "fail"
    assert any(not check["passed"] and "not worse than production" in check["name"] for check in refused["checks"])
    assert "refused" in refused["sentence"]
    with pytest.raises(promote.PromotionRefused):
        promote.promote(paths, reason="nope")
    with pytest.raises(ValueError, match="needs a --reason"):
        promote.promote(paths, reason=" ", force=True)

    # a forced promotion needs a different model: nudge the candidate file so it counts as new
    (paths.candidate / "model_card.json").write_text((paths.candidate / "model_card.json").read_text())
    with (paths.candidate / "model.keras").open("ab") as handle:
        handle.write(b"\0")  # zip files tolerate trailing bytes; the hash changes
    forced = promote.promote(paths, reason="customer demo needs it", force=True, requested_by="alice")
    history = promote.read_history(paths)
    assert [event["action"] for event in history] == ["promote", "promote"]
    assert history[-1]["forced"] and history[-1]["requested_by"] == "alice"
    assert promote.current_version(paths) == forced["version"]

    rolled = promote.rollback(paths, reason="bad in production")
    assert rolled["restored"] == first["version"]
    assert json.loads((paths.production / "version.json").read_text())["version"] == first["version"]
    assert (paths.production / "model.keras").read_bytes() == (paths.registry / first["version"] / "model.keras").read_bytes()
    with pytest.raises(ValueError, match="no earlier production model"):
        promote.rollback(paths, reason="again")
    with pytest.raises(promote.PromotionRefused, match="was rolled back"):
        gate_file = json.loads(paths.gate.read_text())
        paths.gate.write_text(json.dumps(gate_file | {"decision": "pass", "promoted": False}))
        promote.promote(paths, reason="passed")
