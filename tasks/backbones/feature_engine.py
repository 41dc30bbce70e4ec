"""Runs a pretrained backbone's features model on uint8 batches through the fastest CPU engine that agrees with Keras:
opens an engine from a picklable EngineSpec (on the exports of tasks/backbones/feature_exports.py, refused when they
differ from their record), and chooses the engine by a parity check and CPU timing on sample images. Reads the
cache, writes nothing. Opening an onnxruntime or openvino engine imports neither TensorFlow nor Keras, so that worker
processes start in a second.

int8 is left out: ONNX Runtime's static QDQ model of efficientnet_lite0 calibrated on 64 clothing photos agreed with
Keras on 92% of ImageNet top-1 labels (min cosine 0.94) on 192 others, under ONNX Runtime and OpenVINO alike.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks.backbones import feature_exports, pretrained
from tasks import cpu
from tasks.cpu import limit_tensorflow_threads, supports_bf16

logger = logging.getLogger(__name__)

PRECISIONS = {"keras": ("fp32",), "onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}  # OpenVINO's default on a bf16 CPU is bf16: always ask explicitly
MIN_AGREEMENT = 0.99  # ImageNet top-1 agreement with Keras fp32 on the sample
MIN_COSINE = 0.99  # the smallest cosine similarity between an image's features and Keras's
MAX_FP32_DIFFERENCE = 1e-3  # fp32 only: largest |difference| over the largest |Keras feature|
# timed calls per engine on the whole sample, engines taking turns, after the parity call; one is enough to rank
# engines whose costs differ by a third or more, and each round costs seconds of every engine on the sample
TIMING_ROUNDS = 1


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to open an engine itself: picklable, no open handles."""

    backbone: str
    image_size: int
    engine: str  # "keras" | "onnxruntime" | "openvino"
    precision: str  # "fp32" | "bf16"
    file: str | None  # the exported model file it runs (None for keras)


class FeatureEngine(Protocol):
    spec: EngineSpec

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [n, features] for uint8 [n, image_size, image_size, 3]; n may be 0."""


class _Features:
    spec: EngineSpec
    width: int  # features per image

    def features(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.width), dtype=np.float32)
        return self._run(np.ascontiguousarray(pixels))

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class KerasFeatures(_Features):
    def __init__(self, spec: EngineSpec, network: Any = None) -> None:
        self.spec = spec
        self.network = network if network is not None else pretrained.features_model(spec.backbone, spec.image_size)
        self.width = int(self.network.output_shape[-1])

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.network.predict_on_batch(pixels), dtype=np.float32)


class OnnxRuntimeFeatures(_Features):
    def __init__(self, spec: EngineSpec, threads: int) -> None:
        import onnxruntime

        options = cpu.onnxruntime_options(threads)
        self.spec = spec
        self.session = onnxruntime.InferenceSession(str(spec.file), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.width = int(self.session.get_outputs()[0].shape[-1])

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: pixels})[0], dtype=np.float32)


class OpenVinoFeatures(_Features):
    def __init__(self, spec: EngineSpec, threads: int) -> None:
        import openvino

        core = openvino.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[spec.precision],
                                  "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.spec = spec
        self.compiled = core.compile_model(core.read_model(str(spec.file)), "CPU", config)
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if used != OPENVINO_HINTS[spec.precision]:
            raise RuntimeError(f"{spec.file}: OpenVINO runs it in {used}, not the {spec.precision} asked for")
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.width = int(self.output.get_partial_shape()[-1].get_length())

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: pixels})
        return np.array(result[self.output], dtype=np.float32)  # a copy: the next call reuses the request's memory


# ---- engines ----------------------------------------------------------------------------------------------------

def _check_file(spec: EngineSpec) -> None:
    """Refuse an exported file of the cache that differs from its record (damaged, or replaced since the export)."""
    paths = feature_exports.paths_for(spec.backbone, spec.image_size)
    names = {"onnxruntime": ("onnx",), "openvino": ("openvino", "openvino_weights")}[spec.engine]
    if Path(str(spec.file)).resolve() != paths[names[0]].resolve():
        return  # a file outside the cache: the runtime's own checks only
    damaged = feature_exports.damaged(paths, names)
    if damaged:
        raise ValueError(f"{spec.file}: {', '.join(paths[name].name for name in damaged)} missing or its sha256 "
                         f"differs from {paths['record'].name}; run export_files({spec.backbone!r}, "
                         f"{spec.image_size}) (the embed stage does) to export it again")


def open_engine(spec: EngineSpec, threads: int = 0) -> FeatureEngine:
    """The engine `spec` names, loaded in this process; `threads` 0: all cores."""
    if spec.precision not in PRECISIONS.get(spec.engine, ()):
        known = ", ".join(f"{engine} {precision}" for engine in PRECISIONS for precision in PRECISIONS[engine])
        raise ValueError(f"engine {spec.engine!r} at precision {spec.precision!r}: not one of {known}")
    if spec.engine == "keras":
        limit_tensorflow_threads(threads)
        return KerasFeatures(spec)
    if spec.file is None:
        raise ValueError(f"engine {spec.engine}: the spec names no model file; take it from export_files()")
    if importlib.util.find_spec(spec.engine) is None:
        raise ValueError(f"engine {spec.engine} is not installed (pip install {spec.engine})")
    _check_file(spec)
    if spec.engine == "onnxruntime":
        return OnnxRuntimeFeatures(spec, threads)
    return OpenVinoFeatures(spec, threads)


# ---- choosing ---------------------------------------------------------------------------------------------------

def _figures(features: np.ndarray, expected: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> dict[str, float]:
    """ImageNet top-1 agreement (argmax of the logits is the argmax of their softmax), the smallest cosine similarity
    and the largest difference relative to the largest Keras feature."""
    agreement = float(((features @ kernel + bias).argmax(1) == (expected @ kernel + bias).argmax(1)).mean())
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = (features * expected).sum(axis=1) / np.maximum(norms, np.finfo(np.float32).tiny)
    scale = max(float(np.abs(expected).max()), np.finfo(np.float32).tiny)
    return {"agreement": agreement, "min_cosine": float(cosine.min()),
            "max_difference": float(np.abs(features - expected).max()) / scale}


def _passes(precision: str, figures: dict[str, float]) -> bool:
    return (figures["agreement"] >= MIN_AGREEMENT and figures["min_cosine"] >= MIN_COSINE
            and (precision != "fp32" or figures["max_difference"] <= MAX_FP32_DIFFERENCE))


def _record(engine: str, precision: str, images: int, figures: dict[str, float] | None = None,
            ms_per_image: float | None = None, failure: str = "") -> dict[str, Any]:
    figures = figures or {"agreement": None, "min_cosine": None, "max_difference": None}
    passed = not failure and _passes(precision, figures)
    if failure:
        detail = f"{engine} {precision}: {failure}"
    else:
        detail = (f"{engine} {precision}: ImageNet top-1 agreement {figures['agreement']:.4f} on {images} images, "
                  f"min cosine {figures['min_cosine']:.6f}, largest difference {figures['max_difference']:.2e} of "
                  f"the largest feature"
                  + (f", {ms_per_image:.2f} ms of CPU per image" if ms_per_image is not None else "")
                  + ("" if passed else " (failed parity: not timed)"))
    return {"engine": engine, "precision": precision, "images": images, **figures,
            "ms_per_image": None if ms_per_image is None else round(ms_per_image, 4), "passed": passed,
            "detail": detail}


def choose(backbone: str, image_size: int, sample: np.ndarray,
           threads: int = 0) -> tuple[EngineSpec, list[dict[str, Any]]]:
    """The fastest engine whose features agree with Keras fp32 on `sample` (uint8 [n, size, size, 3]), and one record
    per candidate for the log and the summary. Keras itself always passes; an engine that fails to export, open or
    run is recorded as failed."""
    if sample.dtype != np.uint8 or sample.ndim != 4 or sample.shape[1:] != (image_size, image_size, 3) \
            or not len(sample):
        raise ValueError(f"choose({backbone!r}, {image_size}): the sample must be uint8 [n, {image_size}, "
                         f"{image_size}, 3] with n >= 1, got {sample.dtype} {list(sample.shape)}")
    limit_tensorflow_threads(threads)
    classifier = pretrained.imagenet_classifier(backbone, image_size)
    kernel, bias = classifier.get_layer("imagenet_logits").get_weights()
    reference = KerasFeatures(EngineSpec(backbone, image_size, "keras", "fp32", None), classifier.get_layer(backbone))
    expected = reference.features(sample)  # also the reference's warm-up call
    images = len(sample)
    engines: list[tuple[FeatureEngine, np.ndarray]] = [(reference, expected)]
    records: dict[tuple[str, str], dict[str, Any]] = {}
    export_failure = ""
    try:
        files: dict[str, Path] | None = feature_exports.export_files(backbone, image_size)
    except Exception as error:  # no export: the exported engines fail their check, Keras still runs
        files, export_failure = None, f"export failed: {type(error).__name__}: {error}"
    for engine, file_key in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        for precision in PRECISIONS[engine]:
            if precision == "bf16" and not supports_bf16():
                records[engine, precision] = _record(engine, precision, 0,
                                                     failure="not tried: this CPU has no avx512_bf16 or amx_bf16")
                continue
            if files is None:
                records[engine, precision] = _record(engine, precision, 0, failure=export_failure)
                continue
            try:
                opened = open_engine(EngineSpec(backbone, image_size, engine, precision, str(files[file_key])),
                                     threads)
                engines.append((opened, opened.features(sample)))  # the parity call is the warm-up call
            except Exception as error:  # an engine that cannot run the model fails its check, not the run
                records[engine, precision] = _record(engine, precision, 0,
                                                     failure=f"failed: {type(error).__name__}: {error}")
    cpu_seconds = [0.0] * len(engines)
    agreeing = [opened is not reference and _passes(opened.spec.precision, _figures(features, expected, kernel, bias))
                for opened, features in engines]
    # Keras is timed only when no exported engine agrees: it is then chosen whatever its time, and otherwise it is
    # the slowest here on every network measured (benchmarks/BENCHMARKS.md)
    agreeing[0] = not any(agreeing)
    for _ in range(TIMING_ROUNDS):  # engines take turns, so that a busy machine weighs on them alike
        for index, (opened, _) in enumerate(engines):
            key = (opened.spec.engine, opened.spec.precision)
            if key in records or not agreeing[index]:  # an engine that disagrees is never chosen: no timing
                continue
            started = time.process_time()
            try:
                opened.features(sample)
            except Exception as error:
                if opened is reference:  # the reference must run: without it nothing can be checked
                    raise
                records[key] = _record(*key, 0, failure=f"failed: {type(error).__name__}: {error}")
            cpu_seconds[index] += time.process_time() - started
    for (opened, features), seconds, timed in zip(engines, cpu_seconds, agreeing):
        key = (opened.spec.engine, opened.spec.precision)
        records.setdefault(key, _record(*key, images, _figures(features, expected, kernel, bias),
                                        1000 * seconds / (TIMING_ROUNDS * images) if timed else None))
    records["keras", "fp32"]["passed"] = True  # the reference: the fallback that always runs
    ordered = [records[engine, precision] for engine in PRECISIONS for precision in PRECISIONS[engine]
               if (engine, precision) in records]
    for record in ordered:
        logger.info("feature engine check: %s", record["detail"])
    best = min((record for record in ordered if record["passed"]),
               key=lambda record: math.inf if record["ms_per_image"] is None else record["ms_per_image"])
    chosen = next(opened.spec for opened, _ in engines
                  if (opened.spec.engine, opened.spec.precision) == (best["engine"], best["precision"]))
    logger.info("feature engine: %s %s, the fastest that passed parity (%.2f ms of CPU per image)", chosen.engine,
                chosen.precision, best["ms_per_image"])
    return chosen, ordered
