"""Writes a model folder's exports beside model.keras (SavedModel, ONNX, OpenVINO IR, LiteRT), the int8 ONNX model
calibrated on training images, and engines.json (each engine and precision held to Keras on the test split); reads
model.keras and data/processed/.

The train stage calls run() in its own process for small models and `python -m tasks.train.export FOLDER ...` for
large ones: converting a large model in the process that trained it can run out of memory (ResNet50 needed more
than 24 GB there, 6.4 GB in a fresh process).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks import model_checksums, model_folder

logger = logging.getLogger(__name__)

# models with more parameters are exported in a fresh process (ResNet50, 25 million, ran out of memory in-process;
# EfficientNet-Lite2's 6 million export in-process, which saves the fresh process's TensorFlow start)
FRESH_PROCESS_PARAMETERS = 10_000_000
CALIBRATION_BATCH = 32
# engines.json is measured on the first test images up to this many: enough to tell which engines agree with Keras
# (the gate then holds the ones --engine auto may use to it on every test image), without paying every engine on
# every test image each run
ENGINE_CHECK_IMAGES = 256
BAD_SETTING = 3  # the exit status of the fresh process for a ValueError (a setting to change), its message last
PACKAGES = {"onnx": ("onnx", "tf2onnx"), "openvino": ("onnx", "tf2onnx", "openvino"), "int8": ("onnx", "onnxruntime")}


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


def write_exports(folder: Path, formats: list[str], calibration: np.ndarray | None) -> None:
    """The exports `formats` of the model saved in `folder`, and model.int8.onnx when calibration images are given.

    `folder` is the model folder train is building under a temporary name: nothing here is seen half-written.
    """
    for name in formats:
        _require(name, "train.exports")
    if calibration is not None and len(calibration) and "onnx" in formats:
        _require("int8", "train.int8_calibration")
    network = model_folder.load(folder)
    size = int(network.input_shape[1])
    network.predict_on_batch(np.zeros((1, size, size, 3), dtype=np.uint8))  # Keras exports only a model once called
    for name in formats:
        target = model_folder.export_path(folder, name)
        if name == "saved_model":
            network.export(str(target), format="tf_saved_model", verbose=False)
        elif name == "onnx":
            export_onnx(network, target)
        elif name == "openvino":
            export_openvino(network, folder)
        elif name == "litert":
            network.export(str(target), format="litert", verbose=False)
        logger.info("export: wrote %s", target)
    if calibration is not None and len(calibration) and "onnx" in formats:
        write_int8(folder, calibration)
        logger.info("export: wrote %s (calibrated on %d training images)", model_folder.export_path(folder, "int8"),
                    len(calibration))


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


def run(folder: Path, formats: list[str], processed: Path, calibration_images: int, seed: int) -> None:
    """Exports, the int8 model calibrated on training images (shuffled, not augmented), and engines.json from the
    test split."""
    from tasks.engines import engine_check

    # the converters' own chatter: TensorFlow's "Assets written to" and its warning about a table initializer that
    # it calls "probably safe to ignore" (its errors still show), tf2onnx's opset and optimizer lines
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "tensorflow" else logging.WARNING)
    info = model_folder.read_info(folder)
    image_size, multi_label = info.image_size, info.multi_label
    calibration = None
    if calibration_images and "onnx" in formats:
        calibration = np.concatenate(list(_images(processed, "train", image_size, calibration_images, seed,
                                                  multi_label)))
    write_exports(folder, formats, calibration)
    model_checksums.seal(folder, info.version, complete=False)  # the engine check below runs exports already on the list
    record = engine_check.measure_engines(folder, _images(processed, "test", image_size, ENGINE_CHECK_IMAGES, seed,
                                                          multi_label))
    model_folder.write_engines(folder, record)


def run_in_fresh_process(folder: Path, formats: list[str], processed: Path, calibration_images: int,
                         seed: int) -> None:
    command = [sys.executable, "-m", "tasks.train.export", str(folder), "--processed", str(processed),
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
        raise RuntimeError(f"exporting {folder} in a fresh process failed:\n{result.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a model folder's exports, int8 model and engines.json.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--processed", type=Path, required=True)
    parser.add_argument("--calibration-images", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="*", default=[])
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(arguments.folder, arguments.formats, arguments.processed, arguments.calibration_images, arguments.seed)
    except ValueError as error:
        sys.stderr.write(f"ERROR {error}\n")
        sys.exit(BAD_SETTING)


if __name__ == "__main__":
    main()
