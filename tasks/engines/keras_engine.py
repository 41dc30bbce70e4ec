"""Runs a model folder's TensorFlow-side files on uint8 batches: model.keras (the `keras` engine), and for the gate's
export checks the SavedModel and the LiteRT file (each checked against the folder's checksums.json when it has one);
reads them, writes nothing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tasks import model_checksums, model_folder


def _check_export(path: Path) -> None:
    """Refuse an export that is not what train wrote, when its model folder records checksums."""
    if model_checksums.exists(path.parent):
        model_checksums.check_files(path.parent, [f"{path.name}/" if path.is_dir() else path.name], exports=True)


def _empty(classes: int) -> np.ndarray:
    return np.zeros((0, classes), dtype=np.float32)


class KerasEngine:
    name, precision = "keras", "fp32"

    def __init__(self, info: model_folder.ModelInfo) -> None:
        self.network = model_folder.load_checked(info)
        self.classes = len(info.labels)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return _empty(self.classes)
        return np.asarray(self.network.predict_on_batch(pixels), dtype=np.float32)


class SavedModelRunner:
    """The `serve` signature of a SavedModel export (what TensorFlow Serving calls)."""

    name, precision = "saved_model", "fp32"

    def __init__(self, folder: Path, classes: int) -> None:
        import tensorflow as tf

        _check_export(folder)
        self._tf = tf
        self.exported = tf.saved_model.load(str(folder))  # keep it: it owns the variables
        self.classes = classes

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return _empty(self.classes)
        return np.asarray(self.exported.serve(self._tf.constant(pixels)), dtype=np.float32)


class LiteRtRunner:
    """A LiteRT (TensorFlow Lite) file, through ai_edge_litert's interpreter if installed, else TensorFlow's."""

    name, precision = "litert", "fp32"

    def __init__(self, path: Path, classes: int) -> None:
        _check_export(path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        with warnings.catch_warnings():  # TensorFlow's interpreter warns that it moved to ai_edge_litert
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_path=str(path))
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = -1
        self.classes = classes

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return _empty(self.classes)
        if len(pixels) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(pixels.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(pixels))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output), dtype=np.float32)
