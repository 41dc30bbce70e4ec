"""Holds engines and exports to the Keras model on the same batches: top-1 agreement, largest probability difference
and CPU time per image; reads the model folder, writes nothing (the export stage records the result in engines.json,
the gate in gate.json)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks import label_sets, model_folder
from tasks.engines import engine as engines

logger = logging.getLogger(__name__)

TIMING_BATCH = 64  # images per timed call: imgpipe predict's default batch size
TIMING_ROUNDS = 8  # timed calls per engine at most, taking turns, after one untimed warm-up call each
ENOUGH_TIMED_SECONDS = 1.5  # once every engine has been timed this long, more rounds change nothing


@dataclass
class Figures:
    """How one engine (or export) did against the Keras model."""

    engine: str
    precision: str
    images: int = 0
    agreeing: int = 0
    max_difference: float = 0.0
    cpu_seconds: float = 0.0
    timed_images: int = 0
    error: str = ""
    agreement_of: str = "top-1"  # or "label-set": a multi-label model's labels at its thresholds

    @property
    def agreement(self) -> float:
        return self.agreeing / self.images if self.images else 1.0

    @property
    def ms_per_image(self) -> float | None:
        return 1000 * self.cpu_seconds / self.timed_images if self.timed_images else None

    def passed(self) -> bool:
        """fp32 within MAX_FP32_DIFFERENCE of Keras's probabilities; bf16 and int8 agreeing on MIN_AGREEMENT."""
        if self.error:
            return False
        if self.precision == "fp32":
            return self.max_difference <= engines.MAX_FP32_DIFFERENCE
        return self.agreement >= engines.MIN_AGREEMENT

    def detail(self) -> str:
        if self.error:
            return f"{self.engine} {self.precision} failed: {self.error}"
        speed = f", {self.ms_per_image:.3f} ms of CPU per image" if self.ms_per_image is not None else ""
        return (f"{self.engine} {self.precision}: {self.agreement_of} agreement {self.agreement:.4f} on {self.images} "
                f"images, "
                f"largest probability difference {self.max_difference:.2e}{speed}")

    def as_record(self) -> dict[str, Any]:
        return {"engine": self.engine, "precision": self.precision, "images": self.images,
                "agreement": round(self.agreement, 6), "max_difference": float(self.max_difference),
                "ms_per_image": None if self.ms_per_image is None else round(self.ms_per_image, 4),
                "passed": self.passed(), "detail": self.detail()}


def compare(reference: engines.Engine, candidates: list[Any], batches: Iterable[np.ndarray],
            timing_rounds: int = 0, thresholds: tuple[float, ...] | None = None) -> list[Figures]:
    """Run the reference and each candidate on every batch; the reference's figures come first.

    Agreement is on the top-1 label, or with `thresholds` (a multi-label model) on the whole label set.

    An engine that raises is recorded as failed and not run again. With `timing_rounds`, each engine then runs
    that many times on one batch of TIMING_BATCH images (the first images, repeated as needed), the engines taking
    turns so that a busy machine weighs on them alike, after one untimed warm-up call each; CPU time counts every
    thread of this process, which is what an engine costs the machine.
    """
    runners = [reference, *candidates]
    agreement_of = "top-1" if thresholds is None else "label-set"
    figures = [Figures(runner.name, runner.precision, agreement_of=agreement_of) for runner in runners]
    first = None
    for pixels in batches:
        if len(pixels) == 0:
            continue
        first = pixels if first is None else first
        expected = None
        for runner, record in zip(runners, figures):
            if record.error:
                continue
            try:
                probabilities = runner.probabilities(pixels)
            except Exception as error:  # an engine that cannot run this model fails its check, not the run
                record.error = f"{type(error).__name__}: {error}"
                continue
            if expected is None:
                expected = probabilities
            record.images += len(pixels)
            record.agreeing += _agreeing(probabilities, expected, thresholds)
            record.max_difference = max(record.max_difference, float(np.abs(probabilities - expected).max()))
    if first is not None and timing_rounds:
        timing = np.resize(first, (TIMING_BATCH, *first.shape[1:]))
        working = [(runner, record) for runner, record in zip(runners, figures) if not record.error]
        for runner, _ in working:
            runner.probabilities(timing)
        for round_number in range(timing_rounds):
            for runner, record in working:
                started = time.process_time()
                runner.probabilities(timing)
                record.cpu_seconds += time.process_time() - started
                record.timed_images += len(timing)
            if all(record.cpu_seconds >= ENOUGH_TIMED_SECONDS for _, record in working):
                break  # a large model: its figures are already steady, and each round costs seconds
    return figures


def _agreeing(probabilities: np.ndarray, expected: np.ndarray, thresholds: tuple[float, ...] | None) -> int:
    """Images on which two engines give the same answer: the top-1 label, or every label's yes-or-no."""
    if thresholds is None:
        return int((probabilities.argmax(axis=1) == expected.argmax(axis=1)).sum())
    return int((label_sets.decide(probabilities, thresholds) == label_sets.decide(expected, thresholds))
               .all(axis=1).sum())


def open_candidates(folder: Path, pairs: list[tuple[str, str]]) -> tuple[list[Any], list[Figures]]:
    """The engines of `pairs` that can run here, and a failed record for each that cannot be opened."""
    info = model_folder.read_info(folder)
    opened, failed = [], []
    for name, precision in pairs:
        try:
            opened.append(engines.open_engine(info, name, precision))
        except Exception as error:
            failed.append(Figures(name, precision, error=f"{type(error).__name__}: {error}"))
    return opened, failed


def measure_engines(folder: Path, batches: Iterable[np.ndarray]) -> dict[str, Any]:
    """Every engine and precision that runs this model here, against Keras: the record the export stage writes to
    engines.json."""
    from tasks.engines import keras_engine

    info = model_folder.read_info(folder)
    pairs = [(name, precision) for name in engines.ENGINES if name != "keras" for precision in engines.FILES[name]
             if engines.unusable_reason(folder, name, precision) is None]
    candidates, failed = open_candidates(folder, pairs)
    figures = compare(keras_engine.KerasEngine(info), candidates, batches, TIMING_ROUNDS, info.thresholds) + failed
    for record in figures:
        logger.info("engine check: %s%s", record.detail(), "" if record.passed() else " (not used by auto)")
    return {"min_agreement": engines.MIN_AGREEMENT, "max_fp32_difference": engines.MAX_FP32_DIFFERENCE,
            "bf16_on_this_cpu": engines.supports_bf16(), "threads": "all cores", "timing_batch": TIMING_BATCH,
            "timing_rounds": TIMING_ROUNDS,
            "engines": [record.as_record() for record in figures]}
