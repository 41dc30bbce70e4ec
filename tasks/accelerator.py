"""Finds the accelerators of the running Keras backend and sets precision, XLA and multi-device training; reads and writes nothing."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import keras

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    backend: str
    gpus: int
    precision: str  # a keras.mixed_precision policy name
    jit_compile: bool


def _tensorflow_gpus() -> list[Any]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:  # take memory as needed instead of all of it at start
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: the setting can no longer change
            pass
    return gpus


def _gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability (major, minor) of each visible GPU, for the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        capabilities = []
        for gpu in _tensorflow_gpus():
            details = tf.config.experimental.get_device_details(gpu)
            capabilities.append(tuple(details.get("compute_capability", (0, 0))))
        return capabilities
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        return [tuple(int(part) for part in str(getattr(device, "compute_capability", "0.0")).split(".")[:2])
                for device in gpus]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_capability(index) for index in range(torch.cuda.device_count())]
    return []


def choose_precision(requested: str, capabilities: list[tuple[int, int]]) -> str:
    """`auto`: bfloat16 mixed precision on GPUs that have it (Ampere, 8.0, and newer), float16 on Volta/Turing, else float32."""
    if requested != "auto":
        return requested
    if capabilities and min(capabilities) >= (8, 0):
        return "mixed_bfloat16"
    if capabilities and min(capabilities) >= (7, 0):
        return "mixed_float16"
    return "float32"


def plan(precision: str = "auto", jit_compile: str = "auto") -> Plan:
    """Decide how to train here; `auto` means the fast settings on a GPU and the safe ones on a CPU."""
    capabilities = _gpu_capabilities()
    chosen_precision = choose_precision(precision, capabilities)
    use_jit = bool(capabilities) if jit_compile == "auto" else jit_compile == "true"
    result = Plan(keras.backend.backend(), len(capabilities), chosen_precision, use_jit)
    logger.info("training on %s with %d GPU(s), precision %s, XLA %s", result.backend, result.gpus,
                result.precision, "on" if result.jit_compile else "off")
    return result


@dataclass(frozen=True)
class Distribution:
    scope: Callable[[], contextlib.AbstractContextManager]  # build, compile and fit the model inside scope()
    replicas: int  # the global batch is this many times the per-device batch


def apply(training_plan: Plan) -> Distribution:
    """Set the precision policy and choose how to spread training over the visible devices.

    One device: nothing to do. Several GPUs: MirroredStrategy (TensorFlow) or DataParallel (JAX).
    Several machines: set TF_CONFIG on each (see README) and the TensorFlow backend uses
    MultiWorkerMirroredStrategy.
    """
    keras.mixed_precision.set_global_policy(training_plan.precision)
    if training_plan.backend == "tensorflow" and (os.environ.get("TF_CONFIG") or training_plan.gpus > 1):
        import tensorflow as tf

        strategy = (tf.distribute.MultiWorkerMirroredStrategy() if os.environ.get("TF_CONFIG")
                    else tf.distribute.MirroredStrategy())
        logger.info("distributing over %d replicas with %s", strategy.num_replicas_in_sync, type(strategy).__name__)
        return Distribution(strategy.scope, strategy.num_replicas_in_sync)
    if training_plan.backend == "jax" and training_plan.gpus > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return Distribution(contextlib.nullcontext, training_plan.gpus)
    return Distribution(contextlib.nullcontext, 1)
