"""A pretrained backbone's features model exported once into imgpipe's cache, for the faster engines: ONNX with a uint8
input, and OpenVINO IR read from it; reads the backbone from tasks/backbones/pretrained.py, writes only the cache.

The exports are `<cache>/exports/<backbone>-<weights sha>-v<converter>-<size>px-e<export version>.{onnx,xml,bin}` and a
JSON record beside them with each file's sha256, checked whenever the files are used: a damaged or replaced file is
exported again (export_files) or refused (feature_engine.open_engine), never run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tasks import atomic
from tasks.backbones import pretrained
from tasks.hashing import file_sha256

logger = logging.getLogger(__name__)

EXPORT_VERSION = 1  # raise when the export changes: older exports are then written again


def exports_folder() -> Path:
    return pretrained.cache_folder().parent / "exports"


def paths_for(backbone: str, image_size: int) -> dict[str, Path]:
    weights = pretrained.spec(backbone).weights_id.replace("@", "-").replace("/", "-")
    stem = f"{weights}-{image_size}px-e{EXPORT_VERSION}"
    return {name: exports_folder() / f"{stem}.{suffix}" for name, suffix in
            (("onnx", "onnx"), ("openvino", "xml"), ("openvino_weights", "bin"), ("record", "json"))}


def damaged(paths: dict[str, Path], names: tuple[str, ...]) -> list[str]:
    """Which of the exported files `names` are missing or differ from the record (all of them without a record)."""
    try:
        recorded = dict(json.loads(paths["record"].read_text(encoding="utf-8"))["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    return [name for name in names
            if not paths[name].is_file() or recorded.get(name) != file_sha256(paths[name])]


def export_files(backbone: str, image_size: int) -> dict[str, Path]:
    """The features model exported once into the cache: {"onnx": .onnx, "openvino": .xml (its .bin beside it)}.
    Files that are whole (sha256 as recorded) are reused; otherwise all are exported again."""
    paths = paths_for(backbone, image_size)
    damaged_files = damaged(paths, ("onnx", "openvino", "openvino_weights"))
    if damaged_files:
        if paths["record"].is_file():
            logger.warning("%s: %s missing or not as recorded at export; exporting again", paths["record"].stem,
                           ", ".join(damaged_files))
        _export(backbone, image_size, paths)
    return {"onnx": paths["onnx"], "openvino": paths["openvino"]}


def _export(backbone: str, image_size: int, paths: dict[str, Path], network: Any = None) -> None:
    """tf2onnx's ONNX of the features model with a uint8 input (the cast inside the graph), and OpenVINO IR read from
    it with the runtime (Keras's own OpenVINO export ran EfficientNet at half this route's speed; convert_model sends
    telemetry), weights kept in fp32; each written under a temporary name and renamed into place, the record last."""
    import warnings

    import keras
    import onnx
    import openvino

    for name in ("tensorflow", "tf2onnx"):  # the converters' chatter: "Assets written to", opset and optimizer lines
        logging.getLogger(name).setLevel(logging.ERROR if name == "tensorflow" else logging.WARNING)
    logger.info("%s: exporting the %d px features model to ONNX and OpenVINO IR in %s, once", backbone, image_size,
                exports_folder())
    network = network if network is not None else pretrained.features_model(backbone, image_size)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="pixels")
    wrapped = keras.Model(inputs, network(keras.ops.cast(inputs, "float32")), name=f"{backbone}_features")
    wrapped.predict_on_batch(np.zeros((1, image_size, image_size, 3), dtype=np.uint8))  # Keras exports called models
    folder = exports_folder()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as scratch:
        onnx_file, xml_file = Path(scratch) / "model.onnx", Path(scratch) / "model.xml"
        with warnings.catch_warnings():  # Keras's own numpy-2 patch of tf2onnx warns about np.object
            warnings.simplefilter("ignore", FutureWarning)
            wrapped.export(str(onnx_file), format="onnx", verbose=False)
        graph_model = onnx.load(str(onnx_file))  # tf2onnx can leave graph inputs no node reads; runtimes demand them
        read = {name for node in graph_model.graph.node for name in node.input}
        unread = [item for item in graph_model.graph.input if item.name not in read]
        if unread:
            for item in unread:
                graph_model.graph.input.remove(item)
            onnx.save(graph_model, str(onnx_file))
        openvino.save_model(openvino.Core().read_model(str(onnx_file)), str(xml_file), compress_to_fp16=False)
        written = {"onnx": onnx_file, "openvino": xml_file, "openvino_weights": xml_file.with_suffix(".bin")}
        record = {"backbone": backbone, "weights_id": pretrained.spec(backbone).weights_id, "image_size": image_size,
                  "export_version": EXPORT_VERSION, "input": "uint8 [n, size, size, 3], 0-255 RGB",
                  "features": int(wrapped.output_shape[-1]),
                  "versions": {"keras": keras.__version__, "onnx": onnx.__version__,
                               "openvino": openvino.get_version()},
                  "sha256": {name: file_sha256(path) for name, path in written.items()}}
        for name, path in written.items():
            os.chmod(path, 0o666 & ~atomic.umask())  # as open() would make it: never wider than the umask
            os.replace(path, paths[name])
    atomic.write_json(paths["record"], record)
