"""Bulk prediction speed: reads the shared clothing photos (replicated), writes only under a temporary folder.

First trains the model with imgpipe's own stages on the photos (params.yaml's train section, `--model` and the image
size changed) and runs the export stage, which writes its exports and engines.json. Then, on the same files with that
model, in one run, images per second of
  (a) a plain loop: Pillow open, resize, model.predict per image,
  (b) keras.utils.image_dataset_from_directory + model.predict,
  (c) imgpipe predict (tasks.predict.run: walk, hash, decode on every core, predict, write the table) with
      --engine auto (what the export stage measured fastest among the engines that passed parity),
  (c') the same with --engine keras,
and the limits of this machine: decode-and-resize on every core (tasks/pool.py, the normalisation imgpipe uses),
and each engine's own predict rate on batches already decoded. Top-1 agreement of (c) with (c') (the engine alone)
and with (b) (engine and decoding) is printed for every file.
Targets: (c) >= 10x (a), >= 1.5x (b), >= 0.7x the smaller limit. Exits 1 if one is missed.

    .venv/bin/python benchmarks/predict.py [--model simple_cnn] [--image-size 64] [--copies 4] [--repeat 3]
    .venv/bin/python benchmarks/predict.py --model mobilenet_v3_small --image-size 128

Heavy imports stay inside functions: the decoding processes this script spawns import it again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

DATASET = machine.PHOTOS
MAX_PIXELS = 40_000_000


def replicate(target: Path, copies: int, photo_side: int) -> list[Path]:
    """`copies` copies of every photo, in folders copy<N>/<split>/<class>/ (real copies, not links).

    With `photo_side`, each photo is first enlarged to that longer side and saved again as a JPEG (quality 90),
    to see how the methods compare on camera-sized photos.
    """
    from PIL import Image

    photos = sorted(DATASET.rglob("*.jpg"))
    if not photos:
        raise SystemExit(f"{DATASET}: no JPEG photos found")
    files = []
    for photo in photos:
        first = target / "copy0" / photo.relative_to(DATASET)
        first.parent.mkdir(parents=True, exist_ok=True)
        if photo_side:
            with Image.open(photo) as image:
                scale = photo_side / max(image.size)
                image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                            Image.Resampling.BICUBIC).save(first, quality=90)
        else:
            shutil.copyfile(photo, first)
        files.append(first)
        for copy in range(1, copies):
            destination = target / f"copy{copy}" / photo.relative_to(DATASET)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first, destination)
            files.append(destination)
    for file in files:  # every method below reads from a warm page cache
        file.read_bytes()
    return sorted(files)


def train_model(workspace: Path, model_name: str, image_size: int, epochs: int | None) -> Path:
    """Train and export with imgpipe's stages on one copy of the photos: the candidate joined with its exports and
    engines.json, one model folder as promotion makes it."""
    import logging

    from tasks.config import load_config
    from tasks import export_folder
    from tasks.embed import stage as embed
    from tasks.export import stage as export
    from tasks.ingest import stage as ingest
    from tasks.paths import Paths
    from tasks.preprocess import stage as preprocess
    from tasks.train import stage as train

    source = workspace / "source"
    for path in DATASET.glob("*/*/*.jpg"):  # both published splits in one folder per class
        (source / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source / path.parent.name / f"{path.parent.parent.name}_{path.name}")
    overrides = {"ingest.source": str(source), "preprocess.image_size": image_size, "train.model": model_name}
    if epochs:
        overrides["train.epochs"] = epochs
    config, _ = load_config(Path(__file__).resolve().parent.parent / "params.yaml", overrides=overrides)
    paths = Paths(config.paths, workspace)
    logging.getLogger().setLevel(logging.WARNING)
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model,
                   config.train.weights)
    embed.run(config.embed, config.ingest.max_pixels, paths)
    train.run(config.train, config.preprocess.augment, config.base.seed, paths)
    export.run(config.export, config.base.seed, paths)
    whole = workspace / "model"  # the candidate joined with its exports, as promotion makes it
    whole.mkdir()
    export_folder.join(paths.candidate, paths.candidate_exports, whole)
    return whole


class Clock:
    """Wall time and CPU time (this process and its finished children, every thread) over a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exception: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu_seconds() - self.cpu

    def rates(self, images: int, cores: int) -> tuple[float, float]:
        """Images per second, and images per second on `cores` cores kept busy (images per CPU second x cores)."""
        return images / self.wall, images * cores / self.cpu


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_loop(files: list[Path], network, image_size: int, cores: int) -> tuple[float, float]:
    import numpy as np
    from PIL import Image

    with Clock() as clock:
        for file in files:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("RGB").resize((image_size, image_size)), dtype=np.uint8)
            network.predict(pixels[None], verbose=0)
    return clock.rates(len(files), cores)


def keras_dataset(root: Path, count: int, network, image_size: int, batch_size: int, cores: int,
                  labels: dict[str, int]) -> tuple[float, float]:
    """Fills `labels` with each file's predicted class index (path relative to `root`)."""
    import keras
    import tensorflow as tf

    with Clock() as clock:
        images = keras.utils.image_dataset_from_directory(root, labels=None, image_size=(image_size, image_size),
                                                          batch_size=batch_size, shuffle=False, verbose=False)
        file_paths = images.file_paths
        images = images.map(lambda batch: tf.cast(batch, tf.uint8), num_parallel_calls=tf.data.AUTOTUNE)
        probabilities = network.predict(images.prefetch(tf.data.AUTOTUNE), verbose=0)
    assert len(probabilities) == count, (len(probabilities), count)
    labels.update(zip((str(Path(path).relative_to(root)) for path in file_paths), probabilities.argmax(axis=1)))
    return clock.rates(count, cores)


def imgpipe_predict(root: Path, out: Path, model_folder: Path, count: int, batch_size: int, cores: int,
                    engine: str = "auto") -> tuple[float, float]:
    from tasks.predict import classify as predict

    with Clock() as clock:  # the whole command: walk, hash, start the decoders, load the model, write the table
        summary = predict.run(root, out, model_folder, predict.PredictOptions(batch_size=batch_size, engine=engine))
    assert summary.files == summary.ok == count, summary
    return clock.rates(count, cores)


def _decode(job: tuple[str, int]):
    from tasks import images

    started = time.process_time()
    pixels = images.load_rgb_array(Path(job[0]), job[1], "stretch", MAX_PIXELS)
    return pixels, time.process_time() - started


def decode_limit(files: list[Path], image_size: int, cores: int):
    """Decode and resize (images.load_rgb_array, as imgpipe does) on a warm process per core."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    jobs = [(str(file), image_size) for file in files]
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_decode, jobs[:cores * 4]))  # started and warm before timing
        started = time.perf_counter()
        results = list(pool.map(_decode, jobs, chunksize=32))
        wall = time.perf_counter() - started
    cpu = sum(seconds for _, seconds in results)
    return (len(files) / wall, len(files) * cores / cpu), np.stack([pixels for pixels, _ in results])


def predict_limit(pixels, runner, batch_size: int, cores: int) -> tuple[float, float]:
    """An engine's rate on decoded batches (tasks.engines.engine: Keras's predict_on_batch, or another)."""
    runner.probabilities(pixels[:batch_size])  # traced or compiled once before timing
    with Clock() as clock:
        for start in range(0, len(pixels), batch_size):
            runner.probabilities(pixels[start:start + batch_size])
    return clock.rates(len(pixels), cores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="simple_cnn", help="train.model (default simple_cnn)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=0, help="train.epochs (default: params.yaml's)")
    parser.add_argument("--copies", type=int, default=4, help="copies of the 713 photos (default 4: 2852 files)")
    parser.add_argument("--photo-side", type=int, default=0,
                        help="enlarge the photos to this longer side first (default 0: as they are, 400x534 or so)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--plain-files", type=int, default=300,
                        help="(a) runs once, on the first N files only: it is ~100x slower (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the other methods; the best is kept")
    arguments = parser.parse_args()

    import json

    import keras
    import numpy as np
    import pandas as pd

    from tasks import model_folder, pool
    from tasks.engines import engine as engines

    cores = pool.available_cores()
    work = Path(tempfile.mkdtemp(prefix="imgpipe-bench-predict-"))
    try:
        trained_at = time.perf_counter()
        model_dir = train_model(work / "training", arguments.model, arguments.image_size, arguments.train_epochs)
        trained_seconds = time.perf_counter() - trained_at
        card = model_folder.read_card(model_dir)
        measured = json.loads((model_dir / model_folder.ENGINES_FILE).read_text())["engines"]
        chosen = engines.choose(model_dir)
        info = model_folder.read_info(model_dir)
        network = model_folder.load(model_dir)
        keras_runner = engines.open_engine(info, "keras", "fp32")
        chosen_runner = engines.open_engine(info, *chosen)
        load_before = os.getloadavg()[0]
        root = work / "photos"
        files = replicate(root, arguments.copies, arguments.photo_side)
        size, batch, count = arguments.image_size, arguments.batch_size, len(files)
        rounds: dict[str, list[tuple[float, float]]] = {}
        keras_labels: dict[str, int] = {}
        for _ in range(arguments.repeat):  # rounds interleave the methods; each keeps its best round
            decode_rates, pixels = decode_limit(files, size, cores)
            rounds.setdefault("decode_limit", []).append(decode_rates)
            rounds.setdefault("predict_limit", []).append(predict_limit(pixels, chosen_runner, batch, cores))
            rounds.setdefault("keras_limit", []).append(predict_limit(pixels, keras_runner, batch, cores))
            del pixels
            for engine, out in (("auto", work / "auto.parquet"), ("keras", work / "keras.parquet")):
                out.unlink(missing_ok=True)
                rounds.setdefault(f"imgpipe_{engine}", []).append(
                    imgpipe_predict(root, out, model_dir, count, batch, cores, engine))
            rounds.setdefault("keras_dataset", []).append(
                keras_dataset(root, count, network, size, batch, cores, keras_labels))
        rounds["plain_loop"] = [plain_loop(files[:arguments.plain_files], network, size, cores)]
        auto_table, keras_table = (pd.read_parquet(work / name) for name in ("auto.parquet", "keras.parquet"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    labels = list(info.labels)
    engine_agreement = float((auto_table["label"].to_numpy() == keras_table["label"].to_numpy()).mean())
    dataset_labels = np.array([labels[keras_labels[path]] for path in auto_table["path"]])
    dataset_agreement = float((auto_table["label"].to_numpy() == dataset_labels).mean())
    photos = f"enlarged to {arguments.photo_side} px" if arguments.photo_side else "as they are"
    validation = card["validation"]
    print(f"\nbulk prediction: {count} JPEG files ({arguments.copies} copies of {DATASET.name}, {photos}), "
          f"{arguments.model} {size}px trained by imgpipe on the photos ({card['epochs_run']} epochs, "
          f"{trained_seconds:.0f} s; validation accuracy {validation['val_accuracy']:.3f}), batch {batch}, "
          f"Keras {keras.__version__} ({keras.backend.backend()})")
    print(f"machine: {cores} cores, {machine.cpu_model()}, bf16 {'yes' if engines.supports_bf16() else 'no'}; "
          f"load average {load_before:.1f} before, {load_after:.1f} after\n")
    print("  engines measured by the export stage on the test split (engines.json), CPU ms per image:")
    for row in sorted(measured, key=lambda row: row["ms_per_image"] or 1e9):
        print(f"    {row['engine'] + ' ' + row['precision']:<22}{row['ms_per_image'] or float('nan'):>8.3f}   "
              f"agreement {row['agreement']:.4f}   max difference {row['max_difference']:.1e}   "
              f"{'passed' if row['passed'] else 'FAILED parity'}")
    print(f"  --engine auto chose: {chosen[0]} {chosen[1]}")
    print(f"  top-1 agreement of (c) with (c') on every file: {engine_agreement:.4f}; with (b): {dataset_agreement:.4f}"
          f" (different decoding and resizing too)\n")
    names = {"plain_loop": f"(a) plain loop: Pillow + model.predict per image ({min(count, arguments.plain_files)})",
             "keras_dataset": "(b) image_dataset_from_directory + model.predict",
             "imgpipe_auto": f"(c) imgpipe predict, --engine auto ({chosen[0]} {chosen[1]})",
             "imgpipe_keras": "(c') imgpipe predict, --engine keras",
             "decode_limit": "limit: decode + resize on every core",
             "predict_limit": f"limit: {chosen[0]} {chosen[1]} on decoded batches",
             "keras_limit": "limit: Keras predict_on_batch on decoded batches"}
    failed = False
    for column, label in ((0, "images/s, wall clock (best round)"),
                          (1, f"images/s with {cores} cores busy (images per CPU second x {cores}; best round)")):
        rates = {key: max(rate[column] for rate in values) for key, values in rounds.items()}
        limit = min(rates["decode_limit"], rates["predict_limit"])
        # When the model runs on the cores that decode, no pipeline beats paying both costs in turn.
        shared_bound = 1 / (1 / rates["decode_limit"] + 1 / rates["predict_limit"])
        print(f"  {label}")
        for key, name in names.items():
            print(f"    {name:<58}{rates[key]:>8.0f}   rounds: "
                  + " / ".join(f"{rate[column]:.0f}" for rate in rounds[key]))
        print(f"    {'bound: decode + predict paid on the same cores':<58}{shared_bound:>8.0f}")
        for name, ratio, target in (("imgpipe / plain loop", rates["imgpipe_auto"] / rates["plain_loop"], 10),
                                    ("imgpipe / keras dataset", rates["imgpipe_auto"] / rates["keras_dataset"], 1.5),
                                    ("imgpipe / smaller limit", rates["imgpipe_auto"] / limit, 0.7)):
            failed |= ratio < target
            print(f"    {name:<30}{ratio:>7.2f}   target >= {target:<5}{'ok' if ratio >= target else 'MISSED'}")
        print(f"    {'imgpipe keras / keras dataset':<30}{rates['imgpipe_keras'] / rates['keras_dataset']:>7.2f}   "
              "(information)")
        print(f"    {'imgpipe / shared-core bound':<30}{rates['imgpipe_auto'] / shared_bound:>7.2f}   (information)\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
