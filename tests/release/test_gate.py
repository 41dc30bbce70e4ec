"""Metrics with intervals, the champion/challenger gate, promotion and rollback, on a tiny trained model."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import model_checksums, model_folder, networks
from tasks.evaluate import stage as evaluate
from tasks.export import stage as export
from tasks.release import gate, promote
from tests.conftest import project_copy, trained_project


@pytest.fixture(scope="module")
def evaluated_once(tmp_path_factory) -> Path:
    """A tiny project taken through ingest, preprocess, train, export and evaluate once for the module."""
    root = tmp_path_factory.mktemp("gate-project")
    config, paths = trained_project(root, epochs=6, width=8)
    export.run(config.export, config.base.seed, paths)
    evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    return root


@pytest.fixture
def evaluated(evaluated_once, tmp_path, monkeypatch):
    """A copy of the evaluated project of its own for each test (they promote, force, roll back and change files)."""
    return project_copy(evaluated_once, tmp_path / "project", monkeypatch)


def _make_candidate_worse(paths) -> None:
    """Pretend the candidate got every test image wrong (a unit test of the gate's arithmetic, not of training)."""
    table = pd.read_parquet(paths.test_predictions)  # what the gate reads (the CSV is for people)
    labels = sorted(table["actual"].unique())
    table["predicted"] = [labels[(labels.index(actual) + 1) % len(labels)] for actual in table["actual"]]
    table.to_parquet(paths.test_predictions, index=False)


def test_first_gate_uses_the_floors_and_always_writes_gate_json(evaluated):
    config, paths = evaluated
    strict = config.evaluate.gate.model_copy(update={"min_accuracy": 1.01 - 1e-9, "min_macro_f1": 0.0})
    decision = gate.run(strict, config.base.seed, config.ingest.max_pixels, paths)
    assert decision["decision"] == "fail" and decision["champion"] is None
    assert "accuracy floor" in decision["sentence"] and "Production is unchanged" in decision["sentence"]
    assert json.loads(paths.gate.read_text()) == decision
    assert {check["name"] for check in decision["checks"]} == {"export parity", "accuracy floor", "macro-F1 floor",
                                                                "more than one class"}
    parity = next(check for check in decision["checks"] if check["name"] == "export parity")
    assert parity["passed"] and parity["value"] <= 1e-4
    test_images = len(pd.read_csv(paths.evaluation / "test_predictions.csv"))
    exports = {(item["engine"], item["precision"]): item for item in decision["exports"]}
    assert {("saved_model", "fp32"), ("onnx", "fp32")} <= set(exports)
    assert all(item["images"] == test_images and item["agreement"] == 1.0 for item in exports.values())
    assert any("test split is too small for a decision" in note for note in decision["notes"])
    assert "Note: the test split is too small" in decision["sentence"]
    with pytest.raises(promote.PromotionRefused, match="the gate refused") as refused:
        promote.promote(paths, reason="try")
    # under a floor: forcing is not suggested (issue 27, item 3), the failing floor is named
    assert "It fails accuracy floor" in str(refused.value) and "retrain it rather than force it" in str(refused.value)
    assert "force the promotion with a reason" not in str(refused.value)
    assert not paths.production.exists()


def test_promote_compare_refuse_force_and_roll_back(evaluated):
    config, paths = evaluated
    lenient = config.evaluate.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0})
    assert gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)["decision"] == "pass"
    first = promote.promote(paths, reason="passed the gate")
    assert (paths.production / "model.keras").read_bytes() == (paths.candidate / "model.keras").read_bytes()
    assert gate.is_current(paths)

    # the same model against itself: no worse, so it passes the comparison
    same = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert same["decision"] == "pass" and same["champion"]["difference"]["value"] == 0.0
    assert same["lineage"]["relation"] == "same data" and same["lineage"]["note"] is None  # data lineage of both
    # as ingest_summary.json records it: relative to the project, where the source lies inside it
    assert same["lineage"]["production"]["source"] == same["lineage"]["candidate"]["source"] == paths.shown(
        paths.resolve(config.ingest.source))
    assert same["lineage"]["candidate"]["manifest_sha256"] and same["lineage"]["candidate"]["labels"] == 3
    with pytest.raises(ValueError, match="already the production model"):
        promote.promote(paths, reason="again")

    _make_candidate_worse(paths)
    refused = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert refused["decision"] == "fail"
    assert any(not check["passed"] and "not worse than production" in check["name"] for check in refused["checks"])
    assert "refused" in refused["sentence"]
    for check in refused["checks"]:  # a recall that rose is never called a drop, nor a fall a rise
        if check["name"].startswith("F1 of"):
            words = "drop " if check["value"] > 5e-4 else "rise " if check["value"] < -5e-4 else "no change"
            assert words in check["detail"] and "drop -" not in check["detail"], check
    with pytest.raises(promote.PromotionRefused):
        promote.promote(paths, reason="nope")
    with pytest.raises(ValueError, match="needs a `reason`"):
        promote.promote(paths, reason=" ", force=True)

    # a forced promotion needs a different model: nudge the weights file (a zip file tolerates trailing bytes) and
    # record its new version id and checksums, as training would, then export it, as the export stage would
    with (paths.candidate / "model.keras").open("ab") as handle:
        handle.write(b"\0")
    card = json.loads((paths.candidate / "model_card.json").read_text())
    nudged = model_folder.compute_version(paths.candidate)
    (paths.candidate / "model_card.json").write_text(json.dumps(card | {"version": nudged}))
    model_checksums.seal(paths.candidate, nudged)
    export.run(config.export, config.base.seed, paths)
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


def test_an_export_that_disagrees_or_is_missing_blocks_promotion_and_is_named(evaluated):
    import keras

    from tasks import export_folder, networks
    from tasks.export import convert

    config, paths = evaluated
    exports, version = paths.candidate_exports, model_folder.version_of(paths.candidate)
    record = json.loads((exports / model_folder.ENGINES_FILE).read_text())
    lenient = config.evaluate.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0})
    assert gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)["decision"] == "pass"
    keras.utils.set_random_seed(99)  # another model of the same shape stands in for a broken conversion
    other = networks.simple_cnn(config.preprocess.image_size, 3, depth=config.train.depth, width=8, dropout=0.0)
    other.predict_on_batch(np.zeros((1, config.preprocess.image_size, config.preprocess.image_size, 3), np.uint8))
    convert.export_onnx(other, model_folder.export_path(exports, "onnx"))
    # swapped after the export stage wrote it: refused by its checksum before anything runs
    swapped = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert swapped["decision"] == "fail" and "model.onnx: changed or damaged" in swapped["sentence"]
    export_folder.write_engines(exports, version, record)  # as if the export stage had written the broken conversion
    refused = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert refused["decision"] == "fail"
    assert "export parity: onnx: largest probability difference" in refused["sentence"]
    assert "saved_model" not in refused["sentence"].split("export parity:")[1].split(";")[0]
    with pytest.raises(promote.PromotionRefused, match="export parity: onnx"):
        promote.promote(paths, reason="try")

    shutil.rmtree(model_folder.export_path(exports, "saved_model"))
    export_folder.write_engines(exports, version, record)  # as if the export stage had left it out
    missing = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert missing["decision"] == "fail" and "saved_model fp32 failed" in missing["sentence"]
    assert "saved_model is missing" in missing["sentence"]


def _install_production(paths, labels: list[str]) -> None:
    """A production model of another task (untrained weights, `labels` as its classes), as promotion installs one."""
    network = networks.simple_cnn(16, len(labels), depth=1, width=4, dropout=0.0)
    paths.production.mkdir(parents=True)
    version = model_folder.write(paths.production, network, labels, {"image_size": 16, "resize": "stretch"},
                                 pd.DataFrame({"epoch": [0], "loss": [1.0]}))
    (paths.production / "version.json").write_text(json.dumps({"version": version}))


@pytest.mark.parametrize("production_labels", [
    ["red", "green", "blue", "yellow"],  # the candidate dropped a class
    ["red", "green", "purple"],          # the same number of classes, but not the same classes
])
def test_a_candidate_of_another_label_set_is_refused_whatever_its_scores(evaluated, production_labels):
    config, paths = evaluated
    _install_production(paths, production_labels)
    lenient = config.evaluate.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0})
    decision = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert decision["decision"] == "fail"
    assert decision["label_sets"]["candidate"] == ["blue", "green", "red"]
    assert decision["label_sets"]["production"] == production_labels and decision["label_sets"]["same"] is False
    assert decision["sentence"].startswith("The candidate was refused: its label set differs from the production "
                                           "model's")
    assert "imgpipe promote, given `force` and a `reason`" in decision["sentence"] and decision["fit_to_force"]
    label_check = next(check for check in decision["checks"] if check["name"] == "same label set as production")
    assert not label_check["passed"]
    # the production model is never scored on classes it does not know
    assert not any("not worse than production" in check["name"] or check["name"].startswith("F1 of")
                   for check in decision["checks"])
    assert json.loads(paths.gate.read_text())["label_sets"] == decision["label_sets"]
    # a production model whose card keeps no lineage: the gate says it cannot tell whether the data grew
    assert decision["lineage"]["relation"] == "unknown" and decision["lineage"]["note"] in decision["notes"]
    with pytest.raises(promote.PromotionRefused, match="label set differs"):
        promote.promote(paths, reason="passed")
    forced = promote.promote(paths, reason="the new task is intended", force=True)  # a person accepts it
    assert model_folder.read_labels(paths.production) == ["blue", "green", "red"]
    assert promote.current_version(paths) == forced["version"]


def test_the_floors_apply_to_every_candidate_not_only_the_first(evaluated):
    config, paths = evaluated
    lenient = config.evaluate.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0})
    assert gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)["decision"] == "pass"
    promote.promote(paths, reason="passed the gate")
    # the same model against itself is no worse than production, but under a floor it is refused all the same
    strict = lenient.model_copy(update={"min_macro_f1": 1.01 - 1e-9})
    decision = gate.run(strict, config.base.seed, config.ingest.max_pixels, paths)
    assert decision["champion"]["difference"]["value"] == 0.0 and decision["label_sets"]["same"]
    assert decision["decision"] == "fail" and "macro-F1 floor" in decision["sentence"]
    assert {"accuracy floor", "macro-F1 floor", "same label set as production"} <= \
        {check["name"] for check in decision["checks"]}


def test_a_drift_warning_is_a_note_of_the_gate_record_not_a_check(evaluated):
    from tasks import data_health

    config, paths = evaluated
    lenient = config.evaluate.gate.model_copy(update={"min_accuracy": 0.0, "min_macro_f1": 0.0})
    warning = ("data drift: the new images of 1 class(es) sit far from that class's images of the last run: green "
               "1.30 spreads")
    data_health.write(paths.data_health, {}, {"images": 48}, drift={
        "status": "measured", "carried": False, "new_images": 6, "overall": 0.9, "threshold": 0.5,
        "largest": {"class": "green", "shift": 1.3, "new_images": 6}, "shifted": ["green"], "warning": warning})
    decision = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert decision["decision"] == "pass"  # a warning: it refuses nothing
    assert decision["data_drift"]["warning"] == warning and decision["data_drift"]["shifted"] == ["green"]
    assert warning in decision["notes"] and f"Note: {warning}." in decision["sentence"]
    assert not any("drift" in check["name"] for check in decision["checks"])
    assert json.loads(paths.gate.read_text())["data_drift"] == decision["data_drift"]

    data_health.write(paths.data_health, {}, {"images": 48}, drift={"status": "first_run", "warning": None})
    quiet = gate.run(lenient, config.base.seed, config.ingest.max_pixels, paths)
    assert quiet["data_drift"]["status"] == "first_run" and not any("drift" in note for note in quiet["notes"])
