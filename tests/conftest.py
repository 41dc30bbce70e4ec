"""Shared fixtures: tiny generated image folders, a shrunken real config, one Prefect test server per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tasks.config import load_config  # noqa: E402
from tasks.params import Config  # noqa: E402
from tasks.paths import Paths  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# `make test-fast` (the inner loop) leaves these out: whole pipelines through Prefect and DVC, and the modules that
# train or export models; `make test` (and CI) runs everything
SLOW_TESTS = ("tests/flows/", "tests/train/test_stage.py", "tests/train/test_model.py", "tests/train/test_balance.py",
              "tests/train/test_features_route.py", "tests/export/test_stage.py", "tests/release/test_gate.py",
              "tests/predict/test_classify.py", "tests/evaluate/test_stage.py", "tests/embed/test_stage.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests `slow` (pyproject.toml declares the marker; `-m "not slow"` leaves them out)."""
    for item in items:
        relative = Path(os.path.relpath(Path(item.fspath).resolve(), PROJECT_ROOT)).as_posix()
        if relative.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
CLASS_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 210)}


def make_image(colour: tuple[int, int, int], seed: int, size: int = 20) -> Image.Image:
    """A noisy square of one colour with a bright dot somewhere: distinct per class, different per seed."""
    generator = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + generator.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    row, column = generator.integers(2, size - 4, 2)
    pixels[row:row + 3, column:column + 3] = 255
    return Image.fromarray(pixels, "RGB")


def make_photo(colour: tuple[int, int, int], seed: int, width: int = 48, height: int = 40) -> Image.Image:
    """make_image at photo size (the median short side over model_choice.SCAN_BELOW, so `train.model: auto` takes the
    pretrained backbone), not square."""
    generator = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + generator.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    row, column = generator.integers(2, min(width, height) - 6, 2)
    pixels[row:row + 5, column:column + 5] = 255
    return Image.fromarray(pixels, "RGB")


def write_class_folders(root: Path, per_class: int = 12, size: int = 20) -> Path:
    """3 classes x `per_class` small images, alternating PNG and JPEG."""
    for class_index, (label, colour) in enumerate(CLASS_COLOURS.items()):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = make_image(colour, seed=class_index * 1000 + index, size=size)
            suffix = "png" if index % 2 == 0 else "jpg"
            image.save(folder / f"{label}_{index:03d}.{suffix}")
    return root


def write_multi_label_source(root: Path, count: int = 60, size: int = 16, seed: int = 0) -> Path:
    """`count` images whose labels are the colour channels lifted in them (red, green, blue: each present with
    probability one half, at least one), and labels.csv (path, label) with several labels as "a;b"."""
    names = list(CLASS_COLOURS)  # red, green, blue: channels 0, 1, 2
    generator = np.random.default_rng(seed)
    rows = ["path,label"]
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        present = [name for name in names if generator.random() < 0.5] or [names[index % 3]]
        pixels = generator.normal(80, 20, (size, size, 3))
        for name in present:
            pixels[..., names.index(name)] += 120
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"image_{index:03d}.png")
        rows.append(f"image_{index:03d}.png,{';'.join(present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def save(image: Image.Image, path: Path, **options: Any) -> Path:
    """Save `image` at `path`, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def scene(size: int = 96, seed: int = 0) -> Image.Image:
    """A smooth picture of large colour patches: what a perceptual hash is made for."""
    patches = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(patches).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "source")


@pytest.fixture
def shrunk_config(tmp_path: Path, tiny_source: Path) -> tuple[Config, Paths]:
    """The project's real params.yaml, shrunk for tiny data, with every path under tmp_path."""
    return shrunk(tmp_path, tiny_source)


def shrunk(root: Path, source: Path) -> tuple[Config, Paths]:
    """shrunk_config's settings for a project at `root` reading `source` (for fixtures of a wider scope)."""
    config, _ = load_config(
        PROJECT_ROOT / "params.yaml",
        overrides={
            "ingest.source": str(source),
            "validate.min_images_per_class": 3,
            "preprocess.image_size": 16,
            "preprocess.val_fraction": 0.25,
            "preprocess.test_fraction": 0.25,
            "train.epochs": 2,
            "train.batch_size": 8,
            "train.width": 4,
            "train.depth": 2,
        },
    )
    return config, Paths(config.paths, root)


def trained_project(root: Path, **train_updates: Any) -> tuple[Config, Paths]:
    """A shrunk project at `root` (its source inside it) taken through ingest, preprocess and train: for a fixture of
    a module's scope, which each test then copies (project_copy)."""
    from tasks.ingest import stage as ingest
    from tasks.preprocess import stage as preprocess
    from tasks.train import stage as train

    config, paths = shrunk(root, write_class_folders(root / "source"))
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    train.run(config.train.model_copy(update=train_updates), config.preprocess.augment, config.base.seed, paths)
    return config, paths


def project_copy(built: Path, target: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, Paths]:
    """A copy of a project a wider fixture built, for one test to change as it likes (the files the stages exchange
    name each other by relative paths, so the copy stands alone); the test runs in it."""
    shutil.copytree(built, target, symlinks=True)
    monkeypatch.chdir(target)
    return shrunk(target, target / "source")


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite) for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session", autouse=True)
def imgpipe_cache(tmp_path_factory):
    """One imgpipe cache for the session, apart from the user's: the pretrained weights are converted once and the
    features model exported once per size (the tests of the cache itself take folders of their own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGPIPE_CACHE", str(tmp_path_factory.mktemp("imgpipe-cache")))
        yield
