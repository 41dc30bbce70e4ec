"""Finds and loads a model folder (model.keras, labels.json, model_card.json) for prediction; reads it, writes nothing."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tasks.hashing import file_sha256

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CARD_FILE = "model_card.json"
RESIZE_MODES = ("stretch", "crop", "pad")


@dataclass(frozen=True)
class ModelInfo:
    folder: Path
    labels: tuple[str, ...]
    image_size: int
    resize: str
    version: str  # first 12 hex digits of the sha256 of model.keras and labels.json


def default_folder(models_dir: Path | None = None) -> Path:
    """The production model if there is one, else the candidate (with a note in the log).

    `models_dir` defaults to the models folder of the imgpipe project in the current folder (params.yaml's
    paths.models), or ./data/models without one.
    """
    if models_dir is None:
        from tasks.config import load_config  # a light import, kept here: only this default needs the project

        try:
            models_dir = load_config()[1].models
        except ValueError:  # no params.yaml here
            models_dir = Path.cwd() / "data" / "models"
    production, candidate = models_dir / "production", models_dir / "candidate"
    if (production / MODEL_FILE).is_file():
        return production
    if (candidate / MODEL_FILE).is_file():
        logger.info("no production model in %s; using the candidate model %s", production, candidate)
        return candidate
    raise ValueError(f"{production}: no model found (nor in {candidate}); train one with `imgpipe run` "
                     "(or `dvc repro`), or pass --model FOLDER with model.keras, labels.json and model_card.json")


def model_version(folder: Path) -> str:
    """The first 12 hex digits of a hash of the weights file and the label list: what the rows were made with."""
    combined = "".join(file_sha256(folder / name) for name in (MODEL_FILE, LABELS_FILE))
    return hashlib.sha256(combined.encode()).hexdigest()[:12]


def read_info(folder: Path) -> ModelInfo:
    """Check a model folder and read what prediction needs from it, without loading the model."""
    folder = folder.expanduser().resolve()
    missing = [name for name in (MODEL_FILE, LABELS_FILE, CARD_FILE) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: not a model folder, {', '.join(missing)} missing; train one with `imgpipe run` "
                         "(it writes data/models/candidate/) or pass --model with a folder that has all three")
    try:
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{folder}: cannot read {LABELS_FILE} or {CARD_FILE}: {error}") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{folder / LABELS_FILE}: must be a JSON list of label names")
    image_size, resize = card.get("image_size"), card.get("resize")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"{folder / CARD_FILE}: image_size must be a positive integer, got {image_size!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"{folder / CARD_FILE}: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    return ModelInfo(folder, tuple(labels), image_size, resize, model_version(folder))


def limit_threads(threads: int) -> None:
    """Use at most `threads` TensorFlow threads in this process (0: all cores); only before TensorFlow starts."""
    if threads <= 0 or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already started in this process: the earlier setting stays
        logger.debug("TensorFlow already started; thread settings unchanged")


@functools.lru_cache(maxsize=2)
def _load(folder: Path, version: str) -> keras.Model:
    return keras.saving.load_model(folder / MODEL_FILE, safe_mode=True, compile=False)


def load(info: ModelInfo) -> keras.Model:
    """The Keras model of a folder, loaded once per process; refuses a model that changed since `info` was read."""
    if model_version(info.folder) != info.version:
        raise ValueError(f"{info.folder / MODEL_FILE}: the model changed during the run (version is no longer "
                         f"{info.version}); run again to classify with the new model")
    network = _load(info.folder, info.version)
    input_shape, output_shape = tuple(network.input_shape), tuple(network.output_shape)
    if input_shape[1:] != (info.image_size, info.image_size, 3) or output_shape[-1] != len(info.labels):
        raise ValueError(f"{info.folder}: model takes {input_shape} and gives {output_shape}, but {CARD_FILE} and "
                         f"{LABELS_FILE} say {info.image_size}x{info.image_size}x3 images and "
                         f"{len(info.labels)} labels")
    return network


def probabilities(network: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities (float32, one row per image) for a batch of uint8 images."""
    if len(pixels) == 0:
        return np.zeros((0, int(network.output_shape[-1])), dtype=np.float32)
    return np.asarray(network.predict_on_batch(pixels), dtype=np.float32)
