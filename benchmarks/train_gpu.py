"""Training throughput benchmark: imgpipe's feeding (uint8 batches, rescaled inside the model) against plain `fit`.

For each model and image size, in one run: training images per second of
  (a) plain `model.fit` on float32 NumPy arrays (values 0-255) of the same model, float32 weights;
  (b) imgpipe's way: uint8 batches, the rescale inside the model, the precision `train.precision: auto` picks
      (bf16 on Ampere and newer GPUs), XLA, several steps per execution;
and (b)/(a), plus the model FLOPs utilisation of (b) against --peak-tflops. Backend-agnostic: meant for
`KERAS_BACKEND=jax` on a GPU machine (no TensorFlow there), and runs on a CPU with small sizes too:

    KERAS_BACKEND=jax python benchmarks/train_gpu.py --sizes 64 128 224 --peak-tflops 989
    .venv/bin/python benchmarks/train_gpu.py --sizes 32 --models simple_cnn --images 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tasks.params import TrainParams  # noqa: E402
from tasks import accelerator, networks  # noqa: E402

NUM_CLASSES = 10


def forward_flops(network: keras.Model) -> float:
    """Multiply-adds x 2 of the convolution and dense layers for one image (training is about 3x this)."""
    total = 0.0
    for layer in _leaf_layers(network):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
            output_shape = layer.output.shape
            spatial = float(np.prod(output_shape[1:3]))
            kernel = float(np.prod(layer.kernel_size))
            input_channels = layer.input.shape[-1]
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                total += 2 * spatial * kernel * input_channels * layer.depth_multiplier
            elif isinstance(layer, keras.layers.SeparableConv2D):
                total += 2 * spatial * (kernel * input_channels + input_channels * output_shape[-1])
            else:
                total += 2 * spatial * kernel * input_channels * output_shape[-1] / layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def _leaf_layers(network: keras.Model):
    for layer in network.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def images_per_second(network: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int,
                      epochs: int) -> float:
    network.fit(images[: batch_size * 2], labels[: batch_size * 2], batch_size=batch_size, epochs=1, verbose=0)
    started = time.perf_counter()
    network.fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0)
    return len(images) * epochs / (time.perf_counter() - started)


def measure(model_name: str, image_size: int, arguments: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    uint8_images = rng.integers(0, 256, (arguments.images, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, arguments.images)
    params = TrainParams(model=model_name)

    keras.mixed_precision.set_global_policy("float32")
    plain = networks.build(params, image_size, NUM_CLASSES)
    plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    plain_rate = images_per_second(plain, uint8_images.astype(np.float32), labels, arguments.batch_size,
                                   arguments.epochs)
    flops = forward_flops(plain)
    del plain

    plan = accelerator.plan("auto", "auto")
    accelerator.apply(plan)
    fed = networks.build(params, image_size, NUM_CLASSES)
    fed.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=plan.jit_compile,
                steps_per_execution=arguments.steps_per_execution)
    fed_rate = images_per_second(fed, uint8_images, labels, arguments.batch_size, arguments.epochs)
    keras.mixed_precision.set_global_policy("float32")
    utilisation = 3 * flops * fed_rate / (arguments.peak_tflops * 1e12) if arguments.peak_tflops else None
    return {"model": model_name, "image_size": image_size, "plain_fit_float32": round(plain_rate, 1),
            "imgpipe": round(fed_rate, 1), "precision": plan.precision, "speedup": round(fed_rate / plain_rate, 2),
            "gflops_per_image": round(flops / 1e9, 3), "mfu": None if utilisation is None else round(utilisation, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["simple_cnn", *networks.BACKBONES])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 224])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-execution", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="dense bf16 peak, e.g. 989 for an H100 SXM")
    parser.add_argument("--target", type=float, default=1.5, help="required imgpipe/plain ratio for backbones")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    arguments = parser.parse_args()
    results = [measure(name, size, arguments) for name in arguments.models for size in arguments.sizes]
    print(f"backend {keras.backend.backend()}, batch {arguments.batch_size}, {arguments.images} images x "
          f"{arguments.epochs} epochs")
    print(f"{'model':<20}{'px':>5}{'plain fit/s':>13}{'imgpipe/s':>11}{'ratio':>7}  precision        MFU")
    for row in results:
        mfu = "" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(f"{row['model']:<20}{row['image_size']:>5}{row['plain_fit_float32']:>13.1f}{row['imgpipe']:>11.1f}"
              f"{row['speedup']:>7.2f}  {row['precision']:<16} {mfu}")
    if arguments.out:
        arguments.out.write_text(json.dumps(results, indent=2))
    short = [row for row in results if row["model"] in networks.BACKBONES and row["speedup"] < arguments.target]
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
