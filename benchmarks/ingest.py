"""Ingest speed against a plain Pillow loop over the same files, in the same run; figures go in BENCHMARKS.md.

    .venv/bin/python benchmarks/ingest.py [--files 5000] [--source DIR] [--repeat 3]
    .venv/bin/python benchmarks/ingest.py --scale 100000

Measures, in files per second over one set of image files (real photos replicated, or --source):
  (a) baseline: `Image.open(path).load()` in a loop, one core
  (b) ingest.examine per file, one core: sha256, header checks, a decode of all the data, perceptual hash
  (c) the whole ingest.run (walk, examine, store in data/raw's shards, manifest), workers=1 and workers=all cores
  (d) for reference: a plain loop reading the same files into tar shards (what writing data/raw costs), one core
  (e) for reference: ingest's parallel check alone (examine over tasks/pool.py, no store), workers=1 and all cores
and exits non-zero when (b)/(a) or (c, all cores)/((a) x cores) is under 0.8, or scaling is under 0.8 x cores.
--scale N instead ingests N tiny generated PNGs once, with all cores, and reports time and peak memory.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, without installing
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tasks import pool  # noqa: E402
from tasks.ingest import examine, stage  # noqa: E402
from tasks.ingest.layout import SourceFile, scan  # noqa: E402

if TYPE_CHECKING:
    from tasks.params import IngestParams

PHOTOS = machine.PHOTOS  # 713 JPEG photos in 10 classes, when present
TARGET = 0.8


def unique_jpeg(data: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment after SOI: other bytes (a new sha256), the same pixels."""
    comment = tag.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def replicate_photos(photos: Path, target: Path, files: int) -> None:
    originals = sorted(photos.rglob("*.jpg"))
    for index in range(files):
        original = originals[index % len(originals)]
        copy = target / original.parent.name / f"{original.stem}_{index // len(originals)}.jpg"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(unique_jpeg(original.read_bytes(), f"copy {index}"))


def generate_images(target: Path, files: int, side: int, suffix: str, classes: int = 10) -> None:
    """Smooth random pictures (unique per file), `classes` folders."""
    generator = np.random.default_rng(0)
    for index in range(files):
        patches = generator.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        folder = target / f"class_{index % classes:02d}"
        if index < classes:
            folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(patches).resize((side, side), Image.Resampling.BILINEAR)
        image.save(folder / f"{index:07d}.{suffix}")


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of `work`."""
    started, started_cpu = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - started, cpu_seconds() - started_cpu


def pillow_loop(paths: list[Path]) -> tuple[float, float]:
    def loop() -> None:
        for path in paths:
            with Image.open(path) as image:
                image.load()

    return timed(loop)


def examine_loop(files: list[SourceFile], params: IngestParams) -> tuple[float, float]:
    return timed(lambda: [examine.examine(examine.FileJob(file.location, file.source_path), params.max_pixels,
                                          params.min_side) for file in files])


def store_loop(files: list[SourceFile]) -> tuple[float, float]:
    """Seconds to read the files and append them to tar shards, as the raw store does (its removal not counted)."""
    import hashlib

    from tasks import raw_store

    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-store-") as target:
        def loop() -> None:
            with raw_store.ShardWriter(Path(target), 256 * 2**20) as writer:
                for file in files:
                    data = Path(file.location).read_bytes()
                    writer.add(hashlib.sha256(data).hexdigest(), "jpg", data)

        return timed(loop)


def examine_all_once(files: list[SourceFile], params: IngestParams, workers: int) -> tuple[float, float]:
    """Seconds of ingest's parallel check alone (read, hash, decode, perceptual hash; no store, no manifest)."""
    jobs = [examine.FileJob(file.location, file.source_path) for file in files]
    return timed(lambda: list(pool.ordered_map(examine.Examiner(params.max_pixels, params.min_side), jobs, workers)))


def ingest_once(source: Path, workers: int) -> tuple[float, float]:
    """Seconds of one full ingest.run into a fresh project folder (no cache from an earlier run; its removal
    afterwards not counted)."""
    from tasks import params, paths as project_paths

    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-project-") as project:
        paths = project_paths.Paths(params.PathsParams(), Path(project))
        return timed(lambda: stage.run(params.IngestParams(source=str(source), workers=workers), paths))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{model}; nproc {nproc}; {pool.available_cores()} cores usable; Python {platform.python_version()}"


def burn(count: int) -> int:
    """Pure-Python CPU work, to measure how much parallelism the machine gives right now."""
    total = 0
    for number in range(count):
        total += number * number
    return total


def cpu_rate(workers: int) -> float:
    """Burn tasks per second over `workers` processes (started before timing)."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(burn, [1] * workers))
        started = time.perf_counter()
        list(pool.map(burn, [2_000_000] * (4 * workers)))
        return 4 * workers / (time.perf_counter() - started)


def speed(source: Path, repeat: int) -> bool:
    from tasks.params import IngestParams  # here, not at the top: workers re-import this script, as they would the stage

    cores = pool.available_cores()
    files = scan(source).files
    paths = [file.path for file in files]
    params = IngestParams(source=str(source))
    print(f"{len(files)} files under {source}; {machine()}")
    pillow_loop(paths)  # warm the page cache: every measurement below reads from memory
    measures = {
        "a": ("(a) Pillow open+load loop, 1 core", lambda: pillow_loop(paths)),
        "b": ("(b) ingest.examine, 1 core", lambda: examine_loop(files, params)),
        "c1": ("(c) ingest.run, workers=1", lambda: ingest_once(source, 1)),
        "cn": (f"(c) ingest.run, workers={cores}", lambda: ingest_once(source, cores)),
        "d": ("(d) plain loop into tar shards, 1 core", lambda: store_loop(files)),
        "e1": ("(e) ingest.examine_all, workers=1", lambda: examine_all_once(files, params, 1)),
        "en": (f"(e) ingest.examine_all, workers={cores}", lambda: examine_all_once(files, params, cores)),
    }
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}  # files per CPU second: far less disturbed by other work on a shared machine
    for _ in range(repeat):  # interleaved, so that a busy moment on the machine hits every measurement alike
        for key, (_, work) in measures.items():
            seconds, cpu_used = work()
            wall[key] = max(wall.get(key, 0.0), len(files) / seconds)  # the least disturbed round counts
            cpu[key] = max(cpu.get(key, 0.0), len(files) / cpu_used)
        wall["burn1"] = max(wall.get("burn1", 0.0), cpu_rate(1))
        wall["burnn"] = max(wall.get("burnn", 0.0), cpu_rate(cores))
    print(f"{'':42} {'files/s':>8} {'files/CPU s':>12}")
    for key, (title, _) in measures.items():
        print(f"{title:42} {wall[key]:8.0f} {cpu[key]:12.0f}")
    per_core = wall["b"] / wall["a"]
    whole = wall["cn"] / (wall["a"] * cores)
    scaling = wall["cn"] / wall["c1"]
    capacity = wall["burnn"] / wall["burn1"]  # what the machine gave: other work shares its cores
    load_and_copy = 1 / (1 / wall["a"] + 1 / wall["d"])  # the least a stage that decodes and stores each file costs
    print(f"(b)/(a) = {per_core:.2f} (per CPU s {cpu['b'] / cpu['a']:.2f})")
    print(f"(c, workers={cores})/((a) x {cores}) = {whole:.2f}; (c, workers=1)/(a) = {wall['c1'] / wall['a']:.2f} "
          f"(per CPU s {cpu['c1'] / cpu['a']:.2f}); (c, workers=1)/((a) then (d)) = {wall['c1'] / load_and_copy:.2f}")
    print(f"(e, workers={cores})/((a) x {cores}) = {wall['en'] / (wall['a'] * cores):.2f}")
    print(f"scaling on {cores} cores: (c) {scaling:.2f}x, (e) {wall['en'] / wall['e1']:.2f}x; a CPU-bound burn "
          f"{capacity:.2f}x (the parallelism the machine gave this run)")
    checks = {"(b)/(a)": (per_core, TARGET), f"(c)/((a) x {cores})": (whole, TARGET),
              "(c) scaling": (scaling, TARGET * cores)}
    failed = [f"{name} = {value:.2f} < {target:.2f}" for name, (value, target) in checks.items() if value < target]
    print("targets met" if not failed else "BELOW TARGET: " + "; ".join(failed))
    return not failed


def watch_children(stop: threading.Event, peaks: dict[int, int]) -> None:
    """Record the peak RSS (VmHWM, KiB) of each child process until `stop` is set. ru_maxrss cannot tell it:
    a spawned worker starts as a fork of this process, whose pages it counts before it runs the interpreter anew."""
    parent = str(os.getpid())
    while not stop.wait(0.5):
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:  # gone meanwhile
                continue
            if fields.get("PPid", "").strip() == parent and "VmHWM" in fields:
                pid = int(status.parent.name)
                peaks[pid] = max(peaks.get(pid, 0), int(fields["VmHWM"].split()[0]))


def scale(files: int, work_dir: Path) -> None:
    import pandas as pd

    from tasks import params, paths as project_paths

    source = work_dir / "source"
    started = time.perf_counter()
    generate_images(source, files, side=16, suffix="png", classes=10)
    print(f"generated {files} PNGs (16x16) in {time.perf_counter() - started:.0f}s; {machine()}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stop, worker_peaks = threading.Event(), {}
    watcher = threading.Thread(target=watch_children, args=(stop, worker_peaks), daemon=True)
    watcher.start()
    paths = project_paths.Paths(params.PathsParams(), work_dir / "project")
    seconds, cpu_used = timed(lambda: stage.run(params.IngestParams(source=str(source)), paths))
    stop.set()
    watcher.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manifest_rows = len(pd.read_parquet(paths.manifest)) if paths.manifest.exists() else 0
    print(f"ingest.run over {files} files, {pool.available_cores()} workers: {seconds:.0f}s "
          f"({files / seconds:.0f} files/s, {files / cpu_used:.0f} files per CPU s), "
          f"{manifest_rows} images in the manifest")
    print(f"peak RSS: main process {peak / 1024:.0f} MiB (before ingest {before / 1024:.0f} MiB), "
          f"largest worker {max(worker_peaks.values(), default=0) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000, help="files to build from the photos (default 5000)")
    parser.add_argument("--source", type=Path, help="measure over this folder of class sub-folders instead")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each measurement counts")
    parser.add_argument("--scale", type=int, help="instead: ingest this many generated tiny PNGs, report memory")
    parser.add_argument("--work-dir", type=Path, help="where to build the files (default: a temporary folder)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work_dir = Path(tempfile.mkdtemp(prefix="imgpipe-bench-", dir=arguments.work_dir))
    try:
        if arguments.scale:
            scale(arguments.scale, work_dir)
            return
        source = arguments.source
        if source is None:
            source = work_dir / "source"
            if PHOTOS.is_dir():
                replicate_photos(PHOTOS, source, arguments.files)
            else:
                generate_images(source, arguments.files, side=400, suffix="jpg")
        if not speed(source, arguments.repeat):
            sys.exit(1)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
