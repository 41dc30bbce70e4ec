"""Runs saved models on stored test images: the production model's probabilities for the gate, and every export
and faster engine of the candidate against its .keras model (the "export parity" check, on the candidate joined with
its exports from the export stage); reads the model folders and the raw store, writes only a temporary joined copy
(hard links) that it removes."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks import export_folder, model_folder, pool, stored_images
from tasks.params import GateParams
from tasks.engines import engine, engine_check
from tasks.release.gate_record import check_record

PARITY_BATCH = 64
PREDICT_BATCH = 256


def _decode_stored(info: model_folder.ModelInfo, images: list[stored_images.Job], raw: Path,
                   max_pixels: int) -> Iterator[np.ndarray]:
    """The pixels of stored images as a model saw them in training (its card's size and resize policy)."""
    return pool.ordered_map(stored_images.Decoder(raw, info.image_size, info.resize, max_pixels), images)


def batches(info: model_folder.ModelInfo, images: list[stored_images.Job], raw: Path, max_pixels: int,
            size: int) -> Iterator[np.ndarray]:
    """The decoded images in stacks of at most `size`, in order."""
    batch: list[np.ndarray] = []
    for pixels in _decode_stored(info, images, raw, max_pixels):
        batch.append(pixels)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def predict_stored(folder: Path, images: list[stored_images.Job], raw: Path, max_pixels: int) -> np.ndarray:
    """Class probabilities of a saved model for stored images, decoded at the model's own size and resize policy."""
    info = model_folder.read_info(folder)
    network = model_folder.load(folder)
    outputs = [np.asarray(network.predict_on_batch(batch))
               for batch in batches(info, images, raw, max_pixels, PREDICT_BATCH)]
    return np.concatenate(outputs) if outputs else np.zeros((0, len(info.labels)))


def _export_runner(folder: Path, name: str, classes: int) -> Any:
    """What runs export `name` for its check: the first installed of its registry entry's `checked_by`
    (tasks/model_folder.py EXPORTS): an engine at fp32 (ONNX Runtime, else OpenVINO, for ONNX; OpenVINO for its IR),
    or a runner of its own (TensorFlow for the SavedModel and LiteRT)."""
    path = model_folder.export_path(folder, name)
    if not path.exists():
        raise ValueError(f"{path} is missing")
    checked_by = model_folder.EXPORTS[name].checked_by
    for runner in checked_by:
        if runner in engine.REGISTRY:
            if engine.is_installed(runner):
                module, cls = engine.REGISTRY[runner].runner.split(":")
                return getattr(importlib.import_module(module), cls)(path, "fp32", classes)
        else:
            module, cls = runner.split(":")
            return getattr(importlib.import_module(module), cls)(path, classes)
    wanted = " or ".join(engine.PACKAGES[runner] for runner in checked_by if runner in engine.REGISTRY)
    raise ValueError(f"no runtime to check {path} is installed (pip install {wanted})")


def export_parity(folder: Path, images: list[stored_images.Job], raw: Path,
                  max_pixels: int) -> list[engine_check.Figures]:
    """Each export engines.json lists (export.formats; the model card's list in a folder promoted before the export
    stage), and each faster engine precision that engines.json lets `imgpipe predict --engine auto` use, against the
    .keras model on every test image. `folder` is a whole model folder: model.keras beside its exports."""
    from tasks.engines import keras_engine

    info = model_folder.read_info(folder)
    measured = model_folder.read_engines(folder) or {}
    listed = measured.get("exports", model_folder.read_card(folder).get("exports", [model_folder.SAVED_MODEL_FOLDER]))
    runners, figures = [], []
    for name in listed:
        try:
            runner = _export_runner(folder, name, len(info.labels))
            runner.name, runner.precision = name, "fp32"  # named as the export, whatever runs it
            runners.append(runner)
        except Exception as error:
            figures.append(engine_check.Figures(name, "fp32", error=f"{type(error).__name__}: {error}"))
    usable = [(row["engine"], row["precision"]) for row in measured.get("engines", [])
              if row["passed"] and row["precision"] != "fp32"
              and engine.unusable_reason(folder, row["engine"], row["precision"]) is None]
    opened, failed = engine_check.open_candidates(folder, usable)
    runners += opened
    figures += failed
    stacks = batches(info, images, raw, max_pixels, PARITY_BATCH)
    return engine_check.compare(keras_engine.KerasEngine(info), runners, stacks, 0, info.thresholds)[1:] + figures


def export_check(params: GateParams, folder: Path, exports: Path, images: list[stored_images.Job], raw: Path,
                 max_pixels: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The "export parity" check and the figures behind it: every export (fp32) within
    evaluate.gate.max_export_difference of the .keras model's probabilities, every faster precision that auto may
    use (bf16, int8) agreeing on the top-1 label of at least engine.MIN_AGREEMENT of the test images. The model in
    `folder` is checked with the exports in `exports` (the export stage's folder); exports missing, made from
    another model or damaged fail the check, naming what to run."""
    try:
        with export_folder.joined(folder, exports) as whole:
            figures = export_parity(whole, images, raw, max_pixels)
    except ValueError as error:  # no exports of this model, or a file not as the export stage wrote it
        return check_record("export parity", False, None, params.max_export_difference, str(error)), []
    failed = []
    for item in figures:
        if item.error:
            failed.append(item.detail())
        elif item.precision == "fp32" and item.max_difference > params.max_export_difference:
            failed.append(f"{item.engine}: largest probability difference {item.max_difference:.2e}, more than "
                          f"{params.max_export_difference} allowed (evaluate.gate.max_export_difference)")
        elif item.precision != "fp32" and not item.passed():
            failed.append(f"{item.engine} {item.precision}: {item.agreement_of} agreement {item.agreement:.4f}, "
                          f"under the {engine.MIN_AGREEMENT} that the auto engine needs (engines.json says it had it)")
    exports = [item for item in figures if item.precision == "fp32" and not item.error]
    largest = max((item.max_difference for item in exports), default=0.0)
    images = max((item.images for item in figures), default=0)
    names = ", ".join(f"{item.engine}" if item.precision == "fp32" else f"{item.engine} {item.precision}"
                      for item in figures)
    detail = ("; ".join(failed) if failed else
              f"{names} agree with the .keras model on {images} test images (largest fp32 probability difference "
              f"{largest:.2e}, at most {params.max_export_difference} allowed)")
    check = check_record("export parity", not failed, largest, params.max_export_difference, detail)
    return check, [item.as_record() for item in figures]
