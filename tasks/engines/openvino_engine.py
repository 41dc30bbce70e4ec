"""The `openvino` engine: runs openvino/model.xml or model.onnx (fp32, bf16) or model.int8.onnx (int8) on uint8 batches
on the CPU; reads the file, writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# OpenVINO's own default on a CPU with bf16 is bf16: fp32 must be asked for, and the precision used is checked.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the quantized layers; the rest in fp32


class OpenVinoEngine:
    name = "openvino"

    def __init__(self, path: Path, precision: str, classes: int, threads: int = 0) -> None:
        import openvino

        core = openvino.Core()
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if used != PRECISION_HINTS[precision]:
            raise RuntimeError(f"{path}: OpenVINO runs it in {used}, not the {precision} asked for")
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.precision = precision
        self.classes = classes

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.classes), dtype=np.float32)
        result = self.request.infer({0: np.ascontiguousarray(pixels)})
        return np.array(result[self.output], dtype=np.float32)  # a copy: the next call reuses the request's memory
