"""The real training flow (Prefect, DVC, TensorFlow, Great Expectations) on photo-sized images: `train.model: auto`
takes the pretrained backbone, the embed stage caches its features, the head trains on them, and a retrain after a few
new images computes only theirs.

The tests of this module share one copy of the repository and run in order.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.flows.test_end_to_end import NO_EXPORTS, _copy_repository, _environment_for, _set_params, _statuses

CLASSES = {"sky": (70, 130, 230), "grass": (60, 170, 60), "sand": (220, 190, 120)}


def _photo(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (56, 48)) -> Image.Image:
    """A noisy field of one colour with a few darker blobs: photo-sized (over 32 px), distinct per class."""
    generator = np.random.default_rng(seed)
    width, height = size
    pixels = np.array(colour, dtype=np.float64) + generator.normal(0, 18, (height, width, 3))
    for _ in range(3):
        row, column = generator.integers(4, height - 12), generator.integers(4, width - 12)
        pixels[row:row + 8, column:column + 8] *= 0.6
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _write_photos(root: Path, per_class: int, first_seed: int = 0) -> list[Path]:
    written = []
    for class_index, (label, colour) in enumerate(CLASSES.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(first_seed, first_seed + per_class):
            path = root / label / f"{label}_{index:03d}.jpg"
            _photo(colour, seed=class_index * 1000 + index).save(path, quality=90)
            written.append(path)
    return written


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = _copy_repository(tmp_path_factory.mktemp("imgpipe-photos"))
    source = tmp_path_factory.mktemp("photos")
    _write_photos(source, per_class=20)
    # the defaults (train.model auto), at a small image size so the backbone runs fast on a CPU
    _set_params(repo, {"ingest.source": str(source), "preprocess.image_size": 64,
                       "evaluate.gate.min_accuracy": 0.5, "evaluate.gate.min_macro_f1": 0.4, **NO_EXPORTS})
    return repo


def _embeddings(repo: Path) -> dict:
    return json.loads((repo / "data/embeddings/embeddings.json").read_text())


def test_auto_takes_the_pretrained_backbone_and_trains_a_head_on_cached_features(repo, prefect_server):
    from flows.training import training

    first = training(repo=str(repo), push=False)
    assert list(_statuses(first)) == ["demo", "ingest", "validate", "preprocess", "embed", "health", "train",
                                      "export", "evaluate"]
    assert _statuses(first)["embed"] == "ran" and first["outcome"] == "Promoted"
    card = json.loads((repo / "data/models/candidate/model_card.json").read_text())
    assert card["model"] == "efficientnet_lite2" and card["model_choice"]["route"] == "head_on_features"
    assert "photos" in card["model_choice"]["reason"]
    assert card["backbone"]["frozen"] is True and card["image_size"] == 64 and card["resize"] == "crop"
    # 13 training images per class (or a perfect head): no challenger is trained, the head alone is kept
    assert card["challengers"]["tried"] == [] and card["challengers"]["kept"] == "head"
    assert first["metrics"]["accuracy"] >= 0.8  # three distinct colours: ImageNet features tell them apart
    embeddings = _embeddings(repo)
    assert embeddings["images"] == 60 and len(embeddings["shard_records"]) == 1
    assert embeddings["engine"]["spec"]["engine"] in ("keras", "onnxruntime", "openvino")
    # no decoded pixels are kept for this route: the embed stage read the raw store itself
    assert not list((repo / "data/processed").glob("*.tfrecord"))


def test_new_images_cost_their_features_and_a_head_refit(repo, prefect_server):
    from flows.training import training

    shard = repo / "data/embeddings" / next(iter(_embeddings(repo)["shard_records"]))
    inode, modified = shard.stat().st_ino, shard.stat().st_mtime_ns
    source = Path(_read_source(repo))
    _write_photos(source, per_class=1, first_seed=500)  # 3 new photos: 5% more
    second = training(repo=str(repo), push=False, return_state=True)
    statuses = _statuses(second.result())
    assert {name for name, status in statuses.items() if status == "ran"} >= {"embed", "train", "evaluate"}
    embeddings = _embeddings(repo)
    assert embeddings["images"] == 63
    assert sorted(embeddings["shard_records"].values()) == [3, 60]  # only the new images were computed
    assert shard.stat().st_ino == inode and shard.stat().st_mtime_ns == modified  # the first shard untouched
    card = json.loads((repo / "data/models/candidate/model_card.json").read_text())
    assert card["backbone"]["frozen"] is True  # the backbone is not retrained unless asked

    third = training(repo=str(repo), push=False, return_state=True)
    assert third.name == "Nothing to do"
    assert _statuses(third.result())["embed"] == "skipped"


def test_predict_runs_the_promoted_pretrained_model(repo, prefect_server, tmp_path):
    folder = tmp_path / "incoming"
    _write_photos(folder, per_class=2, first_seed=900)
    table = tmp_path / "predictions.parquet"
    command = [str(Path(sys.executable).parent / "imgpipe"), "predict", str(folder), "--repo", str(repo),
               "--out", str(table)]
    result = subprocess.run(command, env=_environment_for(repo), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(table)
    assert len(rows) == 6 and set(rows["status"]) == {"ok"}
    assert (rows["path"].str.split("/").str[0] == rows["label"]).mean() >= 0.8


def _read_source(repo: Path) -> str:
    import yaml

    return yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["source"]
