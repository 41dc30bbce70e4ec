"""Export stage: reads the candidate model (data/models/candidate/) and data/processed/, writes
data/models/candidate_exports/ (the exports of export.formats, the int8 ONNX model, engines.json, and checksums.json
naming the candidate version they were made from).

Apart from train, so that an edit to an export or an engine re-exports the model without training it again.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

from tasks import atomic, model_folder
from tasks.config import load_config
from tasks.export import build
from tasks.params import ExportParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

DEFAULT_INT8_CALIBRATION = 256
WEIGHTS_MEMBER = "model.weights.h5"  # in a .keras archive: the weights, float32 on disk
BYTES_PER_PARAMETER = 4


def int8_calibration(params: ExportParams, card: dict[str, Any]) -> int:
    """Training images that calibrate the int8 model: export.int8_calibration, or for auto 256, but none for a
    pretrained EfficientNet-Lite (its int8 copies never reached the agreement the engines need: 0.92-0.97 on the
    clothing photos, benchmarks/BENCHMARKS.md), whose calibration and checks would cost a minute of CPU a run."""
    if params.int8_calibration != "auto":
        return int(params.int8_calibration)
    if card.get("backbone"):
        logger.info("export: no int8 model for %s (export.int8_calibration auto): its int8 copies agree with it on "
                    "too few images to be used; set a number of calibration images to write one anyway",
                    card["backbone"]["name"])
        return 0
    return DEFAULT_INT8_CALIBRATION


def parameters(model: Path) -> int:
    """About how many parameters the model in `model` has, from the size of its weights (without loading it)."""
    try:
        with zipfile.ZipFile(model / model_folder.MODEL_FILE) as archive:
            return archive.getinfo(WEIGHTS_MEMBER).file_size // BYTES_PER_PARAMETER
    except (OSError, KeyError, zipfile.BadZipFile):
        return 0  # model_folder.load names what is wrong with the file


def run(params: ExportParams, seed: int, paths: Paths) -> Path:
    """Export the candidate and hold each engine to its Keras model; replaces data/models/candidate_exports/ whole."""
    info = model_folder.read_info(paths.candidate)
    calibration = int8_calibration(params, model_folder.read_card(paths.candidate))
    formats = list(params.formats)
    large = parameters(paths.candidate) > build.FRESH_PROCESS_PARAMETERS
    write = build.build_in_fresh_process if large else build.build
    with atomic.atomic_directory(paths.candidate_exports) as building:
        write(paths.candidate, building, formats, paths.processed, calibration, seed)
    logger.info("export: wrote %s of model %s to %s", ", ".join(formats) or "no exports", info.version,
                paths.candidate_exports)
    return paths.candidate_exports


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.export, config.base.seed, paths)
