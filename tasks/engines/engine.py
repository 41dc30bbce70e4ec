"""Chooses and opens the engine that runs a model folder on batches of uint8 images; reads the folder, writes nothing.

Engines: `keras` (model.keras through Keras/TensorFlow), `onnxruntime` (model.onnx, or model.int8.onnx) and
`openvino` (openvino/model.xml or model.onnx at fp32 or bf16, model.int8.onnx at int8). `auto` takes the fastest
engine and precision that the export stage measured on the test split (engines.json in the model folder) and that passed
parity there: fp32 within MAX_FP32_DIFFERENCE of Keras's probabilities (softmax, or a multi-label model's
sigmoids), bf16 and int8 agreeing on the top-1 label (a multi-label model: on the label set at its thresholds)
of at least MIN_AGREEMENT of the images. Nothing is assumed: a folder without engines.json runs on Keras.
What runs is what train and the export stage wrote: model.keras by the version id, an export and engines.json by the folder's
checksums.json (hashed once when the engine is opened), and a folder without checksums runs only model.keras.
The heavy libraries are imported only by the engine that is opened.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks import model_checksums, model_folder
from tasks.cpu import limit_tensorflow_threads as limit_threads
from tasks.cpu import supports_bf16
from tasks.config import ArgumentError
from tasks.engines.names import AUTO, ENGINES, PRECISIONS, REGISTRY

logger = logging.getLogger(__name__)


def _file_name(name: str) -> str:
    """A registry file name ("keras", an export.formats name, "int8") as its path in a model folder."""
    return model_folder.MODEL_FILE if name == "keras" else model_folder.export_path(Path(), name).as_posix()


# ENGINES, PRECISIONS and each engine's runner, package and files: tasks/engines/names.py (the registry; the command
# line reads it without importing this). Derived here: engine -> precision -> the file in the model folder it runs
# (tried in order), and engine -> the package it needs.
FILES: dict[str, dict[str, tuple[str, ...]]] = {
    engine: {precision: tuple(_file_name(name) for name in names) for precision, names in entry.files.items()}
    for engine, entry in REGISTRY.items()}
PACKAGES = {engine: entry.package for engine, entry in REGISTRY.items()}
# a precision asked for that engines.json never measured: the engines tried for it, the latest registered first
FALLBACK_ORDER = tuple(reversed([engine for engine in ENGINES if engine != "keras"]))
MIN_AGREEMENT = 0.99  # bf16 and int8: top-1 agreement with Keras on the test split
MAX_FP32_DIFFERENCE = 1e-4  # fp32: largest probability difference from Keras on the test split


class Engine(Protocol):
    name: str
    precision: str

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, one row per image) for a batch of uint8 images."""


def is_installed(engine: str) -> bool:
    return importlib.util.find_spec(PACKAGES[engine]) is not None


def model_file(folder: Path, engine: str, precision: str) -> Path | None:
    """The file `engine` runs at `precision` from this model folder; None when the folder has none."""
    for name in FILES[engine].get(precision, ()):
        if (folder / name).is_file():
            return folder / name
    return None


def unusable_reason(folder: Path, engine: str, precision: str) -> str | None:
    """Why `engine` cannot run this model at `precision` on this machine; None when it can."""
    if precision not in FILES[engine]:
        return f"{engine} has no {precision} mode (it runs {', '.join(FILES[engine])})"
    if not is_installed(engine):
        return f"{engine} is not installed (pip install {PACKAGES[engine]})"
    if precision == "bf16" and not supports_bf16():
        return "this CPU has no native bf16 (avx512_bf16 or amx_bf16)"
    if model_file(folder, engine, precision) is None:
        wanted = " or ".join(FILES[engine][precision])
        return (f"{folder} has no {wanted} (the export stage writes it: export.formats, export.int8_calibration; "
                "promotion puts it beside model.keras in production, never in the candidate folder)")
    if engine != "keras" and not model_checksums.exists(folder):
        return (f"{folder} has no {model_checksums.CHECKSUMS_FILE}, so its exports cannot be checked against the "
                "model (retrain it to record them; model.keras, which the version id covers, runs on `engine` keras)")
    return None


def _measured(folder: Path) -> list[dict[str, Any]]:
    record = model_folder.read_engines(folder)
    return [] if record is None else list(record["engines"])


def chosen_sentence(row: dict[str, Any], engine: str, precision: str) -> str:
    """Why this engine and precision run: which of them was asked and which chosen among those that passed parity;
    for int8, that it is a rounded copy and how to ask for full precision."""
    if engine == "auto" and precision == "auto":
        why = "the fastest that passed parity for this model"
    elif engine == "auto":
        why = f"precision {precision} as asked, on the fastest engine that passed parity with it"
    else:
        why = f"engine {engine} as asked, at its fastest precision that passed parity"
    sentence = (f"{row['engine']} {row['precision']}, {why} ({float(row['ms_per_image']):.2f} ms of CPU per image, "
                f"top-1 agreement with the Keras model {float(row['agreement']):.4f} on {row.get('images', 0)} test "
                "images)")
    if row["precision"] == "int8" and precision == "auto":
        sentence += ("; int8 is the model with its weights rounded to 8 bits: ask for `precision` fp32 to run it at "
                     "full precision")
    return sentence


def choose(folder: Path, engine: str = AUTO, precision: str = AUTO) -> tuple[str, str]:
    """The engine and precision to run: as asked, or for `auto` the fastest that passed parity and runs here."""
    if engine not in (AUTO, *ENGINES):
        raise ArgumentError(f"`engine` must be auto or one of {', '.join(ENGINES)}, got {engine!r}")
    if precision not in (AUTO, *PRECISIONS):
        raise ArgumentError(f"`precision` must be auto or one of {', '.join(PRECISIONS)}, got {precision!r}")
    measured = _measured(folder)
    if engine != "auto" and precision != "auto":
        reason = unusable_reason(folder, engine, precision)
        if reason:
            raise ArgumentError(f"`engine` {engine} at `precision` {precision}: {reason}")
        failed = [row for row in measured if (row["engine"], row["precision"]) == (engine, precision)
                  and not row["passed"]]
        if failed:
            logger.warning("%s %s failed the parity check when the model was exported (%s); using it as asked",
                           engine, precision, failed[0].get("detail", ""))
        return engine, precision
    candidates = [row for row in measured if row["passed"] and row.get("ms_per_image") is not None
                  and engine in ("auto", row["engine"])
                  and precision in ("auto", row["precision"])
                  and unusable_reason(folder, row["engine"], row["precision"]) is None]
    if candidates:
        best = min(candidates, key=lambda row: float(row["ms_per_image"]))
        logger.info("engine: %s", chosen_sentence(best, engine, precision))
        return best["engine"], best["precision"]
    fallback = (engine if engine != "auto" else "keras", precision if precision != "auto" else "fp32")
    if fallback[1] != "fp32" and engine == "auto":  # a precision asked for, never measured: any engine with it
        fallback = next(((name, fallback[1]) for name in FALLBACK_ORDER
                         if unusable_reason(folder, name, fallback[1]) is None), fallback)
    reason = unusable_reason(folder, *fallback)
    if reason:
        raise ArgumentError(f"`engine` {engine} at `precision` {precision}: {reason}")
    logger.info("engine: %s %s (%s)", *fallback,
                "no engine measurement in the model folder" if not measured else "none measured passed or runs here")
    return fallback


def open_engine(info: model_folder.ModelInfo, engine: str, precision: str, threads: int = 0) -> Engine:
    """Load the model of `info` into `engine` at `precision` (as chosen by choose()); `threads` 0: all cores."""
    if engine == "keras":
        from tasks.engines import keras_engine

        limit_threads(threads)
        return keras_engine.KerasEngine(info)
    path = model_file(info.folder, engine, precision)
    reason = unusable_reason(info.folder, engine, precision)
    if reason or path is None:
        raise ArgumentError(f"`engine` {engine} at `precision` {precision}: {reason}")
    model_folder.check_unchanged(info)
    model_checksums.check_files(info.folder, [path.relative_to(info.folder).as_posix()], info.version, exports=True)
    module, runner = REGISTRY[engine].runner.split(":")  # imported only now: the heavy libraries with it
    return getattr(importlib.import_module(module), runner)(path, precision, len(info.labels), threads)
