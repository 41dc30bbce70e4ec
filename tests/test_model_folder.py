"""The model folder format: one writer and reader, one version id, safe loading."""

import dataclasses
import json

import keras
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


def test_a_model_with_arbitrary_code_is_refused_in_safe_mode(tmp_path):
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(lambda values: values * 2)(inputs)
    folder = tmp_path / "unsafe"
    folder.mkdir()
    keras.Model(inputs, outputs).save(folder / model_folder.MODEL_FILE)
    (folder / model_folder.LABELS_FILE).write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="[Ss]afe"):
        model_folder.load(folder)
