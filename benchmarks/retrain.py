"""A scheduled retrain after 1% new photos, through real `dvc repro` in a copy of this project, against the first run.

    .venv/bin/python benchmarks/retrain.py [--copies 1] [--params train.model=efficientnet_lite0 ...]

The clothing photos (713, ../shared/datasets/clothing-dataset-small, both published splits in one folder per class,
imgpipe's own split), each stage run by `dvc repro --single-item` in pipeline order so that its CPU seconds (the
stage's process tree) are known:
  first   every stage from nothing, with the defaults (params.yaml as it is, or --params)
  +1%     after 1% new photos: copies of existing photos with new content (mirrored, brightened, re-encoded)
  again   nothing changed
With --copies N the photo set is N copies of itself, each copy with new content, for a larger first run.
Target (issue 22): the +1% run's CPU seconds <= 10% of the first run's. The pretrained weights and their exports are
cached per machine (imgpipe's cache), so the first run is measured with that cache warm; `--cold-cache` points
IMGPIPE_CACHE at an empty folder instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)
import scale  # noqa: E402  (the project copy and `dvc` runner of the scale benchmark)

STAGES = ["demo", "ingest", "validate", "preprocess", "embed", "train", "evaluate"]


def with_new_content(source: Path, target: Path, variant: int) -> None:
    """A photo that is not a byte copy of `source`: mirrored, a little brighter, re-encoded as JPEG."""
    with Image.open(source) as image:
        picture = ImageOps.mirror(image.convert("RGB")) if variant % 2 == 0 else image.convert("RGB")
        pixels = np.clip(np.asarray(picture, dtype=np.float64) * (1.0 + 0.04 * (variant + 1)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(target, quality=88)


def gather(target: Path, copies: int) -> list[Path]:
    """The photos in one folder per class; each copy after the first with new content."""
    photos = sorted(machine.PHOTOS.glob("*/*/*.jpg"))
    written = []
    for copy in range(copies):
        for photo in photos:
            folder = target / photo.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            name = folder / f"{photo.parent.parent.name}_{copy}_{photo.name}"
            if copy == 0:
                shutil.copyfile(photo, name)
            else:
                with_new_content(photo, name, copy)
            written.append(name)
    return written


def run_stages(project: Path) -> tuple[dict[str, tuple[float, float]], str]:
    """Each stage in order by `dvc repro --single-item`: {stage: (wall, CPU seconds)} and the logs."""
    figures, logs = {}, []
    for stage in STAGES:
        wall, cpu, log = scale.dvc(project, "repro", "--single-item", stage)
        figures[stage] = (wall, cpu)
        logs.append(log)
    return figures, "\n".join(logs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1, help="the photo set this many times, with new content")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE", help="params.yaml changes")
    parser.add_argument("--cold-cache", action="store_true", help="an empty imgpipe cache (weights converted again)")
    parser.add_argument("--work-dir", type=Path, help="where to build everything (default: a temporary folder)")
    arguments = parser.parse_args()
    if not machine.PHOTOS.is_dir():
        print(f"skipped: {machine.PHOTOS} not found (the clothing photos are not part of a clone)")
        return 0
    work = arguments.work_dir or Path(tempfile.mkdtemp(prefix="imgpipe-bench-retrain-"))
    if arguments.cold_cache:
        os.environ["IMGPIPE_CACHE"] = str(work / "cache")
    source, project = work / "source", work / "project"
    photos = gather(source, arguments.copies)
    print(f"{machine.cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start; "
          f"{len(photos)} photos")
    project.mkdir(parents=True)
    scale.copy_project(project, source)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["preprocess"]["image_size"] = "auto"  # scale.copy_project sets 32 px for its thumbnails
    for setting in arguments.params:
        key, _, value = setting.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    started = time.perf_counter()
    first, first_log = run_stages(project)
    print(f"first run: {time.perf_counter() - started:.0f} s")
    added = max(1, len(photos) // 100)
    chosen = photos[:: max(1, len(photos) // added)][:added]
    for index, photo in enumerate(chosen):
        with_new_content(photo, photo.with_name(f"new_{index}_{photo.name}"), 7 + index)
    more, more_log = run_stages(project)
    again, _ = run_stages(project)

    print(f"\n{'stage':<12}{'first wall':>11}{'first CPU':>11}{'+1% wall':>10}{'+1% CPU':>10}{'again wall':>11}")
    for stage in STAGES:
        print(f"{stage:<12}{first[stage][0]:>11.1f}{first[stage][1]:>11.1f}{more[stage][0]:>10.1f}"
              f"{more[stage][1]:>10.1f}{again[stage][0]:>11.1f}")
    totals = [sum(figures[stage][index] for stage in STAGES) for figures in (first, more, again) for index in (0, 1)]
    print(f"{'total':<12}{totals[0]:>11.1f}{totals[1]:>11.1f}{totals[2]:>10.1f}{totals[3]:>10.1f}{totals[4]:>11.1f}")
    ratio = totals[3] / totals[1]
    print(f"\n+1% ({added} new photos) / first, CPU seconds: {ratio:.1%} (target <= 10%); wall {totals[2] / totals[0]:.1%}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    card = yaml.safe_load((project / "data/models/candidate/model_card.json").read_text())
    print(f"model: {card['model']}, kept {card['validation']['phase']}; embed log lines:")
    for line in (first_log + more_log).splitlines():
        if "tasks.embed.stage: embed:" in line or "train: kept" in line or "the head alone" in line:
            print("  " + line)
    if not arguments.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ratio <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
