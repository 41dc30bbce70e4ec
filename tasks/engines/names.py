"""The engine registry: each engine that can run a model folder, by name, with the module and class that run it, the
package it needs and the model-folder file it runs at each precision. The one list that tasks/engines/engine.py,
the `imgpipe` command (tasks/predict/options.py) and the tests read; imports nothing, reads nothing.

Adding an engine: an entry here, its runner module in tasks/engines/ (a class taking (path, precision, classes,
threads) with `name`, `precision` and probabilities(uint8 batch)), and a test; tests/test_extension_points.py
holds every derived list to this one.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"  # choose the engine (or precision) from what train measured; see tasks/engines/engine.py
PRECISIONS = ("fp32", "bf16", "int8")  # in the order the command line offers them


@dataclass(frozen=True)
class EngineEntry:
    runner: str  # "module:Class" that runs it (imported only when the engine is opened)
    package: str  # the import (and pip) name of the package it needs
    # precision -> the files it runs from the model folder, tried in order: export.formats names (their paths are
    # tasks/model_folder.py EXPORT_PATHS), "int8" (the int8 ONNX model) or "keras" (model.keras)
    files: dict[str, tuple[str, ...]]


REGISTRY: dict[str, EngineEntry] = {
    # the reference every other engine is held to; its runner takes the model's info (engine.open_engine)
    "keras": EngineEntry("tasks.engines.keras_engine:KerasEngine", "keras", {"fp32": ("keras",)}),
    "onnxruntime": EngineEntry("tasks.engines.onnxruntime_engine:OnnxRuntimeEngine", "onnxruntime",
                               {"fp32": ("onnx",), "int8": ("int8",)}),
    "openvino": EngineEntry("tasks.engines.openvino_engine:OpenVinoEngine", "openvino",
                            {"fp32": ("openvino", "onnx"), "bf16": ("openvino", "onnx"), "int8": ("int8",)}),
}
ENGINES = tuple(REGISTRY)
