"""The data layer at scale, through real `dvc repro` in a copy of this project: first run, nothing changed, +1%.

    .venv/bin/python benchmarks/scale.py                    # 100,000 generated JPEGs
    .venv/bin/python benchmarks/scale.py --files 1000000    # a million (about an hour on 2 cores)

Generates small JPEGs with distinct content in 10 class folders, then, in one run:
  baseline  a plain Pillow decode loop (open, load, RGB) over the same files on all cores
  first     `dvc repro preprocess` (ingest + validate + preprocess) from nothing
  again     the same with nothing changed
  +1%       the same after adding 1% new images
and `dvc push` after the first run and after the +1% run, with the bytes each sent; the bytes in the project
folder (workspace and DVC cache, hard links counted once) against the source; peak memory of the stages.
Targets (the script exits 1 when one is missed): first <= 1.5x baseline; +1% <= 5% of first + 10 s;
again < 15 s (10^5 files) or < 60 s (10^6); the raw store in the project (workspace + cache) <= 1.1x the source;
the push after +1% <= 3% of the first push.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

PROJECT = Path(__file__).resolve().parent.parent
CLASSES = 10


def _write_images(job: tuple[str, int, int, int]) -> int:
    """Write images start..stop-1 of the set: 48-96 px JPEGs, each with its own noise (distinct bytes and hashes)."""
    root, start, stop, seed = job
    generator = np.random.default_rng(seed)
    for index in range(start, stop):
        side = int(generator.integers(48, 97))
        base = np.array([(index * 37) % 256, (index * 91) % 256, (index % CLASSES) * 25], dtype=np.float64)
        pixels = np.clip(base + generator.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8)
        folder = Path(root) / f"class_{index % CLASSES}"
        Image.fromarray(pixels).save(folder / f"image_{index:08d}.jpg", quality=85)
    return stop - start


def generate(root: Path, start: int, stop: int, seed: int) -> None:
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
    step = 2000
    jobs = [(str(root), first, min(first + step, stop), seed * 1_000_003 + first) for first in range(start, stop, step)]
    with multiprocessing.get_context("spawn").Pool() as workers:
        for _ in workers.imap_unordered(_write_images, jobs):
            pass


def _decode(path: str) -> int:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB").width


def pillow_baseline(root: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the workers') of a Pillow decode loop over every file, on all cores."""
    files = [str(path) for path in sorted(root.rglob("*.jpg"))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool() as workers:
        list(workers.imap(_decode, files, chunksize=256))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - started, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def copy_project(target: Path, source: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (PROJECT / name).is_file() and not name.startswith(("data/", "benchmarks/", "tests/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, target / name)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)
    params["preprocess"]["image_size"] = 32
    params["validate"]["min_images_per_class"] = 10
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remote = target.parent / "remote"
    for command in (["git", "init", "--quiet"], ["git", "add", "--all"],
                    ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "--quiet",
                     "-m", "benchmark copy"]):
        subprocess.run(command, cwd=target, check=True)
    dvc(target, "remote", "modify", "local", "url", str(remote))


def dvc(root: Path, *arguments: str) -> tuple[float, float, str]:
    """Run `dvc ARGUMENTS` in root; return wall seconds, CPU seconds of the process tree, and the output."""
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                       TF_CPP_MIN_LOG_LEVEL="2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=root, env=environment,
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(arguments)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout + result.stderr


def folder_bytes(*folders: Path) -> int:
    """Bytes on disk of the folders together, each file (inode) counted once: hard links are not two copies."""
    seen, total = set(), 0
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                facts = os.lstat(os.path.join(directory, name))
                if (facts.st_dev, facts.st_ino) not in seen:
                    seen.add((facts.st_dev, facts.st_ino))
                    total += facts.st_blocks * 512
    return total


def raw_store_bytes(raw: Path) -> int:
    """Bytes the raw store takes in the workspace and DVC's cache together: a shard hard-linked into the cache is
    one copy, one that is not (DVC copied it) is two."""
    total = 0
    for name in os.listdir(raw):
        facts = os.lstat(raw / name)
        total += facts.st_blocks * 512 * (1 if facts.st_nlink > 1 else 2)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--work-dir", type=Path, help="where to build everything (default: a temporary folder)")
    arguments = parser.parse_args()
    work = arguments.work_dir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-scale-"))
    source, project = work / "source", work / "project"
    files, added = arguments.files, max(1, arguments.files // 100)
    print(f"{machine.cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start")
    started = time.perf_counter()
    generate(source, 0, files, seed=1)
    print(f"generated {files} JPEGs in {time.perf_counter() - started:.0f} s; source {folder_bytes(source) / 1e6:.0f} MB")
    baseline, baseline_cpu = pillow_baseline(source)
    print(f"baseline: Pillow decode loop on all cores: {baseline:.1f} s ({files / baseline:.0f} files/s), "
          f"{baseline_cpu:.1f} CPU s")

    project.mkdir(parents=True)
    copy_project(project, source)
    dvc(project, "repro", "demo")
    first_wall, first_cpu, _ = dvc(project, "repro", "preprocess")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    again_wall, again_cpu, again_log = dvc(project, "repro", "preprocess")
    push_wall, _, push_log = dvc(project, "push")
    remote_first = folder_bytes(work / "remote")
    source_bytes = folder_bytes(source)
    raw_bytes = raw_store_bytes(project / "data" / "raw")
    project_bytes = folder_bytes(project / "data", project / ".dvc" / "cache")

    generate(source, files, files + added, seed=2)
    more_wall, more_cpu, _ = dvc(project, "repro", "preprocess")
    dvc(project, "push")
    remote_after = folder_bytes(work / "remote")
    pushed_share = (remote_after - remote_first) / remote_first

    rows = [("baseline: Pillow decode loop, all cores", baseline, baseline_cpu),
            ("first: dvc repro preprocess (ingest+validate+preprocess)", first_wall, first_cpu),
            ("again, nothing changed", again_wall, again_cpu),
            (f"+1% ({added} images), dvc repro preprocess", more_wall, more_cpu)]
    print(f"\n{'step':<58}{'wall s':>9}{'CPU s':>9}")
    for name, wall, cpu in rows:
        print(f"{name:<58}{wall:>9.1f}{cpu:>9.1f}")
    print(f"first dvc push: {push_wall:.1f} s, {remote_first / 1e6:.0f} MB in the remote")
    print(f"push after +1%: {(remote_after - remote_first) / 1e6:.1f} MB ({pushed_share:.1%} of the first push)")
    print(f"source {source_bytes / 1e6:.0f} MB; raw store in the project (workspace + cache) {raw_bytes / 1e6:.0f} MB "
          f"({raw_bytes / source_bytes:.2f}x); all of data/ + cache {project_bytes / 1e6:.0f} MB "
          f"({project_bytes / source_bytes:.2f}x; the rest is decoded pixels at 32 px, models and reports)")
    print(f"peak RSS of a stage process: {peak_mib:.0f} MiB; shards: {len(os.listdir(project / 'data' / 'raw'))} raw, "
          f"{len([name for name in os.listdir(project / 'data' / 'processed') if name.endswith('.tfrecord')])} decoded")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    nothing_limit = 15 if files <= 100_000 else 60
    print(f"first / baseline: {first_wall / baseline:.2f} on the wall clock, {first_cpu / baseline_cpu:.2f} in CPU "
          "seconds (a busy machine disturbs the latter far less)")
    checks = [("first <= 1.5x baseline", first_wall <= 1.5 * baseline, first_wall / baseline),
              ("+1% <= 5% of first + 10 s", more_wall <= 0.05 * first_wall + 10, more_wall),
              (f"nothing changed < {nothing_limit} s", again_wall < nothing_limit, again_wall),
              ("raw store <= 1.1x source", raw_bytes <= 1.1 * source_bytes, raw_bytes / source_bytes),
              ("push after +1% <= 3% of the first", pushed_share <= 0.03, pushed_share)]
    print()
    for name, passed, value in checks:
        print(f"{'ok    ' if passed else 'MISSED'} {name}: {value:.3g}")
    if "didn't change" not in again_log and "skipping" not in again_log:
        print("note: the nothing-changed run did not skip its later stages:\n" + again_log[-2000:])
    if not arguments.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
