"""Converts a saved model: reads a model folder's model.keras, writes its exports (SavedModel, ONNX, OpenVINO IR,
LiteRT) and the int8 ONNX model calibrated on given images into another folder, at the paths a model folder keeps
them (model_folder.export_path)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tasks import model_folder

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 32
# what writing each needs: the export registry's packages (tasks/model_folder.py EXPORTS), and the int8 ONNX model's
PACKAGES = {**{name: entry.packages for name, entry in model_folder.EXPORTS.items()}, "int8": ("onnx", "onnxruntime")}


def _require(name: str, setting: str) -> None:
    import importlib.util

    missing = [package for package in PACKAGES.get(name, ()) if importlib.util.find_spec(package) is None]
    if missing:
        raise ValueError(f"{setting}: {name} needs the package(s) {', '.join(missing)}; install them "
                         f"(pip install {' '.join(missing)}) or take {name} out of {setting}")


def _patch_tf2onnx() -> None:
    """tf2onnx 1.17's transpose optimizer fails on an Add of a scalar constant after a convolution (MobileNetV3's
    hard-swish), logs the error and leaves every NHWC transpose in the graph, which made OpenVINO 3x slower than
    TensorFlow on MobileNetV3Small. A scalar commutes with a transpose: hand it to the general element-wise case."""
    from tf2onnx.optimizer import transpose_optimizer

    optimizer = transpose_optimizer.TransposeOptimizer
    original = optimizer._add_handler
    if getattr(original, "imgpipe_patched", False):
        return

    def add_handler(self: Any, transpose: Any, node: Any) -> Any:
        constant = node.inputs[1]
        if constant.is_const() and constant.get_tensor_value(as_list=False).ndim == 0:
            return self._handle_node_having_branches(transpose, node)
        return original(self, transpose, node)

    add_handler.imgpipe_patched = True  # type: ignore[attr-defined]
    optimizer._add_handler = add_handler


def _drop_unread_inputs(path: Path) -> None:
    """tf2onnx leaves graph inputs that no node reads (EfficientNetV2's Normalization constants); runtimes then
    demand values for them. Remove them."""
    import onnx

    graph_model = onnx.load(str(path))
    read = {name for node in graph_model.graph.node for name in node.input}
    unread = [item for item in graph_model.graph.input if item.name not in read]
    if not unread:
        return
    for item in unread:
        graph_model.graph.input.remove(item)
    onnx.save(graph_model, str(path))


def export_onnx(network: Any, target: Path) -> None:
    _patch_tf2onnx()
    with warnings.catch_warnings():  # Keras's own numpy-2 patch of tf2onnx warns about np.object
        warnings.simplefilter("ignore", FutureWarning)
        network.export(str(target), format="onnx", verbose=False)
    _drop_unread_inputs(target)


def export_openvino(network: Any, folder: Path) -> None:
    """OpenVINO IR converted from the ONNX export (Keras's own OpenVINO export ran EfficientNetV2B0 at half the speed
    of this route); weights kept in fp32. Reads the ONNX with the runtime, not `convert_model`, which sends
    telemetry."""
    import openvino

    onnx_file = model_folder.export_path(folder, "onnx")
    with tempfile.TemporaryDirectory() as scratch:
        if not onnx_file.is_file():
            onnx_file = Path(scratch) / "model.onnx"
            export_onnx(network, onnx_file)
        converted = openvino.Core().read_model(str(onnx_file))
        target = model_folder.export_path(folder, "openvino")
        target.parent.mkdir(parents=True, exist_ok=True)
        openvino.save_model(converted, str(target), compress_to_fp16=False)


def _write_saved_model(network: Any, folder: Path) -> None:
    network.export(str(model_folder.export_path(folder, "saved_model")), format="tf_saved_model", verbose=False)


def _write_onnx(network: Any, folder: Path) -> None:
    export_onnx(network, model_folder.export_path(folder, "onnx"))


def _write_litert(network: Any, folder: Path) -> None:
    network.export(str(model_folder.export_path(folder, "litert")), format="litert", verbose=False)


# export.formats -> what writes it into a folder from the loaded (and called) Keras network: one per entry of the
# export registry (tasks/model_folder.py EXPORTS; tests/test_extension_points.py holds them together)
WRITERS: dict[str, Callable[[Any, Path], None]] = {
    "saved_model": _write_saved_model,
    "onnx": _write_onnx,
    "openvino": export_openvino,
    "litert": _write_litert,
}


def write_int8(folder: Path, calibration: np.ndarray) -> None:
    """model.int8.onnx: ONNX Runtime's static QDQ quantization of model.onnx (int8 weights per channel, uint8
    activations, min-max ranges from `calibration`), the softmax (or a multi-label model's sigmoid) left in fp32. Used only if it passes parity."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = model_folder.export_path(folder, "onnx")
    batches = iter([calibration[start:start + CALIBRATION_BATCH]
                    for start in range(0, len(calibration), CALIBRATION_BATCH)])

    class Reader(CalibrationDataReader):
        def __init__(self, input_name: str) -> None:
            self.input_name = input_name

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {self.input_name: batch}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        heads = [node.name for node in graph.node if node.op_type in ("Softmax", "Sigmoid")]
        quantize_static(str(prepared), str(model_folder.export_path(folder, "int8")), Reader(graph.input[0].name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=heads)


def write_exports(model: Path, folder: Path, formats: list[str], calibration: np.ndarray | None) -> None:
    """The exports `formats` of the model saved in `model`, written into `folder` (model.int8.onnx too when
    calibration images are given).

    `folder` is the export stage's output under a temporary name (or the model folder itself): nothing here is seen
    half-written.
    """
    for name in formats:
        _require(name, "export.formats")
    if calibration is not None and len(calibration) and "onnx" in formats:
        _require("int8", "export.int8_calibration")
    network = model_folder.load(model)
    size = int(network.input_shape[1])
    network.predict_on_batch(np.zeros((1, size, size, 3), dtype=np.uint8))  # Keras exports only a model once called
    for name in formats:
        WRITERS[name](network, folder)
        logger.info("export: wrote %s", model_folder.export_path(folder, name))
    if calibration is not None and len(calibration) and "onnx" in formats:
        write_int8(folder, calibration)
        logger.info("export: wrote %s (calibrated on %d training images)", model_folder.export_path(folder, "int8"),
                    len(calibration))
