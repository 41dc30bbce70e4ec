"""EfficientNet-Lite as a Keras 3 network (keras.layers only, so every backend runs it), shaped after a state dict of
Google's ImageNet weights; reads nothing, writes nothing.

Lite differs from EfficientNet: ReLU6, no squeeze-and-excitation, the stem (32 filters) and the head (1280) are not
scaled with the width, and the first and last stage are not repeated more with the depth. The weights were trained in
TensorFlow: "same" padding is TensorFlow's (more on the bottom and right), batch-norm epsilon is 1e-3 and the input
is (x - 127) / 128. The number of blocks, their widths and kernel sizes are read from the state dict, so Lite0 to
Lite4 are built by the same code; only the strides of each stage's first block are fixed by the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # of the first block of each of the seven stages; the others stride 1
BATCH_NORM_EPSILON = 1e-3
INPUT_OFFSET, INPUT_SCALE = 127.0, 128.0  # the network sees (x - 127) / 128 of 0-255 RGB values
FEATURES = 1280  # pooled features per image (the head is not width-scaled in Lite)


@dataclass(frozen=True)
class Block:
    """One inverted-residual block: 1x1 expand (unless the ratio is 1), depthwise k x k, 1x1 project."""

    index: int
    input_filters: int
    expanded_filters: int
    output_filters: int
    kernel_size: int
    strides: int

    @property
    def expands(self) -> bool:
        return self.expanded_filters != self.input_filters

    @property
    def residual(self) -> bool:
        return self.strides == 1 and self.input_filters == self.output_filters


def blocks_of(state: dict[str, np.ndarray]) -> list[Block]:
    """The blocks the state dict describes, with each stage's stride put on its first block (a stage starts where
    the output width changes)."""
    blocks: list[Block] = []
    stage = -1
    while f"_blocks.{len(blocks)}._depthwise_conv.weight" in state:
        index = len(blocks)
        prefix = f"_blocks.{index}."
        depthwise = state[prefix + "_depthwise_conv.weight"]  # (channels, 1, k, k)
        project = state[prefix + "_project_conv.weight"]  # (out, channels, 1, 1)
        expand = state.get(prefix + "_expand_conv.weight")  # (channels, in, 1, 1), absent when the ratio is 1
        input_filters = int(expand.shape[1]) if expand is not None else int(depthwise.shape[0])
        output_filters = int(project.shape[0])
        first_of_stage = not blocks or blocks[-1].output_filters != output_filters
        stage += first_of_stage
        if stage >= len(STAGE_STRIDES):
            raise ValueError(f"the state dict has more than {len(STAGE_STRIDES)} stages: not EfficientNet-Lite")
        blocks.append(Block(index, input_filters, int(depthwise.shape[0]), output_filters, int(depthwise.shape[-1]),
                            STAGE_STRIDES[stage] if first_of_stage else 1))
    if stage != len(STAGE_STRIDES) - 1:
        raise ValueError(f"the state dict has {stage + 1} stages, EfficientNet-Lite has {len(STAGE_STRIDES)}")
    return blocks


def _conv_bn(x, filters: int, kernel_size: int, strides: int, name: str, activation: bool):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if activation else x


def _block(x, block: Block):
    name = f"block{block.index}"
    shortcut = x
    if block.expands:
        x = _conv_bn(x, block.expanded_filters, 1, 1, f"{name}_expand", activation=True)
    x = layers.DepthwiseConv2D(block.kernel_size, strides=block.strides, padding="same", use_bias=False,
                               name=f"{name}_depthwise_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_depthwise_relu6")(x)
    x = _conv_bn(x, block.output_filters, 1, 1, f"{name}_project", activation=False)
    if block.residual:  # drop-connect is a training-time regulariser of the original; frozen features need none
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def backbone(name: str, blocks: list[Block], image_size: int | None, stem_filters: int = 32) -> keras.Model:
    """The feature extractor: 0-255 RGB (any dtype) in, the 1280 globally averaged features out."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / INPUT_SCALE, offset=-INPUT_OFFSET / INPUT_SCALE, name="input_scaling")(inputs)
    x = _conv_bn(x, stem_filters, 3, 2, "stem", activation=True)
    for block in blocks:
        x = _block(x, block)
    x = _conv_bn(x, FEATURES, 1, 1, "top", activation=True)
    outputs = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def imagenet_classifier(features: keras.Model, classes: int) -> keras.Model:
    """The backbone with its ImageNet head (for checking the weights): softmax over the ImageNet classes."""
    inputs = keras.Input(shape=features.input_shape[1:], name="image")
    x = features(inputs)
    outputs = layers.Dense(classes, activation="softmax", name="imagenet_logits")(x)
    return keras.Model(inputs, outputs, name=f"{features.name}_imagenet")


def _batch_norm(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"], state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"]]


def _conv(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def _depthwise(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # torch (channels, 1, kh, kw) -> Keras (kh, kw, channels, 1)


def keras_weights(state: dict[str, np.ndarray], blocks: list[Block]) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weights in Keras's order and layout, from the torch state dict."""
    weights = {"stem_conv": [_conv(state["_conv_stem.weight"])], "stem_bn": _batch_norm(state, "_bn0"),
               "top_conv": [_conv(state["_conv_head.weight"])], "top_bn": _batch_norm(state, "_bn1")}
    for block in blocks:
        source, name = f"_blocks.{block.index}.", f"block{block.index}"
        if block.expands:
            weights[f"{name}_expand_conv"] = [_conv(state[source + "_expand_conv.weight"])]
            weights[f"{name}_expand_bn"] = _batch_norm(state, source + "_bn0")
        weights[f"{name}_depthwise_conv"] = [_depthwise(state[source + "_depthwise_conv.weight"])]
        weights[f"{name}_depthwise_bn"] = _batch_norm(state, source + "_bn1")
        weights[f"{name}_project_conv"] = [_conv(state[source + "_project_conv.weight"])]
        weights[f"{name}_project_bn"] = _batch_norm(state, source + "_bn2")
    return weights


def from_state_dict(name: str, state: dict[str, np.ndarray], image_size: int | None) -> keras.Model:
    """The ImageNet classifier (backbone plus head) with the state dict's weights."""
    blocks = blocks_of(state)
    features = backbone(name, blocks, image_size, stem_filters=int(state["_conv_stem.weight"].shape[0]))
    for layer_name, values in keras_weights(state, blocks).items():
        layer = features.get_layer(layer_name)
        expected = [tuple(variable.shape) for variable in layer.weights]
        if expected != [value.shape for value in values]:
            raise ValueError(f"layer {layer_name}: the weights have shapes {[value.shape for value in values]}, "
                             f"the network {expected}")
        layer.set_weights(values)
    classifier = imagenet_classifier(features, int(state["_fc.weight"].shape[0]))
    classifier.get_layer("imagenet_logits").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return classifier
