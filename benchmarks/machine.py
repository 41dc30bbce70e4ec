"""What the benchmarks share: where the real photos are, and what machine a figure was measured on."""

from __future__ import annotations

import platform
from pathlib import Path

# 713 JPEG photos in 10 classes, beside a developer's checkout (not part of a clone: benchmarks skip without it)
PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "clothing-dataset-small"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
