"""The pretrained route of training: a logistic-regression head on the cached features joined to its backbone into one
uint8 Keras model, fine-tuning by train.fine_tune, and evaluation on the cached features of a frozen backbone.

One prepared project for the module (photo-like images, ingested, preprocessed, embedded and trained once, with the
default auto rules); tests that train again do so in a copy of its data. Two of the three classes share a colour, so
the head leaves room on validation and `auto` decides by its other rules."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tasks import embedding_store, images, model_folder, processed_store
from tasks.config import load_config
from tasks.embed import stage as embed
from tasks.evaluate import stage as evaluate
from tasks.ingest import stage as ingest
from tasks.params import Config
from tasks.paths import Paths
from tasks.preprocess import stage as preprocess
from tasks.train import head, on_features, transfer
from tasks.train import stage as train
from tests.conftest import PROJECT_ROOT, make_photo

BACKBONE, IMAGE_SIZE = "efficientnet_lite2", 64
# green and grass are drawn alike: the head cannot tell them apart, red it always can
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "grass": (40, 180, 60)}
LABELS = sorted(COLOURS)
PER_CLASS = 16


def write_photos(root: Path) -> Path:
    for class_index, (label, colour) in enumerate(COLOURS.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(PER_CLASS):
            make_photo(colour, seed=class_index * 1000 + index).save(root / label / f"{label}_{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """48 photo-like images through ingest, preprocess, embed and train (train.model auto: the features route)."""
    root = tmp_path_factory.mktemp("features-route")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        patch.chdir(root)  # dvclive looks for a repository in the current folder
        config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
            "ingest.source": str(write_photos(root / "source")),
            "validate.min_images_per_class": 3,
            "preprocess.image_size": IMAGE_SIZE,
            "preprocess.val_fraction": 0.25,
            "preprocess.test_fraction": 0.25,
            "embed.engine": "keras",
            "embed.workers": 1,
            "train.batch_size": 8,
        })
        paths = Paths(config.paths, root)
        ingest.run(config.ingest, paths)
        preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model,
                       config.train.weights)
        embed.run(config.embed, config.ingest.max_pixels, paths)
        train.run(config.train, config.preprocess.augment, config.base.seed, paths)
        yield config, paths


@pytest.fixture
def copied(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, Paths]:
    """The prepared project's data (raw store, manifest, split table, features) in tmp_path, with no model yet."""
    config, paths = trained
    shutil.copytree(paths.root / "data", tmp_path / "data",
                    ignore=lambda folder, names: [name for name in names
                                                  if Path(folder, name) in (paths.models, paths.reports)])
    monkeypatch.chdir(tmp_path)
    return config, Paths(config.paths, tmp_path)


def val_images(config: Config, paths: Paths, card: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """The val split's rows and their images as prediction decodes them, from the source files themselves."""
    table = processed_store.read_table(paths.processed)
    rows = table[table["split"] == "val"].reset_index(drop=True)
    source = paths.resolve(config.ingest.source)
    pixels = np.stack([images.load_rgb_array(source / name, card["image_size"], card["resize"],
                                             config.ingest.max_pixels) for name in rows["path"]])
    return rows, pixels


def fine_tuning(config: Config, **settings) -> Config:
    """config with train.fine_tune updated (and the rest of train as the module's); one layer unfrozen, which
    tests the same code at a fraction of the cost of 20."""
    fine_tune = config.train.fine_tune.model_copy(update={"unfreeze_layers": 1, **settings})
    return config.model_copy(update={"train": config.train.model_copy(update={"fine_tune": fine_tune})})


def test_the_head_and_its_backbone_are_saved_as_one_uint8_model(trained):
    config, paths = trained
    candidate = paths.candidate
    network = keras.saving.load_model(candidate / model_folder.MODEL_FILE, safe_mode=True)
    assert network.input.dtype == "uint8" and tuple(network.input_shape) == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert tuple(network.output_shape) == (None, len(LABELS))

    card = model_folder.read_card(candidate)
    assert card["model"] == BACKBONE
    assert card["model_choice"]["model"] == BACKBONE and card["model_choice"]["route"] == "head_on_features"
    settings = embedding_store.read_summary(paths.embeddings)["settings"]
    assert card["backbone"] == {"name": BACKBONE, "weights": card["model_choice"]["weights_id"], "frozen": True,
                                "embeddings": settings}
    assert card["image_size"] == IMAGE_SIZE and card["resize"] == "crop"

    history = model_folder.read_history(candidate)
    assert history["phase"].tolist() == ["head"] * len(head.STRENGTHS)  # one row per regularisation strength
    assert history["strength"].tolist() == list(head.STRENGTHS)
    kept = history.iloc[card["validation"]["epoch"] - 1]  # the strength kept: the best on validation
    assert card["validation"]["phase"] == "head" and kept["val_macro_f1"] == history["val_macro_f1"].max()
    assert card["validation"]["val_loss"] == pytest.approx(kept["val_loss"])
    assert card["epochs_run"] == len(head.STRENGTHS)

    info = model_folder.read_info(candidate)
    assert info.labels == tuple(LABELS) and info.image_size == IMAGE_SIZE and info.resize == "crop"
    assert not info.multi_label and info.version == card["version"]


def test_the_saved_model_on_images_gives_the_heads_probabilities_on_the_stored_features(trained):
    config, paths = trained
    card = model_folder.read_card(paths.candidate)
    rows, pixels = val_images(config, paths, card)
    network = model_folder.load(paths.candidate)
    on_images = np.asarray(network.predict_on_batch(pixels), dtype=np.float64)

    # the head fitted again on the stored features (deterministic): the one inside the saved model
    fitted, val = transfer.fit_head(paths.embeddings, processed_store.read_table(paths.processed), LABELS, False,
                                    config.train.select_on, config.train.class_weight, config.train.sampling)
    kernel, bias = network.get_layer("probabilities").get_weights()
    np.testing.assert_allclose(kernel, fitted.kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, fitted.bias, rtol=1e-5, atol=1e-6)
    on_features = fitted.probabilities(embedding_store.read_features(paths.embeddings, rows["sha256"].tolist()))
    np.testing.assert_array_equal(val.truth, rows["label_index"].to_numpy())

    assert on_images.shape == on_features.shape == (len(rows), len(LABELS))
    np.testing.assert_allclose(on_images, on_features, atol=1e-3)
    assert (on_images.argmax(axis=1) == on_features.argmax(axis=1)).all()


def test_evaluate_scores_a_frozen_backbone_on_the_cached_features_as_on_the_images(trained, monkeypatch, caplog):
    config, paths = trained

    def no_images(*arguments, **keywords):
        raise AssertionError("the test images were run through the backbone")

    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "predict_split", no_images)
        with caplog.at_level(logging.INFO, logger="tasks.evaluate.stage"):
            cached = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    assert "cached features" in caplog.text
    cached_predictions = pd.read_csv(paths.evaluation / "test_predictions.csv")

    monkeypatch.setattr(evaluate, "on_cached_features", lambda paths: False)  # the whole model on the images
    full = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    full_predictions = pd.read_csv(paths.evaluation / "test_predictions.csv")

    assert cached["test_images"] == full["test_images"] == len(cached_predictions) > 0
    assert cached["accuracy"] == pytest.approx(full["accuracy"], abs=1e-6)
    assert cached["macro_f1"] == pytest.approx(full["macro_f1"], abs=1e-6)
    merged = cached_predictions.merge(full_predictions, on="path", suffixes=("_cached", "_full"))
    assert len(merged) == len(cached_predictions)
    assert (merged["predicted_cached"] == merged["predicted_full"]).all()
    np.testing.assert_allclose(merged["confidence_cached"], merged["confidence_full"], atol=1e-3)


def test_auto_keeps_the_head_alone_with_few_images_per_class(trained):
    config, paths = trained
    card = model_folder.read_card(paths.candidate)
    challengers = card["challengers"]
    assert challengers["val_scores"]["head"] < transfer.LEAVES_ROOM_BELOW  # the head leaves room: another rule decides
    assert challengers["tried"] == [] and "min_images_per_class" in challengers["why"]
    assert challengers["kept"] == "head" and card["backbone"]["frozen"] is True
    assert not (paths.models / transfer.TRIALS_FILE).exists()  # nothing tried, nothing learnt


def test_fine_tuning_always_runs_within_its_cpu_budget_and_records_no_trial(copied, monkeypatch):
    config, paths = copied
    config = fine_tuning(config, when="always", epochs=3, max_minutes=0.001)
    monkeypatch.setattr(on_features, "SMALLEST_USEFUL_BUDGET", float("-inf"))  # start it, however small the budget
    monkeypatch.setattr(transfer, "MIN_GAIN", -1.0)  # the fine-tuned model kept whatever it scores: that branch

    train.run(config.train, config.preprocess.augment, config.base.seed, paths)

    history = model_folder.read_history(paths.candidate)
    assert history["phase"].tolist() == ["head"] * len(head.STRENGTHS) + ["fine_tune"]  # stopped after one epoch
    card = model_folder.read_card(paths.candidate)
    challengers = card["challengers"]
    assert challengers["tried"] == ["fine_tune"] and challengers["why"] == "train.fine_tune.when: always"
    assert challengers["kept"] == "fine_tune" and isinstance(challengers["val_scores"]["fine_tune"], float)
    assert card["backbone"]["frozen"] is False
    assert card["validation"]["phase"] == "fine_tune"
    assert card["validation"]["val_macro_f1"] == challengers["val_scores"]["fine_tune"]
    assert not (paths.models / transfer.TRIALS_FILE).exists()  # `always` learns nothing for `auto`

    # its backbone changed: evaluate runs the whole model on the test images (decoded from the raw store)
    assert evaluate.on_cached_features(paths) is False
    metrics = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    assert metrics["test_images"] == json.loads((paths.processed / processed_store.SUMMARY_FILE).read_text())[
        "counts"]["test"]


def test_auto_tries_the_challengers_where_the_head_leaves_room_and_remembers_the_outcome(copied, monkeypatch):
    config, paths = copied
    config = fine_tuning(config, when="auto", epochs=1, max_minutes=10, min_images_per_class=1)
    train_settings = config.train.model_copy(update={"epochs": 2, "min_epochs": 1})
    config = config.model_copy(update={"train": train_settings})
    monkeypatch.setattr(transfer, "MIN_GAIN", -1.0)  # a challenger is kept: the model folder then holds it

    train.run(config.train, config.preprocess.augment, config.base.seed, paths)

    card = model_folder.read_card(paths.candidate)
    challengers = card["challengers"]
    assert challengers["tried"] == ["simple_cnn", "fine_tune"] and "kept only if they score better" in \
        challengers["why"]
    assert set(challengers["val_scores"]) == {"head", "simple_cnn", "fine_tune"}
    assert card["model"] == ("simple_cnn" if challengers["kept"] == "simple_cnn" else "efficientnet_lite2")
    history = model_folder.read_history(paths.candidate)
    assert {"head", "simple_cnn", "fine_tune"} == set(history["phase"])
    info = model_folder.read_info(paths.candidate)  # whichever won, the folder is whole and its card right
    network = model_folder.load(paths.candidate)
    assert network.input_shape[1] == info.image_size == card["image_size"]
    preprocessing = json.loads((paths.processed / processed_store.SUMMARY_FILE).read_text())
    if challengers["kept"] == "simple_cnn":
        assert card["image_size"] == preprocessing["scratch_image_size"] and card["backbone"] is None
    key = transfer.trial_key(card["model_choice"]["weights_id"], IMAGE_SIZE, "crop", LABELS)
    trial = transfer.read_trials(paths.models)[key]
    assert trial == {"winner": challengers["kept"], "scores": challengers["val_scores"],
                     "train_images": preprocessing["counts"]["train"]}
    # the next run with as many training images follows the outcome instead of trying both again
    again, why = transfer.decide(config.train.fine_tune, challengers["val_scores"]["head"], trial["train_images"],
                                 len(LABELS), trial)
    assert again == [challengers["kept"]] and "earlier run" in why


def test_training_without_the_features_asks_for_the_embed_stage(copied):
    config, paths = copied
    shutil.rmtree(paths.embeddings)

    with pytest.raises(ValueError, match="run the embed stage"):
        train.run(config.train, config.preprocess.augment, config.base.seed, paths)
    assert not paths.candidate.exists()
