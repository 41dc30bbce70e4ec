"""The export stage: the candidate's exports and engines.json in a folder of their own that records the candidate
version they were made from; a retrained candidate's old exports are refused until the stage runs again."""

import json
from pathlib import Path

import numpy as np
import pytest

from tasks import export_folder, model_folder
from tasks.export import build
from tasks.export import stage as export
from tasks.params import ExportParams
from tasks.release import promote
from tasks.release.export_parity import export_check
from tasks.train import stage as train
from tests.conftest import project_copy, trained_project


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    """Tiny data ingested, preprocessed and trained for one epoch, once for the module: a candidate without exports."""
    root = tmp_path_factory.mktemp("export-project")
    trained_project(root, epochs=1)
    return root


@pytest.fixture
def trained(trained_once, tmp_path, monkeypatch):
    """A copy of the trained project for each test (they export, retrain and promote)."""
    return project_copy(trained_once, tmp_path / "project", monkeypatch)


def _test_images(paths) -> int:
    return json.loads((paths.processed / "preprocess.json").read_text())["counts"]["test"]


def test_exports_and_engines_written_in_a_fresh_process_record_the_candidate(trained, monkeypatch):
    import tensorflow as tf

    config, paths = trained
    monkeypatch.setattr(build, "FRESH_PROCESS_PARAMETERS", 0)  # as for a large model
    assert export.run(config.export, config.base.seed, paths) == paths.candidate_exports
    version = model_folder.version_of(paths.candidate)
    folder = paths.candidate_exports
    checksums = json.loads((folder / "checksums.json").read_text())
    assert checksums["version"] == export_folder.made_from(folder) == version and checksums["complete"]
    assert {"model.onnx", "model.int8.onnx", "engines.json", "saved_model/saved_model.pb"} <= set(checksums["sha256"])
    assert not (folder / model_folder.MODEL_FILE).exists()  # the model stays in the candidate folder alone
    assert not model_folder.export_path(paths.candidate, "onnx").exists()  # and its exports here alone
    network = model_folder.load(paths.candidate)
    exported = tf.saved_model.load(str(folder / "saved_model"))
    images = np.random.default_rng(1).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    served = exported.serve(tf.constant(images)).numpy()
    assert np.abs(served - network.predict(images, verbose=0)).max() <= 1e-4
    record = json.loads((folder / "engines.json").read_text())
    assert record["exports"] == ["saved_model", "onnx"]  # what the gate's export parity holds to model.keras
    assert {"keras", "onnxruntime"} <= {row["engine"] for row in record["engines"]}
    assert all(row["images"] == _test_images(paths) and row["ms_per_image"] > 0 for row in record["engines"])


def test_a_retrained_candidate_is_refused_until_exported_again(trained, monkeypatch):
    config, paths = trained
    params = ExportParams(formats=("onnx",), int8_calibration=0)
    assert _test_images(paths) > 3
    monkeypatch.setattr(build, "ENGINE_CHECK_IMAGES", 3)
    export.run(params, config.base.seed, paths)
    engines = json.loads((paths.candidate_exports / "engines.json").read_text())["engines"]
    assert engines and all(row["images"] == 3 for row in engines), engines  # at most ENGINE_CHECK_IMAGES
    first = export_folder.made_from(paths.candidate_exports)

    train.run(config.train.model_copy(update={"epochs": 1}), config.preprocess.augment, config.base.seed + 1, paths)
    retrained = model_folder.version_of(paths.candidate)
    assert retrained != first
    with pytest.raises(export_folder.NotMade, match=f"made from the model {first}, but .* holds the model {retrained}"
                                                    r"; run the export stage \(`dvc repro export`"):
        export_folder.check_made_from(paths.candidate_exports, paths.candidate)
    # the gate fails its export parity check, naming the stage to run; promotion refuses to register the mix
    check, figures = export_check(config.evaluate.gate, paths.candidate, paths.candidate_exports, [], paths.raw,
                                  config.ingest.max_pixels)
    assert not check["passed"] and "dvc repro export" in check["detail"] and figures == []
    with pytest.raises(export_folder.NotMade, match="dvc repro export"):
        promote.promote(paths, reason="forced in a test", force=True)
    assert not (paths.registry / retrained).exists() and not paths.production.exists()

    export.run(params, config.base.seed, paths)  # the stage redoes the exports for the candidate it finds
    assert export_folder.check_made_from(paths.candidate_exports, paths.candidate) == retrained
    promote.promote(paths, reason="forced in a test", force=True)
    assert {"model.keras", "model.onnx", "engines.json", "checksums.json"} <= \
        {path.name for path in (paths.registry / retrained).iterdir()}
    assert model_folder.read_engines(paths.production)["exports"] == ["onnx"]


def test_int8_calibration_auto_takes_none_for_a_pretrained_backbone_and_the_size_comes_from_the_weights(trained):
    _, paths = trained
    assert export.int8_calibration(ExportParams(), {}) == export.DEFAULT_INT8_CALIBRATION
    assert export.int8_calibration(ExportParams(), {"backbone": {"name": "efficientnet_lite2"}}) == 0
    assert export.int8_calibration(ExportParams(int8_calibration=32), {"backbone": {"name": "x"}}) == 32
    counted = model_folder.load(paths.candidate).count_params()
    assert counted <= export.parameters(paths.candidate) <= counted + 50_000  # the weights file: no more than a note
