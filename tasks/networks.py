"""Keras 3 model builders (keras.layers and keras.ops only, so any backend runs them); reads a local weights file or
Keras's cached ImageNet weights (downloading them through Keras on a connected machine), writes a no-top weights file
for `imgpipe weights fetch`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import keras
from keras import layers, ops

from tasks.backbones import catalog
from tasks.params import ModelName, TrainParams

SIMPLE_CNN = "simple_cnn"
IMAGENET = "imagenet"  # train.weights: the backbone's ImageNet weights, through Keras's own download and cache
# name -> (constructor, how the backbone wants its 0-255 RGB input)
# (the registry: tasks/backbones/catalog.py PIXEL_BACKBONES)
BACKBONES: dict[str, tuple[Callable[..., keras.Model], str]] = {
    name: (getattr(keras.applications, entry.constructor), entry.input_style)
    for name, entry in catalog.PIXEL_BACKBONES.items()}
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)  # the one list, in tasks/params.py; a test holds BACKBONES to it


@keras.saving.register_keras_serializable(package="imgpipe")
class CaffeNormalization(layers.Layer):
    """RGB in 0-255 to BGR minus the ImageNet channel means: the input ResNet50's weights were trained on."""

    def call(self, inputs):
        values = ops.flip(ops.cast(inputs, self.compute_dtype), axis=-1)
        return values - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=self.compute_dtype)


def head_activation(multi_label: bool) -> str:
    """softmax: one class per image; sigmoid: an independent probability per label (multi-label)."""
    return "sigmoid" if multi_label else "softmax"


def simple_cnn(image_size: int, num_classes: int, depth: int, width: int, dropout: float,
               multi_label: bool = False) -> keras.Model:
    """Blocks of two 3x3 convolutions with batch-norm and ReLU, then max-pooling; global pooling; softmax head
    (sigmoid with `multi_label`).

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
    outputs = layers.Dense(num_classes, activation=head_activation(multi_label), dtype="float32",
                           name="probabilities")(x)
    return keras.Model(inputs, outputs, name=SIMPLE_CNN)


def check_weights_file(weights: str | None) -> Path | str | None:
    """"imagenet", or the local weights file, which must exist."""
    if weights is None or weights == IMAGENET:
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"train.weights: {path} not found; give a local backbone weights file saved without the top "
            "(include_top=False; 'imgpipe weights fetch NAME' writes one), imagenet (downloaded through Keras's cache), "
            "or null to start from random weights"
        )
    return path


def weights_file_name(name: str) -> Path:
    """Where `imgpipe weights fetch NAME` saves NAME's no-top ImageNet weights unless told otherwise."""
    return Path(f"{name}_imagenet_notop.weights.h5")


def offline_message(name: str, error: Exception) -> str:
    return (f"train.weights: imagenet: the ImageNet weights of {name} are not in Keras's cache (~/.keras/models, or "
            f"$KERAS_HOME/models) and could not be downloaded ({error}). On a machine with internet run "
            f"'imgpipe weights fetch {name}' (it writes {weights_file_name(name)}), copy the file here and set "
            f"train.weights to its path")


def backbone(name: str, image_size: int | None, weights: Path | str | None) -> keras.Model:
    """The keras.applications network `name` without its top, with global pooling; 0-255 RGB input."""
    if name not in BACKBONES:
        raise ValueError(f"train.model {name!r} is unknown; use one of {', '.join(MODEL_NAMES)}")
    constructor, input_style = BACKBONES[name]
    options = {"include_preprocessing": True} if input_style == "built_in" else {}
    shape = None if image_size is None else (image_size, image_size, 3)
    if weights == IMAGENET:
        try:
            return constructor(include_top=False, weights=IMAGENET, input_shape=shape, pooling="avg", **options)
        except Exception as error:  # Keras raises a bare Exception when the download fails
            if "URL fetch failure" in str(error) or isinstance(error, OSError):
                raise ValueError(offline_message(name, error)) from None
            raise
    network = constructor(include_top=False, weights=None, input_shape=shape, pooling="avg", **options)
    if weights is not None:
        network.load_weights(weights)
    return network


def backbone_model(name: str, image_size: int, num_classes: int, dropout: float,
                   weights: Path | str | None, multi_label: bool = False) -> keras.Model:
    """A keras.applications backbone with global pooling and a new softmax (or, `multi_label`, sigmoid) head; uint8
    input, scaled inside."""
    if name not in BACKBONES:
        raise ValueError(f"train.model {name!r} is unknown; use one of {', '.join(MODEL_NAMES)}")
    if image_size < 32:
        raise ValueError(f"train.model {name} needs preprocess.image_size >= 32, got {image_size}")
    pretrained = backbone(name, image_size, weights)
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)  # a cast: the backbones take 0-255 values
    if BACKBONES[name][1] == "caffe":
        x = CaffeNormalization(name="caffe_normalization")(x)
    # Pretrained batch-norm statistics stay fixed (inference mode) even when layers are unfrozen later;
    # from random weights they must learn.
    x = pretrained(x, training=False if weights is not None else None)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation=head_activation(multi_label), dtype="float32",
                           name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def fetch_weights(name: str, out: Path) -> Path:
    """Save the ImageNet weights of backbone `name` without its top to `out` (a .weights.h5 file), for a machine
    that cannot download them: point train.weights at the file there."""
    if name in catalog.BACKBONES:
        raise ValueError(f"{name}'s ImageNet weights install with imgpipe (pip package "
                         f"{catalog.spec(name).pip_name}): there is nothing to fetch, on any machine")
    if name == SIMPLE_CNN or name not in BACKBONES:
        raise ValueError(f"{name!r} has no ImageNet weights; name one of the backbones {', '.join(BACKBONES)}")
    if not out.name.endswith(".weights.h5"):
        raise ValueError(f"`out` {out}: Keras saves weights only to a file whose name ends in .weights.h5")
    network = backbone(name, None, IMAGENET)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name.removesuffix('.weights.h5')}.partial.weights.h5")
    try:
        network.save_weights(temporary)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def build(params: TrainParams, image_size: int, num_classes: int, multi_label: bool = False) -> keras.Model:
    """The model that `train.model` names, with a sigmoid head for a multi-label task (the networks trained on
    pixels; train.weights auto means random weights for them)."""
    weights = None if params.weights == "auto" else params.weights
    if params.model == SIMPLE_CNN:
        if weights is not None:
            raise ValueError("train.weights applies to backbones only; set it to auto or null for simple_cnn")
        return simple_cnn(image_size, num_classes, params.depth, params.width, params.dropout, multi_label)
    return backbone_model(params.model, image_size, num_classes, params.dropout, check_weights_file(weights),
                          multi_label)


def find_backbone(network: keras.Model) -> keras.Model | None:
    """The keras.applications model nested inside a backbone model, or None for simple_cnn."""
    return next((layer for layer in network.layers if isinstance(layer, keras.Model)), None)


def set_backbone_trainable(model: keras.Model, trainable_layers: int | None) -> None:
    """Freeze the backbone (0), unfreeze its top N layers, or all of it (None); batch-norm layers stay frozen."""
    backbone = find_backbone(model)
    if backbone is None:
        return
    backbone.trainable = trainable_layers != 0
    if trainable_layers in (0, None):
        return
    for index, layer in enumerate(backbone.layers):
        in_top = index >= len(backbone.layers) - trainable_layers
        layer.trainable = in_top and not isinstance(layer, layers.BatchNormalization)
