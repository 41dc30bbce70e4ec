"""The model folder format: one writer and reader, one version id, safe loading."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tasks import model_folder
from tasks.train import model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("candidate")
    network = model.simple_cnn(16, 2, depth=1, width=4, dropout=0.0)
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
