"""What this machine's CPU offers the inference engines, and how they use its threads (TensorFlow's limit, ONNX Runtime's
session options); reads /proc/cpuinfo, writes nothing. Shared by prediction's engines and the pretrained backbones'
feature engines."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def supports_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is slow or refused."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def limit_tensorflow_threads(threads: int) -> None:
    """Use at most `threads` TensorFlow threads in this process (0: all cores); only before TensorFlow starts."""
    import keras

    if threads <= 0 or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already started in this process: the earlier setting stays
        logger.debug("TensorFlow already started; thread settings unchanged")


def onnxruntime_options(threads: int) -> Any:
    """ONNX Runtime session options for `threads` intra-op threads (0: all cores), spinning off: spinning threads
    burn a shared CPU waiting for work without making a batch faster."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = max(threads, 0)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options
