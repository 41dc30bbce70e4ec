"""The export folder beside the candidate: it records the model it was made from, a mismatch or a damaged file is
refused naming what to run, and joined with its model it is one whole model folder under one checksums.json."""

import json

import pandas as pd
import pytest

from tasks import export_folder, leftovers, model_checksums, model_folder, networks


def _model(folder, seed: int) -> str:
    import keras

    keras.utils.set_random_seed(seed)
    network = networks.simple_cnn(16, 2, depth=1, width=4, dropout=0.0)
    folder.mkdir(parents=True)
    return model_folder.write(folder, network, ["cat", "dog"], {"image_size": 16, "resize": "crop"},
                              pd.DataFrame({"epoch": [0], "loss": [1.0]}))


def _exports(folder, version: str) -> None:
    """An export folder as the export stage writes one (stand-in bytes for the exports)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    (folder / "saved_model" / "variables").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    (folder / "saved_model" / "variables" / "variables.index").write_bytes(b"index")
    export_folder.write_engines(folder, version, {"engines": [], "exports": ["saved_model", "onnx"]})


@pytest.fixture
def candidate(tmp_path):
    model, exports = tmp_path / "models" / "candidate", tmp_path / "models" / "candidate_exports"
    version = _model(model, 1)
    _exports(exports, version)
    return model, exports, version


@pytest.mark.parametrize("link", [False, True])
def test_joined_it_is_one_model_folder_with_one_checksums_over_all(candidate, tmp_path, link):
    model, exports, version = candidate
    assert export_folder.made_from(exports) == version
    target = tmp_path / "registry" / version
    target.mkdir(parents=True)
    assert export_folder.join(model, exports, target, link=link) == version
    checksums = json.loads((target / model_checksums.CHECKSUMS_FILE).read_text())
    assert checksums["complete"] and checksums["version"] == version
    assert set(checksums["sha256"]) == {"model.keras", "labels.json", "model_card.json", "history.csv", "model.onnx",
                                        "saved_model/saved_model.pb", "saved_model/variables/variables.index",
                                        "engines.json"}
    assert model_folder.read_info(target).version == version
    assert model_folder.read_engines(target)["exports"] == ["saved_model", "onnx"]
    model_checksums.check_files(target, ["model.onnx", "saved_model/", "engines.json"], version)
    # the candidate and its exports are left as they were
    assert not (model / "model.onnx").exists() and not (exports / model_folder.MODEL_FILE).exists()
    assert (target / "model.onnx").stat().st_ino != (exports / "model.onnx").stat().st_ino or link


def test_exports_of_another_model_or_none_are_refused_naming_the_stage(candidate, tmp_path):
    model, exports, version = candidate
    other = tmp_path / "retrained"
    other_version = _model(other, 2)
    assert other_version != version
    with pytest.raises(export_folder.NotMade, match=rf"made from the model {version}, but .* holds the model "
                                                    rf"{other_version}; run the export stage \(`dvc repro export`"):
        export_folder.check_made_from(exports, other)
    with pytest.raises(export_folder.NotMade, match="no exports of the model .*dvc repro export"):
        export_folder.check_made_from(tmp_path / "never_exported", model)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(export_folder.NotMade):
        export_folder.join(other, exports, target)
    assert not any(target.iterdir())  # nothing joined


def test_a_damaged_export_is_refused_before_it_is_sealed_into_a_join(candidate, tmp_path):
    model, exports, _ = candidate
    (exports / "saved_model" / "variables" / "variables.index").write_bytes(b"changed")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError, match=r"variables.index: changed or damaged"):
        export_folder.join(model, exports, target)
    assert not (target / model_checksums.CHECKSUMS_FILE).exists()


def test_the_temporary_join_is_removed_after_use_and_as_a_killed_runs_leftover(candidate):
    model, exports, version = candidate
    with export_folder.joined(model, exports) as whole:
        assert whole.parent == exports.parent and model_folder.read_info(whole).version == version
        assert leftovers.temporary_folders(exports) == [whole]  # what a killed run would leave: found by its name
    assert not whole.exists()
