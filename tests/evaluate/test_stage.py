import json

import keras
import numpy as np
import pandas as pd

from tasks import images, metrics_file
from tasks.evaluate import stage as evaluate
from tasks.ingest import stage as ingest
from tasks.preprocess import stage as preprocess
from tasks.train import stage as train


def test_train_then_evaluate_write_the_model_and_metrics(shrunk_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for a repository in the current folder
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)

    candidate = train.run(config.train, config.preprocess.augment, config.base.seed, paths)
    assert json.loads((candidate / "labels.json").read_text()) == ["blue", "green", "red"]
    history = pd.read_csv(candidate / "history.csv")
    assert len(history) == config.train.epochs and {"loss", "val_loss", "accuracy"} <= set(history.columns)
    card = json.loads((candidate / "model_card.json").read_text())
    assert card["image_size"] == config.preprocess.image_size and card["labels"] == ["blue", "green", "red"]
    live_metrics = json.loads((paths.training_reports / "live" / "metrics.json").read_text())
    # flat names, for their split (a nested train.accuracy would read like a params key in `dvc exp show`)
    assert {"train_accuracy", "train_loss", "val_accuracy", "val_loss"} <= set(live_metrics)
    assert live_metrics["val_accuracy"] == card["validation"]["val_accuracy"]  # the epoch kept, not the last

    model = keras.saving.load_model(candidate / "model.keras", safe_mode=True)
    assert model.input.dtype == "uint8"
    some_image = paths.resolve(config.ingest.source) / "red" / "red_000.png"
    pixels = images.load_rgb_array(some_image, config.preprocess.image_size, card["resize"],
                                     config.ingest.max_pixels)
    probabilities = model.predict(pixels[None], verbose=0)[0]
    assert probabilities.shape == (3,) and np.isclose(probabilities.sum(), 1, atol=1e-5)

    metrics = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    saved = json.loads((paths.evaluation / "metrics.json").read_text())  # headline only: DVC's metrics
    assert "per_class" not in saved and "test_per_class" not in saved
    # each figure named for the test split in the file (test_accuracy), plainly in memory and for its readers
    assert {"test_accuracy", "test_macro_f1", "test_images"} <= set(saved) and "accuracy" not in saved
    assert all(name.startswith("test_") for name in saved if name != "task")
    assert metrics_file.read(paths.evaluation) == {key: value for key, value in metrics.items()
                                                    if not isinstance(value, dict)}
    assert metrics_file.plain(saved) | json.loads((paths.evaluation / "per_class.json").read_text()) == metrics
    assert 0 <= metrics["accuracy"] <= 1 and set(metrics["per_class"]) == {"blue", "green", "red"}
    assert sum(scores["support"] for scores in metrics["per_class"].values()) == metrics["test_images"]
    predictions = pd.read_csv(paths.evaluation / "test_predictions.csv")
    assert list(predictions.columns) == ["path", "actual", "predicted", "confidence"]
    assert len(predictions) == metrics["test_images"]
    assert (paths.evaluation / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_model_learns_an_easy_task(shrunk_config, tmp_path, monkeypatch):
    """Three colour classes are trivially separable: a few epochs must get nearly all of them right."""
    monkeypatch.chdir(tmp_path)
    config, paths = shrunk_config
    params = config.train.model_copy(update={"epochs": 15, "patience": 15, "width": 8})
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    train.run(params, config.preprocess.augment, config.base.seed, paths)
    metrics = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    assert metrics["accuracy"] >= 0.8, metrics
