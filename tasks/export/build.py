"""Builds one export folder: reads a model folder and data/processed/, writes the exports, the int8 ONNX model
calibrated on training images and engines.json (each engine and precision held to Keras on the test split) into an
empty folder, sealed with the version id of the model they were made from (tasks/export_folder.py).

The stage calls build() in its own process for small models and `python -m tasks.export.build MODEL FOLDER ...` for
large ones: converting a large model in a process that already holds TensorFlow's memory can run out of it (ResNet50
needed more than 24 GB in the process that trained it, 6.4 GB in a fresh process).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tasks import export_folder, model_checksums, model_folder
from tasks.export import convert

logger = logging.getLogger(__name__)

# models with more parameters are exported in a fresh process (ResNet50, 25 million, ran out of memory in-process;
# EfficientNet-Lite2's 6 million export in-process, which saves the fresh process's TensorFlow start)
FRESH_PROCESS_PARAMETERS = 10_000_000
# engines.json is measured on the first test images up to this many: enough to tell which engines agree with Keras
# (the gate then holds the ones --engine auto may use to it on every test image), without paying every engine on
# every test image each run
ENGINE_CHECK_IMAGES = 256
BAD_SETTING = 3  # the exit status of the fresh process for a ValueError (a setting to change), its message last


def _images(processed: Path, split: str, image_size: int, limit: int | None, seed: int,
            multi_label: bool) -> Iterator[np.ndarray]:
    """Batches of uint8 images of a split, up to `limit` of them: the test split in order, or shuffled training
    images."""
    from tasks import training_batches

    training = split == "train"
    batches = training_batches.split_dataset(processed, split, image_size, 64, training=training, seed=seed,
                                             multi_label=multi_label)
    taken = 0
    for images, _ in batches:
        pixels = images.numpy()
        if limit is not None:
            pixels = pixels[:limit - taken]
        taken += len(pixels)
        yield pixels
        if limit is not None and taken >= limit:
            return


def build(model: Path, folder: Path, formats: list[str], processed: Path, calibration_images: int,
          seed: int) -> None:
    """Into `folder` (empty): the exports of the model in `model`, the int8 model calibrated on training images
    (shuffled, not augmented), and engines.json from the test split, sealed as made from that model."""
    from tasks.engines import engine_check

    # the converters' own chatter: TensorFlow's "Assets written to" and its warning about a table initializer that
    # it calls "probably safe to ignore" (its errors still show), tf2onnx's opset and optimizer lines
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "tensorflow" else logging.WARNING)
    info = model_folder.read_info(model)
    image_size, multi_label = info.image_size, info.multi_label
    calibration = None
    if calibration_images and "onnx" in formats:
        calibration = np.concatenate(list(_images(processed, "train", image_size, calibration_images, seed,
                                                  multi_label)))
    convert.write_exports(model, folder, formats, calibration)
    model_checksums.seal(folder, info.version, complete=False)  # engines.json comes last
    with export_folder.joined(model, folder) as whole:  # the engines run a model folder: model.keras beside them
        record = engine_check.measure_engines(whole, _images(processed, "test", image_size, ENGINE_CHECK_IMAGES,
                                                             seed, multi_label))
    # `exports`: what the gate's export parity holds to model.keras (each fp32 export)
    export_folder.write_engines(folder, info.version, {**record, "exports": list(formats)})


def build_in_fresh_process(model: Path, folder: Path, formats: list[str], processed: Path, calibration_images: int,
                           seed: int) -> None:
    command = [sys.executable, "-m", "tasks.export.build", str(model), str(folder), "--processed", str(processed),
               "--calibration-images", str(calibration_images), "--seed", str(seed), "--formats", *formats]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                              os.environ.get("PYTHONPATH")])))
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        # ONNX Runtime's quantizer logs a line per rescaled weight through the root logger: its routine, left out
        if line.startswith(("INFO", "WARNING")) and not line.startswith("INFO root: Increased scale"):
            logger.info("(export process) %s", line)
    if result.returncode == BAD_SETTING:
        raise ValueError(result.stderr.strip().splitlines()[-1].removeprefix("ERROR "))
    if result.returncode != 0:
        raise RuntimeError(f"exporting {model} in a fresh process failed:\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a model's exports, int8 model and engines.json into a folder.")
    parser.add_argument("model", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--processed", type=Path, required=True)
    parser.add_argument("--calibration-images", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="*", default=[])
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        build(arguments.model, arguments.folder, arguments.formats, arguments.processed, arguments.calibration_images,
              arguments.seed)
    except ValueError as error:
        sys.stderr.write(f"ERROR {error}\n")
        sys.exit(BAD_SETTING)


if __name__ == "__main__":
    main()
