"""Runs a loaded model on batches of decoded images: class probabilities and the thread budget; reads and writes nothing."""

from __future__ import annotations

import logging

import keras
import numpy as np

logger = logging.getLogger(__name__)


def limit_threads(threads: int) -> None:
    """Use at most `threads` TensorFlow threads in this process (0: all cores); only before TensorFlow starts."""
    if threads <= 0 or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already started in this process: the earlier setting stays
        logger.debug("TensorFlow already started; thread settings unchanged")


def probabilities(network: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities (float32, one row per image) for a batch of uint8 images."""
    if len(pixels) == 0:
        return np.zeros((0, int(network.output_shape[-1])), dtype=np.float32)
    return np.asarray(network.predict_on_batch(pixels), dtype=np.float32)
