"""Computes a pretrained backbone's features of stored images, in whichever process runs it (this one, a spawned
worker, a Dask worker); reads the raw store, writes nothing.

Kept free of TensorFlow and pandas: worker processes import this module and must start fast (the engine they open,
OpenVINO or ONNX Runtime, imports neither).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import stored_images
from tasks.backbones import feature_engine

_OPENED: dict[tuple[feature_engine.EngineSpec, int], feature_engine.FeatureEngine] = {}  # one engine per process


class Embedder:
    """A picklable callable: a chunk of (path, location) jobs -> their features, float16 [n, features]."""

    def __init__(self, raw: Path, image_size: int, resize_mode: str, max_pixels: int,
                 spec: feature_engine.EngineSpec, threads: int) -> None:
        self.decoder = stored_images.Decoder(raw, image_size, resize_mode, max_pixels)
        self.spec, self.threads = spec, threads

    def __call__(self, chunk: list[stored_images.Job]) -> np.ndarray:
        key = (self.spec, self.threads)
        if key not in _OPENED:
            _OPENED[key] = feature_engine.open_engine(self.spec, self.threads)
        pixels = np.stack([self.decoder(job) for job in chunk])
        return _OPENED[key].features(pixels).astype(np.float16)
