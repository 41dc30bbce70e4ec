"""The pipeline at scale, through real `dvc repro` in copies of this project; writes --work-dir/results.json.

    .venv/bin/python benchmarks/scale.py --work-dir /tmp/scale                     # data stages, 10^5 thumbnails
    .venv/bin/python benchmarks/scale.py --files 1000000 --work-dir /tmp/scale6    # data stages at 10^6
    .venv/bin/python benchmarks/scale.py --photo-pipeline --work-dir /tmp/photo    # photos up to evaluate, 10^5
    .venv/bin/python benchmarks/scale.py --camera 10000 --work-dir /tmp/camera     # camera JPEGs: the decode cost
    .venv/bin/python benchmarks/scale.py --dask --data-stages --photo-pipeline ... # also on a local Dask cluster

Scenarios (the data stages run when no other scenario is named, or with --data-stages):
  data stages   --files generated thumbnails (48-96 px, distinct noise each, 10 class folders): a Pillow decode loop
                over them on all cores (the baseline), then `dvc repro preprocess` (ingest, validate, preprocess)
                from nothing, again with nothing changed, and after adding 1% new images; `dvc push` after the first
                and after the +1% run; the bytes on disk against the source.
  photo         --files generated photo-sized images (160-400 px, so train.model auto takes the pretrained backbone):
                `dvc repro evaluate` (the defaults: embed, a head on the features, evaluate) first and after +1%.
                The backbone's weights are the ImageNet ones installed with imgpipe (no download).
  camera        --camera N generated camera-sized JPEGs (3,000-4,000 px): the first `dvc repro preprocess` against
                the decode loop, in CPU seconds (the decode cost that thumbnails hide).
  --dask        the data stages (and the photo pipeline when asked) again in another copy whose params name a Dask
                LocalCluster this script starts (2 workers of 1 thread, on 127.0.0.1) as ingest.scheduler,
                preprocess.scheduler and embed.scheduler, as a user names a real cluster; the manifest, split table and
                embeddings must hash the same as the local run's, at >= 0.8x its speed (wall clock). The Dask
                copy of the photo project names the embed engine the local run chose (embed.engine), so both
                compute alike.
Every run records each stage's wall and CPU seconds and the peak RSS of its largest process (the stage's Python
under a small timer that tasks/bin/python runs through IMGPIPE_PYTHON). The script exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tasks import metrics_file  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
CLASSES = 10
PHOTO_COLOURS = [(200, 40, 40), (40, 160, 40), (40, 60, 200), (220, 200, 40), (200, 60, 200), (40, 190, 190),
                 (240, 140, 30), (120, 70, 30), (160, 160, 160), (30, 30, 30)]
CAMERA_BYTES_GUESS = 2_500_000  # per generated camera JPEG, for the free-space check before writing them


# ---------------------------------------------------------------- generated images

def _thumbnail(generator: np.random.Generator, index: int) -> Image.Image:
    """48-96 px of noise around a colour: distinct bytes and perceptual hashes."""
    side = int(generator.integers(48, 97))
    base = np.array([(index * 37) % 256, (index * 91) % 256, (index % CLASSES) * 25], dtype=np.float64)
    return Image.fromarray(np.clip(base + generator.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8))


def _smooth_field(generator: np.random.Generator, index: int, size: tuple[int, int], spread: float) -> Image.Image:
    """The class's colour with random low-frequency variation (its own perceptual hash), at `size`."""
    coarse = np.array(PHOTO_COLOURS[index % CLASSES], dtype=np.float64) + generator.normal(0, spread, (6, 8, 3))
    return Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)


def _photo(generator: np.random.Generator, index: int) -> Image.Image:
    """160-400 px a side (median short side about 230 px: train.model auto takes the pretrained backbone)."""
    width, height = (int(side) for side in generator.integers(160, 401, 2))
    # classes far apart in colour: a head on the features scores over 0.99, so train keeps it without challengers
    pixels = np.asarray(_smooth_field(generator, index, (width, height), 20), dtype=np.float64)
    return Image.fromarray(np.clip(pixels + generator.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8))


_NOISE_TILE: list[Image.Image] = []  # one per process: camera images add a shifted copy of it (all in Pillow's C)


def _camera(generator: np.random.Generator, index: int) -> Image.Image:
    """3,000-4,000 px on the long side, 4:3, a quarter of them portrait, with fine sensor-like noise."""
    if not _NOISE_TILE:
        noise = np.random.default_rng(0).normal(128, 5, (512, 512, 3))
        _NOISE_TILE.append(Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)))
    long_side = int(generator.integers(3000, 4001))
    size = (long_side, long_side * 3 // 4) if index % 4 != 3 else (long_side * 3 // 4, long_side)
    noise = Image.new("RGB", size)
    shift = [int(value) for value in generator.integers(0, 512, 2)]
    for left in range(-shift[0], size[0], 512):
        for top in range(-shift[1], size[1], 512):
            noise.paste(_NOISE_TILE[0], (left, top))
    return ImageChops.add(_smooth_field(generator, index, size, 45), noise, scale=1.0, offset=-128)


KINDS = {"thumbnail": (_thumbnail, 2000, 85), "photo": (_photo, 500, 90), "camera": (_camera, 5, 92)}


def _write_images(job: tuple[str, str, int, int, int]) -> int:
    root, kind, start, stop, seed = job
    draw, _, quality = KINDS[kind]
    generator = np.random.default_rng(seed)
    for index in range(start, stop):
        draw(generator, index).save(Path(root) / f"class_{index % CLASSES}" / f"image_{index:08d}.jpg",
                                    quality=quality)
    return stop - start


def generate(root: Path, kind: str, start: int, stop: int, seed: int) -> None:
    """Write images start..stop-1 of a set (`kind`: thumbnail, photo or camera) into 10 class folders, unless an
    earlier run into the same --work-dir wrote the very same ones (its marker file says so)."""
    marker = root / f".generated-{kind}-{start}-{stop}-{seed}"
    if marker.is_file():
        print(f"  {stop - start:,} {kind} images already generated in {root} ({marker.name})")
        return
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
    step = KINDS[kind][1]
    jobs = [(str(root), kind, first, min(first + step, stop), seed * 1_000_003 + first)
            for first in range(start, stop, step)]
    with multiprocessing.get_context("spawn").Pool() as workers:
        for _ in workers.imap_unordered(_write_images, jobs):
            pass
    marker.touch()


# ---------------------------------------------------------------- the baseline

def _decode(path: str) -> int:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB").width


def pillow_baseline(root: Path) -> dict[str, float]:
    """Wall and CPU seconds (the workers') of a Pillow decode loop (open, load, RGB) over every file, all cores."""
    files = [str(path) for path in sorted(root.rglob("*.jpg"))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool() as workers:
        list(workers.imap(_decode, files, chunksize=max(1, min(256, len(files) // 64))))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": time.perf_counter() - started, "cpu": _cpu(after) - _cpu(before)}


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- projects and DVC runs

# Run by tasks/bin/python (through IMGPIPE_PYTHON) in place of the stage's Python: appends the stage's wall and CPU
# seconds and the peak RSS of its largest process (wait4 folds in the workers it waited for) to a log.
STAGE_TIMER = """#!{python}
import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawn({python!r}, [{python!r}, *sys.argv[1:]], os.environ)
_, status, usage = os.wait4(pid, 0)
stage = sys.argv[sys.argv.index("-m") + 1].removeprefix("tasks.") if "-m" in sys.argv else " ".join(sys.argv[1:])
with open(os.environ["SCALE_STAGE_LOG"], "a") as log:
    log.write(json.dumps({{"stage": stage, "wall": time.perf_counter() - started,
                          "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}}) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Run:
    """One `dvc ...` command: wall and CPU seconds (DVC and the stages), and each stage that ran."""

    wall: float
    cpu: float
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    cluster_cpu: float = 0.0  # CPU seconds the Dask cluster's processes spent meanwhile
    output: str = ""

    def figures(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if name != "output"}


def copy_project(target: Path, overrides: dict[str, Any]) -> None:
    """A git repository holding this project's code (no data, benchmarks or tests), params.yaml with `overrides`
    (dotted keys), and its own DVC remote beside it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (PROJECT / name).is_file() and not name.startswith(("data/", "benchmarks/", "tests/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, target / name)
    params = yaml.safe_load((target / "params.yaml").read_text())
    for key, value in overrides.items():
        *sections, last = key.split(".")
        section = params
        for name in sections:
            section = section[name]
        section[last] = value
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    timer = target.parent / f"{target.name}-stage-timer"
    timer.write_text(STAGE_TIMER.format(python=sys.executable))
    timer.chmod(0o755)
    for command in (["git", "init", "--quiet"], ["git", "add", "--all"],
                    ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "--quiet",
                     "-m", "benchmark copy"]):
        subprocess.run(command, cwd=target, check=True)
    dvc(target, "remote", "modify", "local", "url", str(target.parent / f"{target.name}-remote"))
    dvc(target, "repro", "demo")  # its note, so that the runs measured start at ingest


def dvc(root: Path, *arguments: str, cluster: subprocess.Popen | None = None) -> Run:
    """Run `dvc ARGUMENTS` in root, its stages under the stage timer."""
    log = root.parent / f"{root.name}-stages.jsonl"
    log.unlink(missing_ok=True)
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                       TF_CPP_MIN_LOG_LEVEL="2", SCALE_STAGE_LOG=str(log),
                       IMGPIPE_PYTHON=str(root.parent / f"{root.name}-stage-timer"))
    cluster_before = cluster_cpu(cluster)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=root, env=environment,
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(arguments)} in {root} failed:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-5000:]}")
    stages = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            stages[record.pop("stage")] = record
    return Run(wall, _cpu(after) - _cpu(before), stages, cluster_cpu(cluster) - cluster_before,
               result.stdout + result.stderr)


def folder_bytes(*folders: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes on disk of the folders together, each file (inode) counted once: hard links are not two copies (nor
    are files already in `seen`, which this adds to)."""
    seen, total = set() if seen is None else seen, 0
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                facts = os.lstat(os.path.join(directory, name))
                if (facts.st_dev, facts.st_ino) not in seen:
                    seen.add((facts.st_dev, facts.st_ino))
                    total += facts.st_blocks * 512
    return total


def project_bytes(project: Path) -> dict[str, int]:
    """Bytes of each folder of data/, then of DVC's cache beyond them (older versions, copies), and the total."""
    seen: set[tuple[int, int]] = set()
    parts = {folder.name: folder_bytes(folder, seen=seen) for folder in sorted((project / "data").iterdir())
             if folder.is_dir()}
    parts["DVC cache beyond data/"] = folder_bytes(project / ".dvc/cache", seen=seen)
    return parts | {"total": sum(parts.values())}


def show_bytes(parts: dict[str, int], source_bytes: int) -> None:
    shown = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in parts.items() if name != "total" and size > 1e5)
    print(f"  source {source_bytes / 1e6:.0f} MB; data/ + DVC cache {parts['total'] / 1e6:.0f} MB "
          f"({parts['total'] / source_bytes:.2f}x, hard links once): {shown} MB")


def raw_store_bytes(raw: Path) -> int:
    """Bytes the raw store takes in the workspace and DVC's cache together: a shard hard-linked into the cache is
    one copy, one that is not (DVC copied it) is two."""
    return sum(os.lstat(raw / name).st_blocks * 512 * (1 if os.lstat(raw / name).st_nlink > 1 else 2)
               for name in os.listdir(raw))


def require_free(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(f"{what} needs about {needed / 1e9:.0f} GB on {folder}; {free / 1e9:.0f} GB are free: "
                         "give --work-dir on a larger disk, or fewer images")


# ---------------------------------------------------------------- a Dask cluster of this machine

CLUSTER = """
import sys
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
cluster.close()
"""


@contextlib.contextmanager
def dask_cluster(project: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A LocalCluster in its own process whose workers import `project`'s code (its address, the process)."""
    environment = dict(os.environ, PYTHONPATH=str(project), TF_CPP_MIN_LOG_LEVEL="2")
    with open(project.parent / f"{project.name}-cluster.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", CLUSTER], cwd=project, env=environment, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        try:
            address = process.stdout.readline().strip()
            if not address.startswith("tcp://"):
                raise RuntimeError(f"the Dask cluster did not start; see {log.name}")
            yield address, process
        finally:
            process.stdin.close()
            process.wait(timeout=120)


def cluster_cpu(process: subprocess.Popen | None) -> float:
    """CPU seconds of the cluster's process and its workers so far."""
    if process is None:
        return 0.0
    import psutil  # installed with distributed, which --dask needs anyway

    try:
        processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for each in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


# ---------------------------------------------------------------- what the runs built

def table_digest(path: Path) -> str:
    """sha256 of a Parquet table's content, rows sorted by sha256 (and path): the same table however it was built."""
    table = pd.read_parquet(path)
    table = table.sort_values([column for column in ("sha256", "path") if column in table.columns], kind="stable")
    return hashlib.sha256(table[sorted(table.columns)].to_csv(index=False).encode()).hexdigest()


def embeddings(folder: Path) -> dict[str, bytes]:
    """sha256 -> the stored features' bytes (float16), over every shard of data/embeddings/."""
    found: dict[str, bytes] = {}
    for path in sorted(folder.glob("features-*.parquet")):
        table = pq.read_table(path)
        found.update(zip(table.column("sha256").to_pylist(), table.column("features").to_pylist()))
    return found


def embeddings_digest(stored: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for sha256 in sorted(stored):
        digest.update(sha256.encode() + stored[sha256])
    return digest.hexdigest()


def digests(project: Path, with_embeddings: bool) -> dict[str, str]:
    found = {"manifest": table_digest(project / "data/interim/manifest.parquet"),
             "split table": table_digest(project / "data/processed/split.parquet")}
    if with_embeddings:
        found["embeddings"] = embeddings_digest(embeddings(project / "data/embeddings"))
    return found


def largest_feature_difference(first: Path, second: Path) -> float:
    """The largest difference between two projects' features of the same image (when their hashes differ)."""
    one, other = embeddings(first / "data/embeddings"), embeddings(second / "data/embeddings")
    shared = sorted(set(one) & set(other))
    if not shared:
        return float("nan")
    def values(stored: dict[str, bytes]) -> np.ndarray:
        return np.frombuffer(b"".join(stored[key] for key in shared), "<f2").astype(np.float32)

    return float(np.abs(values(one) - values(other)).max())


def preprocess_choice(project: Path) -> str:
    summary = json.loads((project / "data/processed/preprocess.json").read_text())
    return f"{summary['model']['model']} ({summary['model']['route']}, {summary['image_size']} px)"


# ---------------------------------------------------------------- the scenarios

@dataclass
class Result:
    """What one scenario measured: figures for results.json, and its checks (name, met, value shown)."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


def show_run(title: str, run: Run) -> None:
    cluster = f", Dask cluster {run.cluster_cpu:.1f} CPU s" if run.cluster_cpu else ""
    print(f"  {title:<44}{run.wall:>9.1f} s wall{run.cpu:>9.1f} CPU s{cluster}")
    for stage, figures in run.stages.items():
        print(f"      {stage:<40}{figures['wall']:>9.1f} s wall{figures['cpu']:>9.1f} CPU s"
              f"{figures['peak_rss_mib']:>8.0f} MiB peak")
    stage_wall = sum(figures["wall"] for figures in run.stages.values())
    if run.stages:
        print(f"      {'DVC itself (the rest)':<40}{run.wall - stage_wall:>9.1f} s wall")


def dask_comparison(result: Result, local: Path, remote: Path, local_run: Run, dask_run: Run, when: str,
                    with_embeddings: bool) -> None:
    """Hashes of the local and the Dask project's tables (and embeddings); the Dask run's speed against the local."""
    ours, theirs = digests(local, with_embeddings), digests(remote, with_embeddings)
    speed = local_run.wall / dask_run.wall
    print(f"  Dask against local, {when}: speed {speed:.2f}x (local {local_run.wall:.1f} s, "
          f"Dask {dask_run.wall:.1f} s)")
    for name in ours:
        same = ours[name] == theirs[name]
        print(f"      {name}: {'same' if same else 'DIFFERENT'} ({ours[name][:12]} / {theirs[name][:12]})")
        result.checks.append((f"Dask, {when}: same {name}", same, ours[name][:12] if same else "differs"))
    if with_embeddings and ours["embeddings"] != theirs["embeddings"]:
        print(f"      largest feature difference: {largest_feature_difference(local, remote):.3g}")
    result.figures[f"dask {when}"] = {"speed": speed, "local": local_run.figures(),
                                      "dask": dask_run.figures(), "local digests": ours,
                                      "dask digests": theirs}
    result.checks.append((f"Dask, {when}: >= 0.8x the local speed", speed >= 0.8, f"{speed:.2f}x"))


def dask_repro(result: Result, project: Path, dask_project: Path, cluster: subprocess.Popen, target: str,
               local_run: Run, title: str, when: str, with_embeddings: bool) -> Run:
    """`dvc repro TARGET` in the Dask copy, shown and compared with the local run just made."""
    dask_run = dvc(dask_project, "repro", target, cluster=cluster)
    show_run(f"Dask: {title}", dask_run)
    dask_comparison(result, project, dask_project, local_run, dask_run, when, with_embeddings)
    return dask_run


def data_stages(work: Path, files: int, use_dask: bool, model: str) -> Result:
    """Thumbnails through ingest, validate and preprocess: first, nothing changed, +1%; push; bytes; Dask."""
    result = Result("data stages")
    source, project, added = work / "thumbnails", work / "data-project", max(1, files // 100)
    overrides = {"ingest.source": str(source), "preprocess.image_size": 32, "train.model": model,
                 "validate.min_images_per_class": min(10, max(1, files // CLASSES))}
    started = time.perf_counter()
    generate(source, "thumbnail", 0, files, seed=1)
    print(f"\n== data stages: {files:,} thumbnails (48-96 px), generated in {time.perf_counter() - started:.0f} s; "
          f"source {folder_bytes(source) / 1e6:.0f} MB")
    baseline = pillow_baseline(source)
    print(f"  {'baseline: Pillow decode loop, all cores':<44}{baseline['wall']:>9.1f} s wall"
          f"{baseline['cpu']:>9.1f} CPU s")
    copy_project(project, overrides)
    with contextlib.ExitStack() as stack:
        if use_dask:
            dask_project = work / "data-project-dask"
            cluster = stack.enter_context(dask_cluster_for(dask_project, overrides, ("ingest", "preprocess")))
        first = dvc(project, "repro", "preprocess")
        show_run("first: dvc repro preprocess", first)
        print(f"  preprocess chose {preprocess_choice(project)}")
        if use_dask:
            dask_repro(result, project, dask_project, cluster, "preprocess", first,
                       "first dvc repro preprocess", "first run", False)
        again = dvc(project, "repro", "preprocess")
        show_run("again, nothing changed", again)
        push = dvc(project, "push")
        remote_first = folder_bytes(work / "data-project-remote")
        print(f"  first dvc push {push.wall:.1f} s, {remote_first / 1e6:.0f} MB in the remote")

        generate(source, "thumbnail", files, files + added, seed=2)
        more = dvc(project, "repro", "preprocess")
        show_run(f"+1% ({added:,} images): dvc repro preprocess", more)
        if use_dask:
            dask_repro(result, project, dask_project, cluster, "preprocess", more,
                       f"+1% ({added:,} images)", "+1%", False)
    pushed = dvc(project, "push")
    pushed_bytes = folder_bytes(work / "data-project-remote") - remote_first
    print(f"  push after +1%: {pushed.wall:.1f} s, {pushed_bytes / 1e6:.1f} MB ({pushed_bytes / remote_first:.1%} "
          "of the first push)")
    source_bytes, parts = folder_bytes(source), project_bytes(project)
    show_bytes(parts, source_bytes)
    raw_bytes = raw_store_bytes(project / "data/raw")
    print(f"  the raw store alone, in data/ and DVC's cache: {raw_bytes / 1e6:.0f} MB "
          f"({raw_bytes / source_bytes:.2f}x)")

    result.figures = {"files": files, "added": added, "source_bytes": source_bytes, "baseline": baseline,
                      "first": first.figures(), "again": again.figures(),
                      "plus_1_percent": more.figures(), "first_push_bytes": remote_first,
                      "push_after_plus_1_percent_bytes": pushed_bytes, "project_bytes": parts,
                      "raw_store_bytes": raw_bytes, "choice": preprocess_choice(project), **result.figures}
    nothing_limit = 15 if files <= 100_000 else 60
    result.checks += [
        ("first run <= 2x the decode loop in CPU seconds", first.cpu <= 2 * baseline["cpu"],
         f"{first.cpu / baseline['cpu']:.2f}x ({first.wall / baseline['wall']:.2f}x on the wall clock)"),
        (f"nothing changed < {nothing_limit} s", again.wall < nothing_limit, f"{again.wall:.1f} s"),
        ("+1% <= 5% of the first + 10 s", more.wall <= 0.05 * first.wall + 10,
         f"{more.wall:.1f} s (limit {0.05 * first.wall + 10:.1f} s)"),
        ("data/ + DVC cache <= 1.1x the source", parts["total"] <= 1.1 * source_bytes,
         f"{parts['total'] / source_bytes:.2f}x"),
        ("push after +1% <= 3% of the first push", pushed_bytes <= 0.03 * remote_first,
         f"{pushed_bytes / remote_first:.1%}")]
    if files <= 100_000:
        result.checks.append(("+1% <= 15 s (10^5)", more.wall <= 15, f"{more.wall:.1f} s"))
    if set(again.stages) != {"ingest"}:
        print("  note: the nothing-changed run ran more than ingest:\n" + again.output[-2000:])
    return result


@contextlib.contextmanager
def dask_cluster_for(project: Path, overrides: dict[str, Any],
                     stages: tuple[str, ...]) -> Iterator[subprocess.Popen]:
    """A copy of the project whose `stages` name a new local Dask cluster as their scheduler (the cluster runs)."""
    project.mkdir(parents=True)
    with dask_cluster(project) as (address, process):
        copy_project(project, overrides | {f"{stage}.scheduler": address for stage in stages})
        print(f"  Dask LocalCluster at {address} (2 workers, 1 thread each) for {', '.join(stages)}")
        yield process


def photo_pipeline(work: Path, files: int, use_dask: bool) -> Result:
    """Photo-sized images through `dvc repro evaluate` with the defaults: first, then +1% (its backbone pass)."""
    result = Result("photo pipeline")
    source, project, added = work / "photos", work / "photo-project", max(1, files // 100)
    overrides = {"ingest.source": str(source), "validate.min_images_per_class": min(10, max(1, files // CLASSES))}
    started = time.perf_counter()
    generate(source, "photo", 0, files, seed=3)
    print(f"\n== photo pipeline: {files:,} photos (160-400 px), generated in {time.perf_counter() - started:.0f} s; "
          f"source {folder_bytes(source) / 1e6:.0f} MB")
    copy_project(project, overrides)
    first = dvc(project, "repro", "evaluate")
    show_run("first: dvc repro evaluate", first)
    engine = json.loads((project / "data/embeddings/embeddings.json").read_text())["engine"]["spec"]
    print(f"  preprocess chose {preprocess_choice(project)}; embed engine {engine['engine']} {engine['precision']}")
    with contextlib.ExitStack() as stack:
        if use_dask:  # told the engine the local run chose, so that both compute with the same code
            dask_project = work / "photo-project-dask"
            cluster = stack.enter_context(dask_cluster_for(dask_project, overrides | {"embed.engine": engine["engine"]},
                                                           ("ingest", "preprocess", "embed")))
            dask_repro(result, project, dask_project, cluster, "evaluate", first,
                       "first dvc repro evaluate", "photos, first run", True)
        generate(source, "photo", files, files + added, seed=4)
        more = dvc(project, "repro", "evaluate")
        show_run(f"+1% ({added:,} photos): dvc repro evaluate", more)
        if use_dask:
            dask_repro(result, project, dask_project, cluster, "evaluate", more,
                       f"+1% ({added:,} photos)", "photos, +1%", True)
    card = json.loads((project / "data/models/candidate/model_card.json").read_text())
    metrics = metrics_file.read(project / "data/reports/evaluation")  # plain names (test_accuracy in the file)
    challengers = card.get("challengers", {})
    print(f"  train kept {challengers.get('kept')} (challengers tried: {challengers.get('tried')}); test accuracy "
          f"{metrics.get('accuracy', float('nan')):.3f}")
    embed_first, embed_more = first.stages.get("embed", {}), more.stages.get("embed", {})
    if embed_first and embed_more:
        print(f"  backbone pass (the embed stage): first run {embed_first['cpu'] / files * 1000:.1f} CPU ms per image "
              f"(engine choice included); +1%: {embed_more['wall']:.1f} s wall, {embed_more['cpu']:.1f} CPU s for "
              f"{added:,} new images")
    source_bytes, parts = folder_bytes(source), project_bytes(project)
    show_bytes(parts, source_bytes)
    limit = 1.1 * source_bytes + parts["embeddings"]
    result.figures = {"files": files, "added": added, "source_bytes": source_bytes,
                      "first": first.figures(), "plus_1_percent": more.figures(),
                      "project_bytes": parts, "choice": preprocess_choice(project), "engine": engine,
                      "challengers": challengers, "metrics": metrics, **result.figures}
    result.checks += [
        ("+1% <= 10% of the first run", more.wall <= 0.1 * first.wall,
         f"{more.wall:.1f} s ({more.wall / first.wall:.1%} of {first.wall:.1f} s)"),
        ("data/ + DVC cache <= 1.1x the source + the embeddings", parts["total"] <= limit,
         f"{parts['total'] / 1e6:.0f} MB (limit {limit / 1e6:.0f} MB)")]
    return result


def camera(work: Path, count: int, model: str) -> Result:
    """Camera-sized JPEGs: the first `dvc repro preprocess` against the decode loop, in CPU seconds."""
    result = Result("camera")
    source, project = work / "camera", work / "camera-project"
    work.mkdir(parents=True, exist_ok=True)
    require_free(work, int(count * CAMERA_BYTES_GUESS * 2.2), f"{count:,} camera JPEGs and their raw store")
    started = time.perf_counter()
    generate(source, "camera", 0, count, seed=5)
    source_bytes = folder_bytes(source)
    print(f"\n== camera: {count:,} JPEGs of 3,000-4,000 px, generated in {time.perf_counter() - started:.0f} s; "
          f"source {source_bytes / 1e6:.0f} MB ({source_bytes / count / 1e6:.1f} MB each)")
    baseline = pillow_baseline(source)
    print(f"  {'baseline: Pillow decode loop, all cores':<44}{baseline['wall']:>9.1f} s wall"
          f"{baseline['cpu']:>9.1f} CPU s "
          f"({baseline['cpu'] / count * 1000:.0f} CPU ms per image)")
    copy_project(project, {"ingest.source": str(source), "train.model": model,
                           "validate.min_images_per_class": min(10, max(1, count // CLASSES))})  # 10 by default
    first = dvc(project, "repro", "preprocess")
    show_run("first: dvc repro preprocess", first)
    print(f"  preprocess chose {preprocess_choice(project)}")
    result.figures = {"files": count, "source_bytes": source_bytes, "baseline": baseline,
                      "first": first.figures(), "choice": preprocess_choice(project)}
    result.checks.append(("first run <= 2x the decode loop in CPU seconds", first.cpu <= 2 * baseline["cpu"],
                          f"{first.cpu / baseline['cpu']:.2f}x ({first.wall / baseline['wall']:.2f}x on the wall)"))
    return result


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="images of the data stages and the photo run")
    parser.add_argument("--data-stages", action="store_true", help="run the data stages (the default scenario)")
    parser.add_argument("--photo-pipeline", action="store_true", help="photo-sized images up to evaluate")
    parser.add_argument("--camera", type=int, default=0, metavar="N",
                        help="N camera-sized JPEGs (10000 for the record)")
    parser.add_argument("--dask", action="store_true", help="also on a local Dask cluster, compared with the local run")
    parser.add_argument("--model", default="auto",
                        help="train.model of the data stages and the camera run (auto: the defaults, under which "
                        "preprocess decodes nothing for photo-sized images; simple_cnn: it decodes them)")
    parser.add_argument("--work-dir", type=Path, help="where to build everything (default: a temporary folder, "
                        "deleted at the end)")
    arguments = parser.parse_args()
    work = arguments.work_dir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    run_data = arguments.data_stages or not (arguments.photo_pipeline or arguments.camera)
    load_start = os.getloadavg()
    print(f"{machine.cpu_model()}, {os.cpu_count()} cores; load average {load_start[0]:.1f} at the start")

    results = []
    if run_data:
        results.append(data_stages(work, arguments.files, arguments.dask, arguments.model))
    if arguments.photo_pipeline:
        results.append(photo_pipeline(work, arguments.files, arguments.dask))
    if arguments.camera:
        results.append(camera(work, arguments.camera, arguments.model))

    load_end = os.getloadavg()
    print(f"\nload average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end\n")
    for result in results:
        for name, met, value in result.checks:
            print(f"{'ok    ' if met else 'MISSED'} {result.name}: {name}: {value}")
    report = {"machine": f"{machine.cpu_model()}, {os.cpu_count()} cores", "arguments": vars(arguments) | {
        "work_dir": str(work)}, "load_average": {"start": load_start, "end": load_end},
        "scenarios": {result.name: {"figures": result.figures, "checks": result.checks} for result in results}}
    (work / "results.json").write_text(json.dumps(report, indent=2, default=str))
    if arguments.work_dir:
        print(f"\nfigures: {work / 'results.json'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(met for result in results for _, met, _ in result.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
