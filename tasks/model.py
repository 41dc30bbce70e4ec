"""Keras 3 model builders (keras.layers and keras.ops only, so any backend runs them); reads and writes nothing."""

from __future__ import annotations

import keras
from keras import layers

from tasks.config import TrainParams


def simple_cnn(image_size: int, num_classes: int, depth: int, width: int, dropout: float) -> keras.Model:
    """Blocks of two 3x3 convolutions with batch-norm and ReLU, then max-pooling; global pooling; softmax head.

    Takes uint8 images and rescales them itself, so a saved model carries its own preprocessing.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for block in range(depth):
        filters = width * 2**block
        for position in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{position}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{position}")(x)
            x = layers.ReLU(name=f"block{block}_relu{position}")(x)
        if block < depth - 1:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def build(params: TrainParams, image_size: int, num_classes: int) -> keras.Model:
    """The model that `train.model` names."""
    if params.model == "simple_cnn":
        return simple_cnn(image_size, num_classes, params.depth, params.width, params.dropout)
    raise ValueError(f"train.model {params.model!r} is unknown; use simple_cnn")
