"""Keeps TensorFlow's C++ start-up noise (absl's lines, CUDA probes on a machine without a GPU) out of a process's
stderr: routes file descriptor 2 through a filter thread; reads and writes nothing else."""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import threading

# TensorFlow's start-up lines from absl, which TF_CPP_MIN_LOG_LEVEL cannot silence, and its CUDA probes, which print
# errors on a machine without a GPU; written by C++ straight to file descriptor 2
NATIVE_NOISE = re.compile(r"^(?:[IW]\d{4} |WARNING: All log messages before absl|"
                          r"E\d{4} .*(?:cuInit|cuda|cuDNN|cuFFT|cuBLAS|CUDA))")


def filter_stderr() -> None:
    """Route file descriptor 2 through a filter that drops NATIVE_NOISE lines (TensorFlow writes them from C++,
    below Python's sys.stderr); Python's own output (logging, tracebacks) goes to the real stderr directly."""
    if os.name != "posix" or getattr(filter_stderr, "original", None) is not None:
        return
    if sys.stderr is not sys.__stderr__:  # captured (a test) or redirected by an embedding program: leave it
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(original, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    filter_stderr.original = original

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NATIVE_NOISE.match(line.decode("utf-8", "replace")):
                    os.write(original, line)

    forwarding = threading.Thread(target=pump, name="native-stderr-filter", daemon=True)
    # started with SIGINT and SIGTERM blocked, which it inherits: it must never be the thread that takes them
    # (serve takes Ctrl-C in a thread of its own; flows/deploy.py)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        forwarding.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def restore() -> None:  # at exit: give fd 2 back, and let the filter pass on what it still holds
        os.dup2(original, 2)
        forwarding.join(timeout=1.0)

    atexit.register(restore)
