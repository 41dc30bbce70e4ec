from pathlib import Path

import pytest
import yaml

from tasks.config import apply_overrides, load_config, parse_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_project_params_load_into_typed_sections():
    config, paths = load_config(PROJECT_ROOT / "params.yaml")
    assert config.train.epochs >= 1
    assert config.validation.min_images_per_class >= 1
    assert paths.manifest == PROJECT_ROOT / "data/interim/manifest.parquet"
    with pytest.raises(Exception):
        config.train.epochs = 3  # frozen


@pytest.mark.parametrize(
    "values, message",
    [
        ({"train": {"epochs": -1}}, "train.epochs must be >= 1, got -1"),
        ({"train": {"epoch": 3}}, "train.epoch is not a known key"),
        ({"trian": {}}, "trian is not a known key"),
        ({"preprocess": {"resize": "squash"}}, "preprocess.resize must be one of"),
        ({"preprocess": {"augment": {"zoom": 2}}}, "preprocess.augment.zoom must be < 1, got 2"),
        ({"validate": {"max_bad_fraction": 1.5}}, "validate.max_bad_fraction must be <= 1, got 1.5"),
        ({"preprocess": {"val_fraction": 0.6, "test_fraction": 0.5}}, "val_fraction + test_fraction must be < 1"),
        ({"ingest": {"on_label_conflict": "ignore"}}, "ingest.on_label_conflict must be one of"),
    ],
)
def test_bad_params_name_the_dotted_key(values, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace(".", r"\.")):
        parse_config(values)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        parse_config({"train": {"epochs": 0, "batch_size": 0}})
    assert "train.epochs" in str(error.value) and "train.batch_size" in str(error.value)


def test_load_config_names_the_file(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ValueError, match=f"{params_file}.*train.epochs must be >= 1, got -1"):
        load_config(params_file)
    with pytest.raises(ValueError, match="params file not found"):
        load_config(tmp_path / "missing.yaml")
    params_file.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(params_file)


def test_overrides_use_dotted_keys_like_dvc_exp_run():
    values = apply_overrides({"train": {"epochs": 5}}, {"train.epochs": 2, "preprocess.augment.zoom": 0.3})
    config = parse_config(values)
    assert config.train.epochs == 2
    assert config.preprocess.augment.zoom == 0.3


def test_horizontal_flip_auto_is_on_for_photos_and_off_for_the_digits_demo():
    values = {"preprocess": {"augment": {"horizontal_flip": "auto"}}}
    photos = parse_config(apply_overrides(values, {"ingest.source": "data/my-photos"}))
    assert photos.preprocess.augment.horizontal_flip is True
    demo = parse_config(apply_overrides(values, {"ingest.source": "data/demo/digits"}))  # paths.demo
    assert demo.preprocess.augment.horizontal_flip is False
    fixed = parse_config(apply_overrides(values, {"ingest.source": "data/demo/digits",
                                                  "preprocess.augment.horizontal_flip": True}))
    assert fixed.preprocess.augment.horizontal_flip is True  # a user's choice is kept


def test_image_size_takes_auto_or_a_number_and_names_the_key_otherwise():
    assert parse_config({"preprocess": {"image_size": "auto"}}).preprocess.image_size == "auto"
    assert parse_config({"preprocess": {"image_size": 96}}).preprocess.image_size == 96
    with pytest.raises(ValueError, match="preprocess.image_size"):
        parse_config({"preprocess": {"image_size": "big"}})


@pytest.mark.parametrize("old, new", [("exports", "formats"), ("int8_calibration", "int8_calibration")])
def test_the_export_keys_moved_out_of_train_are_refused_with_their_new_name(old, new):
    """train.exports and train.int8_calibration are the export stage's now (export.formats, export.int8_calibration):
    an old params.yaml is refused, naming the key to write instead."""
    values = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    values["train"][old] = ["onnx"] if old == "exports" else 0
    with pytest.raises(ValueError, match=rf"train: {old} is now export\.{new}: the export stage writes the exports"):
        parse_config(values)
    assert parse_config(apply_overrides(values | {"train": {key: value for key, value in values["train"].items()
                                                           if key != old}}, {f"export.{new}": values["train"][old]}))
