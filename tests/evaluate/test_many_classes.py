"""Issue 27 item 11: with many classes the evaluation's outputs and memory stay bounded (a picture of the most
confused classes, the full numbers in a compact table), and item 14: its CSV files are safe to open in a spreadsheet."""

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks import model_folder
from tasks.evaluate import confusion, plots
from tasks.evaluate import stage as evaluate
from tasks.params import EvaluateParams, PathsParams
from tasks.paths import Paths
from tasks.scoring import metrics


def test_confusion_counts_stay_sparse_and_the_drawn_classes_are_the_most_confused():
    true_index = np.array([0, 0, 1, 2, 2, 2, 3])
    predicted_index = np.array([0, 1, 1, 2, 0, 3, 3])
    pairs = confusion.pair_counts(true_index, predicted_index)
    assert len(pairs) == 7 and pairs["images"].sum() == 7
    dense = np.zeros((4, 4), dtype=int)
    np.add.at(dense, (true_index, predicted_index), 1)
    np.testing.assert_array_equal(confusion.sub_matrix(pairs, np.arange(4)), dense)
    errors = confusion.errors_per_class(pairs, 4)
    assert list(errors) == [2, 1, 2, 1]  # class 0: one missed, one taken for it; class 2: two missed
    assert list(confusion.most_confused(errors, 2)) == [0, 2]
    np.testing.assert_array_equal(confusion.sub_matrix(pairs, np.array([0, 2])), [[1, 0], [1, 1]])
    square = confusion.csv_table(pairs, list("abcd"))
    assert list(square.columns) == ["actual", "a", "b", "c", "d"] and square.iloc[:, 1:].to_numpy().sum() == 7


def test_the_bootstrap_of_many_classes_does_not_build_a_square_matrix():
    generator = np.random.default_rng(0)
    classes = 5000  # a dense matrix per resample: 200 MB
    true_index = generator.integers(0, classes, 3000)
    predicted = np.where(generator.random(3000) < 0.7, true_index, generator.integers(0, classes, 3000))
    tracemalloc.start()
    scores = metrics.bootstrap(true_index, [predicted], classes, "macro_f1", seed=0, count=5)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak
    assert metrics.paired_difference(true_index, predicted, predicted, classes, "macro_f1", 0) == (0.0, [0.0, 0.0])
    assert 0 < scores.min() <= scores.max() < 1


def _png_size(path):
    with Image.open(path) as picture:
        return picture.size


def test_a_large_confusion_matrix_draws_only_the_most_confused_classes(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.update({path.name: figure}))
    generator = np.random.default_rng(1)
    matrix = np.diag(generator.integers(1, 5, 300))
    matrix[7, 250] = 9  # the only mistakes: classes 7 and 250 must be among those drawn
    labels = [f"class_{index}" for index in range(300)]
    plots.confusion_matrix(matrix, labels, tmp_path / "all.png", normalised=True)
    axes = drawn["all.png"].axes[0]
    ticks = [tick.get_text() for tick in axes.get_yticklabels()]
    assert len(ticks) == plots.MAX_DRAWN_CLASSES and {"class_7", "class_250"} <= set(ticks)
    assert axes.images[0].get_array().shape == (plots.MAX_DRAWN_CLASSES, plots.MAX_DRAWN_CLASSES)
    assert "most confused of 300 classes" in axes.get_title()
    outcomes = pd.DataFrame({"label": labels, "true_positives": 1, "false_negatives": 0, "false_positives": 0,
                             "true_negatives": 5})
    outcomes.loc[250, "false_negatives"] = 3
    plots.label_outcomes(outcomes, tmp_path / "labels.png", normalised=False)
    axes = drawn["labels.png"].axes[0]
    assert axes.images[0].get_array().shape[0] == plots.MAX_DRAWN_CLASSES
    assert "class_250" in {tick.get_text() for tick in axes.get_yticklabels()}


def test_evaluate_with_many_classes_writes_bounded_files_and_spreadsheet_safe_csv(tmp_path, monkeypatch):
    classes, images = 1500, 3000
    labels = ["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)"] + [f"class_{index}" for index in range(4, classes)]
    generator = np.random.default_rng(2)
    true_index = generator.integers(0, classes, images)
    true_index[:4] = [0, 1, 2, 3]
    predicted = np.where(generator.random(images) < 0.8, true_index, generator.integers(0, classes, images))
    probabilities = np.full((images, classes), 0.1 / classes)
    probabilities[np.arange(images), predicted] = 0.9
    predictions = pd.DataFrame({"path": [f"{labels[index]}/{row}.png" for row, index in enumerate(true_index)],
                                "label_index": true_index, "probabilities": list(probabilities)})
    info = SimpleNamespace(labels=tuple(labels), multi_label=False)
    monkeypatch.setattr(model_folder, "load", lambda folder: SimpleNamespace(input_shape=(None, 8, 8, 3)))
    monkeypatch.setattr(model_folder, "read_info", lambda folder: info)
    monkeypatch.setattr(model_folder, "read_history", lambda folder: pd.DataFrame())
    monkeypatch.setattr(evaluate, "test_predictions", lambda *args, **kwargs: predictions)
    monkeypatch.setattr(evaluate, "stored_thumbnails", lambda *args: lambda names: [None] * len(names))
    paths = Paths(PathsParams(), tmp_path)

    result = evaluate.run(EvaluateParams(), 0, 10**6, paths)

    assert len(result["per_class"]) == classes
    table = pd.read_csv(paths.evaluation / "confusion_matrix.csv", keep_default_na=False)
    assert list(table.columns) == ["actual", "predicted", "images"]  # the compact table: non-zero cells only
    assert table["images"].sum() == images and len(table) <= images
    assert (paths.evaluation / "confusion_matrix.csv").stat().st_size < 200_000
    for name in ("confusion_matrix.png", "confusion_matrix_normalised.png", "per_class.png"):
        width, height = _png_size(paths.evaluation / name)
        assert width * height < 8_000_000, (name, width, height)
    for name in ("test_predictions.csv", "confusion_matrix.csv", "per_class.csv"):
        text = (paths.evaluation / name).read_text(encoding="utf-8")
        cells = [cell.strip('"') for line in text.splitlines() for cell in line.split(",")]
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "@")], name
        assert not [cell for cell in cells if cell.startswith("-") and not cell[1:2].isdigit()], name
    per_class = pd.read_csv(paths.evaluation / "per_class.csv", keep_default_na=False)
    assert per_class["class"].head(4).tolist() == ["'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)"]
    exact = pd.read_parquet(paths.test_predictions)  # what the gate reads: labels and paths as they are
    assert exact["actual"].head(4).tolist() == labels[:4] and exact["path"].tolist() == predictions["path"].tolist()


@pytest.mark.parametrize("classes", [3, 100])
def test_a_small_confusion_matrix_csv_stays_square(classes):
    pairs = confusion.pair_counts(np.arange(classes), np.arange(classes))
    table = confusion.csv_table(pairs, [str(index) for index in range(classes)])
    assert table.shape == (classes, classes + 1)

