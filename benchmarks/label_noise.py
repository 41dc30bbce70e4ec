"""Data health benchmark (issue 24): the health stage on the clothing photos (../shared/datasets/clothing-dataset-small,
713 JPEGs in 10 classes, both published folders), embedded with imgpipe's default backbone (EfficientNet-Lite2, its
installed ImageNet weights: no network), against the stages that come before it in the same run.

- Label errors: 5% of the labels flipped to another class at random (seeded); the top-N of the label-issue ranking
  (N = the number flipped) must hold >= 60% of the flipped images. On the clean labels, fewer than 3% of the images
  may be flagged.
- Cost: the health stage's CPU seconds must be <= 15% of the run's; here compared with ingest + preprocess + embed
  alone (the run without validate, train and evaluate), so the share of a whole run is smaller still.
- --scale N: the fits and comparisons at N generated images of 1280 features (the per-run cost beyond reading
  features), timed alone.

    .venv/bin/python benchmarks/label_noise.py [--seed 0] [--scale 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

import numpy as np  # noqa: E402

from tasks import embedding_store, processed_store  # noqa: E402
from tasks.config import load_config  # noqa: E402
from tasks.embed import stage as embed  # noqa: E402
from tasks.health import features, label_issues, semantic_duplicates  # noqa: E402
from tasks.health import stage as health  # noqa: E402
from tasks.ingest import stage as ingest  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.preprocess import stage as preprocess  # noqa: E402

FLIPPED_SHARE = 0.05
OUT = PROJECT_ROOT / "benchmarks" / "out"  # local scratch, ignored by git


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the decoding and embedding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def gather_source(target: Path) -> Path:
    """One folder per class holding the photos of both published folders."""
    for path in machine.PHOTOS.glob("*/*/*.jpg"):
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.parent.name / f"{path.parent.parent.name}_{path.name}")
    return target


def flipped_labels(labels: np.ndarray, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels with FLIPPED_SHARE of them moved to another class at random, the indices flipped)."""
    generator = np.random.default_rng(seed)
    flipped = np.sort(generator.choice(len(labels), size=round(FLIPPED_SHARE * len(labels)), replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + generator.integers(1, num_classes, size=len(flipped))) % num_classes
    return noisy, flipped


def photos(seed: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        source = gather_source(Path(scratch) / "source")
        # one worker each: the machine is shared (CPU seconds, the measure, hardly depend on it)
        config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
            "ingest.source": str(source), "ingest.workers": 1, "preprocess.workers": 1, "embed.workers": 1})
        paths = Paths(config.paths, Path(scratch) / "project")
        stages = {}
        for name, call in (
                ("ingest", lambda: ingest.run(config.ingest, paths)),
                ("preprocess", lambda: preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels,
                                                      paths, config.train.model, config.train.weights)),
                ("embed", lambda: embed.run(config.embed, config.ingest.max_pixels, paths)),
                ("health", lambda: health.run(config.health, config.base.seed, config.ingest.max_pixels, paths))):
            cpu, wall = cpu_seconds(), time.perf_counter()
            result = call()
            stages[name] = (cpu_seconds() - cpu, time.perf_counter() - wall)
            print(f"{name}: {stages[name][0]:.1f} CPU s, {stages[name][1]:.1f} s", flush=True)
        clean = result
        table = processed_store.read_table(paths.processed)
        labels = processed_store.read_labels(paths.processed)
        unit = features.normalised(embedding_store.read_features(paths.embeddings, table["sha256"].tolist()))
        truth = table["label_index"].to_numpy()
        OUT.mkdir(parents=True, exist_ok=True)  # kept for a look at other settings without embedding again
        np.savez(OUT / "clothing_features.npz", unit=unit, truth=truth, labels=np.asarray(labels))
        noisy, flipped = flipped_labels(truth, len(labels), seed)
        found = label_issues.find(unit, noisy, len(labels), config.health.folds, config.base.seed,
                                  config.health.max_fit_images)
        ranked = found.analysed[np.argsort(found.scores, kind="stable")]
        recall = len(set(ranked[:len(flipped)].tolist()) & set(flipped.tolist())) / len(flipped)
        flagged = found.analysed[found.issues & (found.suggested != noisy[found.analysed])]
        flagged_recall = len(set(flagged.tolist()) & set(flipped.tolist())) / len(flipped)
    clean_issues = clean["label_issues"]
    clean_share = clean_issues["issues"] / clean["images"]
    before = sum(stages[name][0] for name in ("ingest", "preprocess", "embed"))
    cost = stages["health"][0] / before
    print(f"\n{clean['images']} photos, {len(labels)} classes, {os.cpu_count()} CPU cores ({machine.cpu_model()}), "
          f"load average {os.getloadavg()[0]:.1f}; features: {clean['features']}")
    print("| measure | figure | target |\n|---|---|---|")
    print(f"| top-{len(flipped)} of the ranking holding flipped images ({len(flipped)} flipped, seed {seed}) | "
          f"{recall:.1%} | >= 60% |")
    print(f"| flipped images among those flagged (flagged {len(flagged)}) | {flagged_recall:.1%} | |")
    print(f"| estimated noise rate, flipped / clean | {found.noise_rate:.1%} / "
          f"{clean_issues['estimated_noise_rate']:.1%} | |")
    print(f"| clean labels: images flagged | {clean_issues['issues']} ({clean_share:.1%}) | < 3% |")
    print(f"| near-duplicate pairs (leaks), outliers on the clean set | {clean['near_duplicates']['pairs']} "
          f"({clean['near_duplicates']['leaks']}), {clean['outliers']['outliers']} | |")
    print(f"| CPU s: ingest / preprocess / embed / health | " + " / ".join(
        f"{stages[name][0]:.1f}" for name in ("ingest", "preprocess", "embed", "health")) + " | |")
    print(f"| health's CPU against ingest + preprocess + embed | {cost:.1%} | <= 15% |")
    met = recall >= 0.6 and clean_share < 0.03 and cost <= 0.15
    print(f"\ntargets {'met' if met else 'MISSED'}")
    return 0 if met else 1


def scale(count: int, seed: int) -> int:
    """The fits and the comparisons on `count` generated images of 1280 features in 10 classes."""
    config, _ = load_config(PROJECT_ROOT / "params.yaml")
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 10, size=count)
    centres = generator.normal(size=(10, 1280)).astype(np.float32)
    unit = features.normalised(centres[labels] + 2 * generator.normal(size=(count, 1280)).astype(np.float32))
    for name, call in (
            ("label check (k-fold fit, cleanlab)",
             lambda: label_issues.find(unit, labels, 10, config.health.folds, 0, config.health.max_fit_images)),
            ("near-duplicates (blocked cosine)", lambda: semantic_duplicates.pairs(unit, config.health.duplicate_cosine))):
        cpu, wall = time.process_time(), time.perf_counter()
        call()
        print(f"| {count:,} images | {name} | {time.process_time() - cpu:.1f} CPU s | {time.perf_counter() - wall:.1f} s |",
              flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="which labels are flipped")
    parser.add_argument("--scale", type=int, metavar="N", help="time the fits and comparisons at N generated images")
    arguments = parser.parse_args()
    if arguments.scale:
        return scale(arguments.scale, arguments.seed)
    if not machine.PHOTOS.is_dir():
        print(f"{machine.PHOTOS}: not found; this benchmark needs the clothing photos")
        return 2
    return photos(arguments.seed)


if __name__ == "__main__":
    sys.exit(main())
