"""Augments and mixes training batches, drawn statelessly from one seed per batch; reads and writes nothing.

Every random number comes from `tf.random.stateless_*` with a seed handed in beside the batch, so a batch's
augmentation depends on that seed alone, not on thread timing: the map that applies it can run in parallel.
Strengths mean what they mean for the Keras layers of the same names (RandomRotation, RandomZoom, ...), but
flips, rotation, zoom and translation are composed into one affine transform and resampled once, and the
pixel work is compiled with XLA: about five times faster on a CPU than tf.raw_ops.ImageProjectiveTransformV3
(which the Keras layers use, once per layer), and one resampling blurs less than three.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from tasks.params import AugmentParams

# Sub-seeds by purpose: switching one transformation on or off leaves the draws of the others unchanged.
_FLIP_X, _FLIP_Y, _ROTATION, _ZOOM, _TRANSLATION, _CONTRAST, _BRIGHTNESS, _PARTNER, _WEIGHT, _BOX = range(10)
_SUB_SEEDS = 10

Augmenter = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def is_active(params: AugmentParams) -> bool:
    """Whether params ask for any transformation at all."""
    return _moves_pixels(params) or bool(params.contrast or params.brightness or params.mixing)


def _moves_pixels(params: AugmentParams) -> bool:
    return bool(params.horizontal_flip or params.vertical_flip or params.rotation or params.zoom or params.translation)


def _uniform(seed: tf.Tensor, count: tf.Tensor, low: float = 0.0, high: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_uniform([count], seed=seed, minval=low, maxval=high)


def _beta(seed: tf.Tensor, count: tf.Tensor, alpha: float) -> tf.Tensor:
    first, second = tf.unstack(tf.random.stateless_gamma([2, count], seed=seed, alpha=alpha))
    return first / (first + second)


def _affine_matrices(params: AugmentParams, seeds: tf.Tensor, count: tf.Tensor, height: tf.Tensor,
                     width: tf.Tensor) -> tf.Tensor:
    """Per image, the 3x3 matrix that maps an output pixel (x, y, 1) to the input point it samples.

    Applied in the Keras layers' order (flip, rotate, zoom, translate), so the matrix is their product.
    """
    ones, zeros = tf.ones([count]), tf.zeros([count])
    centre_x, centre_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0

    def matrix(a0: tf.Tensor, a1: tf.Tensor, a2: tf.Tensor, b0: tf.Tensor, b1: tf.Tensor, b2: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros, ones], axis=1), [count, 3, 3])

    result = tf.eye(3, batch_shape=[count])
    if params.horizontal_flip:
        flip = tf.where(_uniform(seeds[_FLIP_X], count) < 0.5, -1.0, 1.0)
        result = result @ matrix(flip, zeros, (1.0 - flip) * centre_x, zeros, ones, zeros)
    if params.vertical_flip:
        flip = tf.where(_uniform(seeds[_FLIP_Y], count) < 0.5, -1.0, 1.0)
        result = result @ matrix(ones, zeros, zeros, zeros, flip, (1.0 - flip) * centre_y)
    if params.rotation:  # a fraction of a full turn, either way
        angle = _uniform(seeds[_ROTATION], count, -params.rotation, params.rotation) * 2.0 * math.pi
        cos, sin = tf.cos(angle), tf.sin(angle)
        result = result @ matrix(cos, -sin, centre_x - centre_x * cos + centre_y * sin,
                                 sin, cos, centre_y - centre_x * sin - centre_y * cos)
    if params.zoom:  # a factor over 1 samples a larger area: zooms out
        zoom = _uniform(seeds[_ZOOM], count, 1.0 - params.zoom, 1.0 + params.zoom)
        result = result @ matrix(zoom, zeros, centre_x * (1.0 - zoom), zeros, zoom, centre_y * (1.0 - zoom))
    if params.translation:  # a fraction of the side, either way
        shift = tf.random.stateless_uniform([2, count], seed=seeds[_TRANSLATION], minval=-params.translation,
                                            maxval=params.translation)
        result = result @ matrix(ones, zeros, -shift[0] * width, zeros, ones, -shift[1] * height)
    return result


def mixing_weights(params: AugmentParams, seed: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """Each image's share of itself in a mix, Beta(alpha, alpha); drawn outside XLA, which has no Gamma kernel."""
    if not params.mixing:
        return tf.ones([count])
    seeds = tf.random.experimental.stateless_split(seed, _SUB_SEEDS)
    return _beta(seeds[_WEIGHT], count, params.mixup or params.cutmix)


def draw(params: AugmentParams, seed: tf.Tensor, count: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
         weight: tf.Tensor) -> dict[str, tf.Tensor]:
    """The random parameters of one batch's augmentation, from its seed (shape [2]) and mixing weights alone."""
    seeds = tf.random.experimental.stateless_split(seed, _SUB_SEEDS)
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    draws: dict[str, tf.Tensor] = {}
    if _moves_pixels(params):
        draws["matrix"] = _affine_matrices(params, seeds, count, height, width)
    if params.contrast:
        draws["contrast"] = _uniform(seeds[_CONTRAST], count, 1.0 - params.contrast, 1.0 + params.contrast)
    if params.brightness:
        draws["brightness"] = _uniform(seeds[_BRIGHTNESS], count, -params.brightness, params.brightness) * 255.0
    if params.mixing:
        draws["partner"] = tf.argsort(_uniform(seeds[_PARTNER], count))
        draws["weight"] = weight
    if params.cutmix:
        # a box of the partner is pasted in: its sides are sqrt(1 - weight) of the image's, clipped at the edges
        side = tf.sqrt(1.0 - draws["weight"])
        centre = tf.random.stateless_uniform([2, count], seed=seeds[_BOX])
        top, bottom = [tf.clip_by_value(tf.round((centre[0] + sign * side / 2) * height), 0.0, height)
                       for sign in (-1.0, 1.0)]
        left, right = [tf.clip_by_value(tf.round((centre[1] + sign * side / 2) * width), 0.0, width)
                       for sign in (-1.0, 1.0)]
        draws["box"] = tf.stack([top, bottom, left, right], axis=1)
        draws["weight"] = 1.0 - (bottom - top) * (right - left) / (height * width)
    return draws


def _reflect(index: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Indices outside [0, size) mirrored back in (d c b a | a b c d | d c b a), as Keras' fill_mode="reflect"."""
    index = tf.math.floormod(index, 2 * size)
    return tf.where(index >= size, 2 * size - 1 - index, index)


def _warp(values: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling of float images [batch, h, w, c] at the points the matrices map each pixel to."""
    shape = tf.shape(values)
    count, height, width = shape[0], shape[1], shape[2]
    rows, columns = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    source_x = (matrices[:, 0, 0, None, None] * columns + matrices[:, 0, 1, None, None] * rows
                + matrices[:, 0, 2, None, None])
    source_y = (matrices[:, 1, 0, None, None] * columns + matrices[:, 1, 1, None, None] * rows
                + matrices[:, 1, 2, None, None])
    left, top = tf.floor(source_x), tf.floor(source_y)
    share_x, share_y = (source_x - left)[..., None], (source_y - top)[..., None]
    left, top = tf.cast(left, tf.int32), tf.cast(top, tf.int32)
    right, bottom = _reflect(left + 1, width), _reflect(top + 1, height)
    left, top = _reflect(left, width), _reflect(top, height)
    offsets = (tf.range(count) * height * width)[:, None, None]
    pixels = tf.reshape(values, [-1, shape[3]])

    def at(row: tf.Tensor, column: tf.Tensor) -> tf.Tensor:
        return tf.gather(pixels, offsets + row * width + column)

    upper = at(top, left) * (1.0 - share_x) + at(top, right) * share_x
    lower = at(bottom, left) * (1.0 - share_x) + at(bottom, right) * share_x
    return upper * (1.0 - share_y) + lower * share_y


def _channel_means(values: tf.Tensor) -> tf.Tensor:
    """Mean of each channel of each image, [batch, 1, 1, c], as a product with a vector: under XLA on a CPU
    that is 2.5 times faster than reduce_mean over two axes."""
    shape = tf.shape(values)
    pixels = shape[1] * shape[2]
    flat = tf.reshape(values, [shape[0], pixels, shape[3]])
    means = tf.einsum("bpc,p->bc", flat, tf.fill([pixels], 1.0 / tf.cast(pixels, tf.float32)))
    return means[:, None, None, :]


def _apply(images: tf.Tensor, draws: dict[str, tf.Tensor]) -> tf.Tensor:
    """uint8 images and their draws -> augmented uint8 images."""
    values = tf.cast(images, tf.float32)
    if "matrix" in draws:
        values = _warp(values, draws["matrix"])
    if "contrast" in draws:
        factor = draws["contrast"][:, None, None, None]
        mean = _channel_means(values)
        values = tf.clip_by_value((values - mean) * factor + mean, 0.0, 255.0)
    if "brightness" in draws:
        values = tf.clip_by_value(values + draws["brightness"][:, None, None, None], 0.0, 255.0)
    if "box" in draws:
        box = draws["box"]
        rows = tf.cast(tf.range(tf.shape(values)[1]), tf.float32)[None, :, None]
        columns = tf.cast(tf.range(tf.shape(values)[2]), tf.float32)[None, None, :]
        inside = ((rows >= box[:, 0, None, None]) & (rows < box[:, 1, None, None])
                  & (columns >= box[:, 2, None, None]) & (columns < box[:, 3, None, None]))
        values = tf.where(inside[..., None], tf.gather(values, draws["partner"]), values)
    elif "weight" in draws:
        weight = draws["weight"][:, None, None, None]
        values = values * weight + tf.gather(values, draws["partner"]) * (1.0 - weight)
    # back to uint8: the model does its own rescaling, whatever feeds it
    return tf.cast(tf.clip_by_value(tf.round(values), 0.0, 255.0), tf.uint8)


def augmenter(params: AugmentParams, num_classes: int) -> Augmenter:
    """A function (uint8 images, int labels, seed [2]) -> (uint8 images, labels), one graph per batch shape.

    Labels stay class indices, unless params mix images (mixup, cutmix): then they are float one-hot rows
    mixed in the same shares as the pixels.
    """

    @tf.function(jit_compile=True)
    def transform(images: tf.Tensor, seed: tf.Tensor, weight: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        shape = tf.shape(images)
        draws = draw(params, seed, shape[0], shape[1], shape[2], weight)
        return _apply(images, draws), draws.get("weight", weight), draws.get("partner", tf.range(shape[0]))

    @tf.function
    def augment(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, weight, partner = transform(images, seed, mixing_weights(params, seed, tf.shape(images)[0]))
        if params.mixing:  # multi-label rows arrive multi-hot (float) already
            one_hot = labels if labels.dtype.is_floating else tf.one_hot(labels, num_classes)
            labels = one_hot * weight[:, None] + tf.gather(one_hot, partner) * (1.0 - weight[:, None])
        return images, labels

    return augment
