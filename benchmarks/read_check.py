"""What checking every raw-store read against its sha256 costs next to decoding the image (issue 27 item 8).

Stores the 713 clothing photos (or, without them, generated 1024 px JPEGs) in a raw store in a temporary folder,
then times, in CPU seconds, (a) the checked reads (tasks/raw_store.Reader: header, name, size and sha256 of each
member) and (b) the decode that every reader does next (tasks/images.decode_array to 224 px, centre crop), both
over every image, best of three. Prints the ratio (a)/(b). Writes nothing outside its temporary folder.

    .venv/bin/python benchmarks/read_check.py
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.machine import PHOTOS, cpu_model
from tasks import images, raw_store

REPEATS = 3


def _photos() -> list[bytes]:
    files = sorted(PHOTOS.rglob("*.jpg")) if PHOTOS.is_dir() else []
    if files:
        return [file.read_bytes() for file in files]
    generator = np.random.default_rng(0)
    generated = []
    for _ in range(100):
        buffer = io.BytesIO()
        Image.fromarray(generator.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(buffer, "JPEG")
        generated.append(buffer.getvalue())
    return generated


def _best_cpu_seconds(work) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    contents = _photos()
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder)
        with raw_store.ShardWriter(raw, 1 << 30) as writer:
            locations = [writer.add(hashlib.sha256(data).hexdigest(), ".jpg", data) for data in contents]

        def checked_reads() -> None:
            with raw_store.Reader(raw) as reader:
                for location in locations:
                    reader.read(location)

        def decodes() -> None:
            for index, data in enumerate(contents):
                images.decode_array(data, f"image-{index}", 224, "crop", 40_000_000)

        reading, decoding = _best_cpu_seconds(checked_reads), _best_cpu_seconds(decodes)
    source = "clothing photos" if PHOTOS.is_dir() else "generated 1024 px JPEGs"
    print(f"{len(contents)} {source}, {sum(map(len, contents)) / 1e6:.1f} MB; {cpu_model()}, {os.cpu_count()} cores")
    print(f"checked reads {reading:.3f} CPU s, decodes {decoding:.3f} CPU s: the check costs "
          f"{reading / decoding:.1%} of the decode (best of {REPEATS})")


if __name__ == "__main__":
    main()
