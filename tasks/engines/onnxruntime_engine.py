"""The `onnxruntime` engine: runs model.onnx (fp32) or model.int8.onnx (int8) on uint8 batches; reads it, writes
nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import cpu


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, path: Path, precision: str, classes: int, threads: int = 0) -> None:
        import onnxruntime

        options = cpu.onnxruntime_options(threads)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.precision = precision
        self.classes = classes

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.classes), dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input: np.ascontiguousarray(pixels)})[0], dtype=np.float32)
