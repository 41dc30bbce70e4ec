"""Fixtures of the bulk classification tests: untrained model folders with chosen labels, a run split at its seams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tasks import model_folder
from tasks.predict import classify, store

IMAGE_SIZE = 16


def save_model(folder: Path, labels: list[str], resize: str = "crop", seed: int = 7) -> Path:
    """An untrained simple_cnn saved as training does (model, labels, card); with one label, every image gets it."""
    import keras

    from tasks import networks

    keras.utils.set_random_seed(seed)
    network = networks.simple_cnn(IMAGE_SIZE, len(labels), depth=2, width=4, dropout=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    model_folder.write(folder, network, labels, {"image_size": IMAGE_SIZE, "resize": resize}, pd.DataFrame())
    return folder


@pytest.fixture(scope="session")
def one_label_model(tmp_path_factory) -> Callable[[str], Path]:
    """A model folder that labels every image `label` (made once per label)."""
    made: dict[str, Path] = {}

    def make(label: str) -> Path:
        if label not in made:
            made[label] = save_model(tmp_path_factory.mktemp("model"), [label])
        return made[label]

    return make


def options(**changes) -> classify.PredictOptions:
    return classify.PredictOptions(**{"top_k": 1, "batch_size": 4, "chunk_size": 8} | changes)


def run_with_a_change_after_the_walk(source: Path, out: Path, model: Path, change: Callable[[], None],
                                     predict_options: classify.PredictOptions | None = None) -> classify.PredictSummary:
    """classify.run with `change()` made between the walk (prepare) and the reading of the files."""
    with store.locked(store.state_folder(out.resolve())):
        plan = classify.prepare(source, out, model, predict_options or options())
        change()
        counts = classify.classify_chunks(plan, list(plan.pending))
        return classify.finish(plan, counts, 0.0)
