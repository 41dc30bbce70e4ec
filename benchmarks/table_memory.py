"""Peak memory and time of the stages' table work at 10^5-10^6 images, on a generated manifest (no image files).

    .venv/bin/python benchmarks/table_memory.py                       # 1,000,000 rows: preprocess and ingest
    .venv/bin/python benchmarks/table_memory.py --rows 100000 --only preprocess
    .venv/bin/python benchmarks/table_memory.py --rows 1000000 --subjects 10    # 10 images per subject

A manifest with the columns tasks/manifest.py writes is generated (1% of the images near-duplicates of another),
then each step runs in a fresh Python process, which reports its peak RSS (ru_maxrss), its RSS after the imports,
and its wall time:
  preprocess first  preprocess.run on the manifest, from nothing, with a pretrained backbone as train.model: the
                    features route decodes nothing, so this is the stage's table work only (split, tables, reports)
  preprocess +1%    the same after 1% new images (a tenth of them near-duplicates of existing images); the time
                    of assign_splits is reported on its own
  ingest tables     ingest's table code at that size without image files: the last manifest read and written,
                    the raw store's locations (state.stored_locations), the ingest state read
  ingest run        ingest.run itself after 1% of the source's files were removed, on a source scan made up in
                    memory (layout.scan replaced; the shards the manifest names are sparse files of their size),
                    so every table step of a changed run runs and no file is read
Target (issue 26): every stage's peak RSS <= 2 GiB at 10^6 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

SHARD_IMAGES = 5000  # images per raw shard in the generated manifest
IMAGE_BYTES = 6000
CLASSES = 10
MTIME_NS = 1_700_000_000_000_000_000


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _hex(generator: np.random.Generator, count: int, size: int) -> np.ndarray:
    return np.frombuffer(generator.bytes(count * size), dtype=f"S{size}").astype(object)


def generate(first: int, stop: int, seed: int, subjects: int, existing: int) -> "pd.DataFrame":
    """Manifest rows first..stop-1 (in path order within the set); 1% of them near-duplicates of an earlier row
    (for rows past `existing`, of a row before `existing`, so a new image joins an existing group)."""
    import pandas as pd

    generator = np.random.default_rng(seed)
    count = stop - first
    index = np.arange(first, stop)
    sha256 = np.array([bytes.hex(value) for value in _hex(generator, count, 32)], dtype=object)
    phash = np.array([bytes.hex(value) for value in _hex(generator, count, 8)], dtype=object)
    labels = np.array([f"class_{label}" for label in range(CLASSES)], dtype=object)[index % CLASSES]
    table = pd.DataFrame({
        "path": [f"class_{number % CLASSES}/image_{number:08d}.jpg" for number in index.tolist()],
        "label": labels, "sha256": sha256,
        "shard": [f"shard-{number // SHARD_IMAGES:06d}.tar" for number in index.tolist()],
        "offset": (index % SHARD_IMAGES) * (IMAGE_BYTES + 1024), "bytes": np.full(count, IMAGE_BYTES),
        "width": generator.integers(48, 97, count), "height": generator.integers(48, 97, count),
        "format": "JPEG", "mode": "RGB", "orientation": 1, "phash": phash, "group": sha256, "split": "",
        "subject": "", "link_target": ""})
    if subjects:
        table["subject"] = [f"subject{number // subjects:07d}" for number in index.tolist()]
    return table


def near_duplicates(table: "pd.DataFrame", pool: "pd.DataFrame", seed: int) -> "pd.DataFrame":
    """Make 1% of `table`'s rows near-duplicates of a row of `pool` (their group the leader's sha256)."""
    generator = np.random.default_rng(seed + 1)
    chosen = generator.choice(len(table), size=max(1, len(table) // 100), replace=False)
    leaders = generator.choice(len(pool), size=len(chosen), replace=True)
    group = table["group"].to_numpy(dtype=object).copy()
    group[chosen] = pool["sha256"].to_numpy(dtype=object)[leaders]
    return table.assign(group=group)


def write_manifests(folder: Path, rows: int, subjects: int) -> tuple[Path, Path]:
    """The manifest of `rows` images and the one after 1% more (sorted by path, as ingest writes it)."""
    import pandas as pd

    from tasks import manifest as manifest_file

    base = generate(0, rows, 1, subjects, rows)
    base = near_duplicates(base, base, 1)
    grown = generate(rows, rows + rows // 100, 2, subjects, rows)
    grown = near_duplicates(grown, base, 2)  # new near-duplicates of existing images: they join existing groups
    first, more = folder / "manifest-first.parquet", folder / "manifest-more.parquet"
    manifest_file.write(first, base.sort_values("path", kind="stable").reset_index(drop=True))
    manifest_file.write(more, pd.concat([base, grown]).sort_values("path", kind="stable").reset_index(drop=True))
    return first, more


def _child(step: str, root: Path, manifest: Path) -> dict:
    """One step in this (fresh) process; what it measured."""
    started_rss = _rss_kib()
    import shutil
    import logging

    logging.basicConfig(level=logging.WARNING)
    from tasks.config import parse_config
    from tasks.paths import Paths

    config = parse_config({})
    paths = Paths(config.paths, root)
    paths.manifest.parent.mkdir(parents=True, exist_ok=True)
    if step != "ingest run":  # the manifest the setup left, not rewritten (its shards would be verified)
        shutil.copyfile(manifest, paths.manifest)
    result: dict = {"step": step}
    if step.startswith("preprocess"):
        from tasks.preprocess import stage as preprocess

        timed: dict[str, float] = {}
        real = preprocess.assign_splits

        def timing(*arguments, **keywords):
            began, cpu = time.perf_counter(), time.process_time()
            try:
                return real(*arguments, **keywords)
            finally:
                timed["assign_splits_s"] = time.perf_counter() - began
                timed["assign_splits_cpu_s"] = time.process_time() - cpu  # what a shared machine's load leaves alone

        preprocess.assign_splits = timing
        result["rss_after_imports_mib"] = _rss_kib() / 1024
        began = time.perf_counter()
        table = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths,
                               model="efficientnet_lite2", weights="auto")
        result["wall_s"] = time.perf_counter() - began
        result["rows"] = len(table)
        result.update(timed)
        result["split_table_mib"] = (paths.processed / "split.parquet").stat().st_size / 2**20
    else:
        result.update({"ingest setup": _ingest_setup, "ingest tables": _ingest_tables,
                       "ingest run": _ingest_run}[step](config, paths))
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    result["code"] = str(Path(sys.modules["tasks"].__file__).parent.parent)
    result["rss_at_start_mib"] = started_rss / 1024
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _ingest_setup(config, paths) -> dict:
    """What the last ingest left, made up from the manifest: its state table, its summary and its shards (sparse
    files of the size the manifest needs: nothing is read from them)."""
    from tasks import manifest as manifest_file
    from tasks.ingest import examine, state

    paths.raw.mkdir(parents=True, exist_ok=True)
    manifest = manifest_file.read(paths.manifest)
    sizes = (manifest["offset"] + manifest["bytes"]).groupby(manifest["shard"]).max() + 2**16
    for shard, size in sizes.items():
        with open(paths.raw / shard, "wb") as handle:
            handle.truncate(int(size))
    os.utime(paths.manifest)  # written after the shards: they are not verified
    checks = examine.checks(config.ingest.max_pixels, config.ingest.min_side, config.ingest.max_file_bytes)
    records = manifest[["path", "bytes", "sha256", "width", "height", "format", "mode", "orientation", "phash"]].assign(
        source_path=manifest["path"], checks=checks, size=manifest["bytes"], mtime_ns=MTIME_NS, reason="", detail="")
    state.write(paths.ingest_state, records)
    paths.ingest_summary.write_text(json.dumps({"settings": None}))  # not the run of nothing changed
    (paths.root / "source").mkdir(exist_ok=True)
    return {}


def _ingest_tables(config, paths) -> dict:
    """The manifest read and written, the raw store's locations from it, the ingest state read."""
    from tasks import manifest as manifest_file
    from tasks.ingest import state

    measured: dict = {}
    began = time.perf_counter()
    manifest = manifest_file.read(paths.manifest)
    manifest_file.write(paths.interim / "manifest-copy.parquet", manifest)
    measured["manifest_read_write_s"] = time.perf_counter() - began
    del manifest
    began = time.perf_counter()
    locations, _ = state.stored_locations(paths.manifest, paths.raw)
    measured["stored_locations_s"] = time.perf_counter() - began
    measured["locations"] = len(locations)
    del locations
    began = time.perf_counter()
    measured["state_rows"] = len(state.load(paths.ingest_state))
    measured["state_load_s"] = time.perf_counter() - began
    return measured


def _ingest_run(config, paths) -> dict:
    """ingest.run after 1% of the source's files were removed, on a source scan made up from the manifest (what
    layout.scan would list: one SourceFile per file), so that every table step of a changed run runs."""
    import pyarrow.parquet as pq

    from tasks.ingest import layout
    from tasks.ingest import stage as ingest

    source = paths.root / "source"
    listed = pq.read_table(paths.manifest, columns=["path", "label", "bytes"])
    files = [layout.SourceFile(f"{source}/{path}", path, label, size, MTIME_NS)
             for index, (path, label, size) in enumerate(zip(listed.column("path").to_pylist(),
                                                             listed.column("label").to_pylist(),
                                                             listed.column("bytes").to_pylist())) if index % 100]
    del listed
    scanned = layout.SourceScan(layout="classes", root=str(source), files=files)
    layout.scan = lambda *arguments, **keywords: scanned
    measured = {"rss_with_the_scan_mib": _rss_kib() / 1024, "files": len(files)}
    del files
    params = config.ingest.model_copy(update={"source": str(source), "workers": 1})
    began = time.perf_counter()
    measured["manifest_rows"] = len(ingest.run(params, paths))
    measured["ingest_run_s"] = time.perf_counter() - began
    return measured


def _run_child(step: str, root: Path, manifest: Path) -> dict:
    command = [sys.executable, __file__, "--child", step, "--root", str(root), "--manifest", str(manifest)]
    environment = dict(os.environ, PYTHONPATH=str(PROJECT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{step} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=0, help="images per subject (the label table's group)")
    parser.add_argument("--only", choices=["preprocess", "ingest"], default=None)
    parser.add_argument("--child", default=None)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--manifest", type=Path, default=None)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(_child(arguments.child, arguments.root, arguments.manifest)))
        return
    with tempfile.TemporaryDirectory(prefix="table-memory-") as work:
        folder = Path(work)
        began = time.perf_counter()
        first, more = write_manifests(folder, arguments.rows, arguments.subjects)
        print(f"manifests of {arguments.rows} and {arguments.rows + arguments.rows // 100} rows written in "
              f"{time.perf_counter() - began:.1f} s", flush=True)
        results = []
        if arguments.only in (None, "preprocess"):
            (folder / "preprocess" / "data").mkdir(parents=True)
            results.append(_run_child("preprocess first", folder / "preprocess", first))
            print(json.dumps(results[-1]), flush=True)
            results.append(_run_child("preprocess +1%", folder / "preprocess", more))
            print(json.dumps(results[-1]), flush=True)
        if arguments.only in (None, "ingest"):
            (folder / "ingest" / "data").mkdir(parents=True)
            _run_child("ingest setup", folder / "ingest", more)
            for step in ("ingest tables", "ingest run"):
                results.append(_run_child(step, folder / "ingest", more))
                print(json.dumps(results[-1]), flush=True)
        worst = max(result["peak_rss_mib"] for result in results)
        print(f"largest peak RSS {worst:.0f} MiB (target <= 2048 MiB: {'ok' if worst <= 2048 else 'MISSED'})")


if __name__ == "__main__":
    main()
