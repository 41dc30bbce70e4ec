"""Data drift benchmark (issue 24 item 3): what the health stage's drift shift (tasks/health/drift.py) reads on the
clothing photos (../shared/datasets/clothing-dataset-small, 713 JPEGs in 10 classes) for new images that did not
move and for ones that did, so that health.drift_warning has a default that means something.

The photos of both published folders, plus darkened (brightness 45%) and greyscale copies of the `test` folder, go
through ingest, preprocess and embed (a label table names each file's class); then, on their features:
- no drift: the photos split at random into earlier and new images, N new per class (200 draws per N): how often a
  class's shift passes 0.5, and its 99th percentile and largest value;
- the published `validation` folder against its `test` folder, and `test` against its darkened and greyscale copies;
- a class's new images taken from a neighbouring class (t-shirts filed as shirts, pants as shorts, shoes as hats).

    .venv/bin/python benchmarks/drift.py [--model efficientnet_lite2]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

from tasks import embedding_store, processed_store  # noqa: E402
from tasks.config import load_config  # noqa: E402
from tasks.embed import stage as embed  # noqa: E402
from tasks.health import drift, features  # noqa: E402
from tasks.ingest import stage as ingest  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.preprocess import stage as preprocess  # noqa: E402

THRESHOLD = 0.5
SWAPS = (("t-shirt", "shirt"), ("pants", "shorts"), ("shoes", "hat"))  # (the images of, filed as)


def gather_source(target: Path) -> Path:
    """validation/ and test/ as published, dark/ and gray/ copies of test/; labels.csv beside it names each file's
    class."""
    rows = []
    for path in sorted(machine.PHOTOS.glob("*/*/*.jpg")):
        folder, label = path.parent.parent.name, path.parent.name
        copies = {folder: Image.open(path).convert("RGB")}
        if folder == "test":
            copies["dark"] = ImageEnhance.Brightness(copies[folder]).enhance(0.45)
            copies["gray"] = ImageOps.grayscale(copies[folder]).convert("RGB")
        for name, picture in copies.items():
            (target / name / label).mkdir(parents=True, exist_ok=True)
            picture.save(target / name / label / path.name, quality=90)
            rows.append((f"{name}/{label}/{path.name}", label))
    with open(target.parent / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])
    return target


def embedded(scratch: Path, model: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(path, label, sha256 and folder of every image, their unit features)."""
    source = gather_source(scratch / "source")
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
        "ingest.source": str(source), "ingest.labels": f"csv:{source.parent / 'labels.csv'}", "train.model": model})
    paths = Paths(config.paths, scratch / "project")
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model,
                   config.train.weights)
    embed.run(config.embed, config.ingest.max_pixels, paths)
    table = processed_store.read_table(paths.processed, ["path", "label", "sha256"])
    table["folder"] = table["path"].str.split("/").str[0]
    unit = features.normalised(embedding_store.read_features(paths.embeddings, table["sha256"].tolist()))
    return table, unit


class Scenarios:
    def __init__(self, table: pd.DataFrame, unit: np.ndarray) -> None:
        self.table, self.unit = table, unit
        self.labels = sorted(table["label"].unique())
        self.index = table["label"].map({label: index for index, label in enumerate(self.labels)}).to_numpy()

    def run(self, earlier: np.ndarray, new: np.ndarray, filed_as: str | None = None) -> dict:
        """drift.json's figures for the images `new` (a mask) against `earlier` (a mask)."""
        index = self.index.copy()
        if filed_as is not None:
            index[new] = self.labels.index(filed_as)
        before, both = np.flatnonzero(earlier), np.flatnonzero(earlier | new)
        sha256s = self.table["sha256"].to_numpy()
        reference = drift.summarise(self.unit[before], drift.class_rows(None, index[before], self.labels, False),
                                    self.labels, sha256s[before].tolist(), "features")
        rows = drift.class_rows(None, index[both], self.labels, False)
        measured = drift.measure(reference, self.unit[both], rows, self.labels, sha256s[both].tolist())
        return drift.judge(measured, THRESHOLD)

    def folder(self, name: str) -> np.ndarray:
        return (self.table["folder"] == name).to_numpy()

    def label(self, name: str) -> np.ndarray:
        return (self.table["label"] == name).to_numpy()


def no_drift(scenarios: Scenarios, per_class: int, draws: int, generator: np.random.Generator) -> np.ndarray:
    """Every class's shift over `draws` random splits of the published photos with `per_class` new per class."""
    published = scenarios.folder("validation") | scenarios.folder("test")
    shifts = []
    for _ in range(draws):
        new = np.zeros(len(published), dtype=bool)
        for label in scenarios.labels:
            members = generator.permutation(np.flatnonzero(published & scenarios.label(label)))
            new[members[:min(per_class, len(members) // 3)]] = True
        shifts += [row["shift"] for row in scenarios.run(published & ~new, new)["classes"]]
    return np.asarray(shifts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite2", help="the backbone (train.model)")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    if not machine.PHOTOS.is_dir():
        print(f"skipped: {machine.PHOTOS} is not here")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        table, unit = embedded(Path(scratch), arguments.model)
    scenarios = Scenarios(table, unit)
    generator = np.random.default_rng(arguments.seed)
    print(f"{arguments.model}: {len(table)} images, {unit.shape[1]} features; threshold {THRESHOLD}")
    print("| new per class | P(class shift > 0.5) | 99th percentile | largest |\n|---:|---:|---:|---:|")
    for per_class in (1, 3, 5, 10, 20):
        shifts = no_drift(scenarios, per_class, arguments.draws, generator)
        print(f"| {per_class} | {np.mean(shifts > THRESHOLD):.1%} | {np.quantile(shifts, 0.99):.2f} | "
              f"{shifts.max():.2f} |")
    print("\n| earlier images | new images | overall | largest class | warns |\n|---|---|---:|---|---|")
    cases = [("validation", "test", None), ("test", "dark", None), ("test", "gray", None)]
    for earlier, new, _ in cases:
        found = scenarios.run(scenarios.folder(earlier), scenarios.folder(new))
        print(f"| {earlier} | {new} | {found['overall']:.2f} | {found['largest']['class']} "
              f"{found['largest']['shift']:.2f} | {', '.join(found['shifted']) or 'no'} |")
    for images_of, filed_as in SWAPS:
        found = scenarios.run(scenarios.folder("validation"), scenarios.folder("test") & scenarios.label(images_of),
                              filed_as=filed_as)
        print(f"| validation | test {images_of} filed as {filed_as} | {found['overall']:.2f} | "
              f"{found['largest']['class']} {found['largest']['shift']:.2f} | {', '.join(found['shifted']) or 'no'} |")
    print(f"\nmachine: {machine.cpu_model()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
