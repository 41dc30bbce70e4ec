"""The model folder format: one writer and reader, one version id, safe loading."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tasks import model_checksums, model_folder, networks


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("candidate")
    network = networks.simple_cnn(16, 2, depth=1, width=4, dropout=0.0)
    version = model_folder.write(folder, network, ["cat", "dog"], {"image_size": 16, "resize": "crop"},
                                 pd.DataFrame({"epoch": [0], "loss": [1.0]}))
    return folder, version


def test_write_records_one_version_id_that_read_info_and_the_card_agree_on(saved):
    folder, version = saved
    assert len(version) == 12 and version == model_folder.compute_version(folder)
    card = json.loads((folder / model_folder.CARD_FILE).read_text())
    assert card["version"] == version and card["labels"] == ["cat", "dog"]
    info = model_folder.read_info(folder)
    assert (info.labels, info.image_size, info.resize, info.version) == (("cat", "dog"), 16, "crop", version)
    assert list(model_folder.read_history(folder)["loss"]) == [1.0]


def test_load_is_safe_mode_and_checked_against_the_card(saved, tmp_path):
    folder, _ = saved
    network = model_folder.load_checked(model_folder.read_info(folder))
    assert network.output_shape == (None, 2)
    changed = dataclasses.replace(model_folder.read_info(folder), version="000000000000")
    with pytest.raises(ValueError, match="the model changed during the run"):
        model_folder.load_checked(changed)


def test_an_incomplete_or_damaged_folder_is_a_clear_error(saved, tmp_path):
    with pytest.raises(ValueError, match="not a model folder, model.keras, labels.json, model_card.json missing"):
        model_folder.read_info(tmp_path)
    folder, _ = saved
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in model_folder.REQUIRED_FILES:
        (broken / name).write_bytes((folder / name).read_bytes())
    (broken / model_folder.CARD_FILE).write_text(json.dumps({"image_size": 16, "resize": "squash"}))
    with pytest.raises(ValueError, match="resize must be one of stretch, crop, pad, got 'squash'"):
        model_folder.read_info(broken)
    (broken / model_folder.LABELS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="labels.json: unreadable"):
        model_folder.read_labels(broken)


UNSAFE_MODELS = {  # saved in a child process, so that no custom class is registered in the one that loads them
    "lambda": "inputs = keras.Input((2,)); outputs = keras.layers.Lambda(lambda values: values * 2)(inputs)",
    "named function": "def double(values):\n    return values * 2\n"
                      "inputs = keras.Input((2,)); outputs = keras.layers.Lambda(double)(inputs)",
    "unknown class": "@keras.saving.register_keras_serializable(package='mine')\n"
                     "class Doubler(keras.layers.Layer):\n    def call(self, values):\n        return values * 2\n"
                     "inputs = keras.Input((2,)); outputs = Doubler()(inputs)",
}


def _unsafe_model(folder, kind: str):
    folder.mkdir()
    script = f"import keras\n{UNSAFE_MODELS[kind]}\nkeras.Model(inputs, outputs).save({str(folder / 'model.keras')!r})"
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    (folder / model_folder.LABELS_FILE).write_text(json.dumps(["a", "b"]))
    return folder


@pytest.mark.parametrize(("kind", "reason"), [
    ("lambda", "a Lambda layer ('lambda'), which holds Python code"),
    ("named function", "a Lambda layer ('lambda"),
    ("unknown class", "the class 'mine>Doubler', which Keras does not define"),
])
def test_a_model_with_arbitrary_code_is_refused_in_safe_mode_with_the_reason(tmp_path, kind, reason):
    folder = _unsafe_model(tmp_path / "unsafe", kind)
    with pytest.raises(ValueError, match="refused by Keras safe mode") as refused:
        model_folder.load(folder)
    assert reason in str(refused.value) and str(folder / "model.keras") in str(refused.value)


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda data: b"", "damaged, empty (0 bytes)"),
    (lambda data: data[: len(data) // 2], "damaged, not a readable zip archive"),
    (lambda data: data[:-100], "damaged, not a readable zip archive"),
])
def test_a_truncated_or_empty_model_file_is_called_damaged(saved, tmp_path, damage, reason):
    source, _ = saved
    folder = tmp_path / "damaged"
    shutil.copytree(source, folder)
    model_file = folder / model_folder.MODEL_FILE
    model_file.write_bytes(damage(model_file.read_bytes()))
    with pytest.raises(ValueError, match="damaged") as damaged:
        model_folder.load(folder)
    message = str(damaged.value)
    assert reason in message and str(model_file) in message and "File not found" not in message
    assert "dvc repro train" in message


def _copy(source, target):
    shutil.copytree(source, target)
    return target


def test_a_truncated_model_file_is_called_damaged_when_loaded_for_a_run_not_changed(saved, tmp_path):
    """Issue 27 item 14: a truncated model.keras said "changed during the run ... run again" on every run."""
    folder = _copy(saved[0], tmp_path / "truncated")
    info = model_folder.read_info(folder)
    model_file = folder / model_folder.MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[:-100])
    with pytest.raises(ValueError, match="damaged") as damaged:
        model_folder.load_checked(info)
    message = str(damaged.value)
    assert "changed during the run" not in message and "run again" not in message
    assert str(model_file) in message and "dvc repro train" in message and "dvc checkout" in message


def test_a_model_file_replaced_under_its_card_is_named_with_what_to_do(saved, tmp_path):
    """A whole, loadable model.keras that is not the version its card names: restore or retrain, not run again."""
    folder = _copy(saved[0], tmp_path / "replaced")
    info = model_folder.read_info(folder)
    with (folder / model_folder.MODEL_FILE).open("ab") as handle:  # a zip archive tolerates trailing bytes
        handle.write(b"\0")
    with pytest.raises(ValueError, match="not the model its model_card.json names") as replaced:
        model_folder.load_checked(info)
    assert "run again" not in str(replaced.value) and "dvc repro train" in str(replaced.value)


def test_checksums_cover_every_file_and_a_changed_export_is_refused_by_name(saved, tmp_path):
    """Issue 27 item 5: an export or engines.json changed after they were written is refused, naming the file."""
    folder = _copy(saved[0], tmp_path / "sealed")
    version = model_folder.version_of(folder)
    (folder / "model.onnx").write_bytes(b"onnx bytes as exported")
    (folder / "openvino").mkdir()
    (folder / "openvino" / "model.xml").write_bytes(b"<net/>")
    (folder / "openvino" / "model.bin").write_bytes(b"\1\2\3\4")
    model_folder.write_engines(folder, {"engines": []})
    checksums = json.loads((folder / model_checksums.CHECKSUMS_FILE).read_text())
    assert checksums["complete"] and checksums["version"] == version
    assert set(checksums["sha256"]) == {"model.keras", "labels.json", "model_card.json", "history.csv",
                                        "model.onnx", "openvino/model.bin", "openvino/model.xml", "engines.json"}
    model_checksums.check_files(folder, ["model.onnx", "openvino/model.xml", "engines.json"], version, exports=True)
    assert model_folder.read_engines(folder) == {"engines": []}

    (folder / "model.onnx").write_bytes(b"onnx bytes permuted")
    with pytest.raises(ValueError, match="model.onnx: changed or damaged since train wrote it") as refused:
        model_checksums.check_files(folder, ["model.onnx"], version, exports=True)
    assert "dvc checkout" in str(refused.value) and "dvc repro train" in str(refused.value)
    (folder / "openvino" / "model.bin").write_bytes(b"\4\3\2\1")  # the weights beside the IR count too
    with pytest.raises(ValueError, match=r"openvino/model.bin: changed or damaged"):
        model_checksums.check_files(folder, ["openvino/model.xml"], version, exports=True)
    (folder / "model.int8.onnx").write_bytes(b"added later")
    with pytest.raises(ValueError, match="model.int8.onnx: not among the files train wrote"):
        model_checksums.check_files(folder, ["model.int8.onnx"], version, exports=True)
    (folder / model_folder.ENGINES_FILE).write_text(json.dumps({"engines": [{"engine": "openvino"}]}))
    with pytest.raises(ValueError, match="engines.json: changed or damaged"):
        model_folder.read_engines(folder)
    with pytest.raises(ValueError, match="written for the model .* but model.keras is the model 0123456789ab"):
        model_checksums.check_files(folder, ["engines.json"], "0123456789ab")
    (folder / model_checksums.CHECKSUMS_FILE).unlink()
    with pytest.raises(ValueError, match="no checksums.json, so model.onnx cannot be checked"):
        model_checksums.check_files(folder, ["model.onnx"], version, exports=True)


def test_while_exports_are_still_being_written_only_listed_files_are_checked(saved, tmp_path):
    folder = _copy(saved[0], tmp_path / "building")
    # train writes no exports (the export stage does, apart): what model_folder.write records is complete
    assert json.loads((folder / model_checksums.CHECKSUMS_FILE).read_text())["complete"]
    # the export stage's record before its engines.json (tasks/export/build.py), here over a whole model folder
    model_checksums.seal(folder, saved[1], complete=False)
    (folder / "model.onnx").write_bytes(b"just exported")
    model_checksums.check_files(folder, ["model.onnx"], exports=True)  # the engine check opens it
    with pytest.raises(ValueError, match="engines.json: not among the files train wrote"):
        (folder / model_folder.ENGINES_FILE).write_text(json.dumps({"engines": []}))
        model_folder.read_engines(folder)


def test_the_installed_version_is_written_and_read_back_here_and_unreadable_reads_as_none(tmp_path):
    assert model_folder.read_installed_version(tmp_path) is None  # no version.json: a folder that copies nothing
    model_folder.write_installed_version(tmp_path, "0123456789ab")
    assert json.loads((tmp_path / "version.json").read_text()) == {"version": "0123456789ab"}
    assert model_folder.read_installed_version(tmp_path) == "0123456789ab"
    for damaged in ("{not json", "[]", '{"version": 3}'):
        (tmp_path / "version.json").write_text(damaged)
        assert model_folder.read_installed_version(tmp_path) is None
