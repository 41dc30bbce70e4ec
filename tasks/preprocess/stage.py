"""Preprocess stage: reads data/raw/ and the manifest, writes data/processed/ and data/reports/split.json."""

from __future__ import annotations

import functools
import itertools
import logging

import pandas as pd
from tqdm import tqdm

from tasks import atomic, images, pool, shards
from tasks.config import load_config
from tasks.params import GroupBy, PreprocessParams
from tasks.paths import Paths
from tasks.preprocess.split import SPLITS, assign_splits, split_counts, split_report, subjects_for

logger = logging.getLogger(__name__)


def read_subjects(manifest: pd.DataFrame, group_by: GroupBy | None, paths: Paths) -> list[str] | None:
    """Each image's subject as `preprocess.group_by` names it, or None when images are not grouped by subject."""
    if group_by is None:
        return None
    csv_table = None
    if group_by.kind == "csv":
        csv_file = paths.resolve(group_by.csv)
        if not csv_file.is_file():
            raise ValueError(f"preprocess.group_by: {csv_file} not found; give a CSV with a path column and "
                             f"a {group_by.column!r} column, relative to the project root")
        try:
            csv_table = pd.read_csv(csv_file, dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise ValueError(f"preprocess.group_by: {csv_file} is not a readable CSV: {error}") from None
    return subjects_for(manifest, group_by, csv_table)


def run(params: PreprocessParams, seed: int, max_pixels: int, paths: Paths) -> pd.DataFrame:
    """Split the manifest, decode every image once and write each split as a few large shards.

    Also writes the split report (sizes, shares and per-class counts) to data/reports/split.json.
    """
    manifest = pd.read_parquet(paths.manifest)
    if manifest.empty:
        raise ValueError(f"{paths.manifest}: the manifest lists no images; run ingest on a folder of class folders")
    labels = sorted(manifest["label"].unique().tolist())
    label_index = {label: index for index, label in enumerate(labels)}
    subjects = read_subjects(manifest, params.group_by, paths)
    table = assign_splits(manifest, seed, params.val_fraction, params.test_fraction, subjects)
    split_rank = table["split"].map({split: rank for rank, split in enumerate(SPLITS)})
    table = table.assign(split_rank=split_rank).sort_values(["split_rank", "order"], kind="stable")
    table = table.drop(columns="split_rank").reset_index(drop=True)
    table["label_index"] = table["label"].map(label_index).astype("int64")
    # pixels, plus the path, label and record framing stored beside them
    longest_path = int(table["path"].str.encode("utf-8").str.len().max())
    bytes_per_example = params.image_size * params.image_size * 3 + longest_path + 96
    counts = split_counts(table)
    for split in SPLITS:
        missing = [label for label in labels if counts[split].get(label, 0) == 0]
        if missing:
            logger.warning("split %s has no images of class(es) %s; add images or change the fractions", split, missing)

    # one pass over all images (table is sorted by split), so the worker processes start once
    files = [paths.raw / path for path in table["path"]]
    decode = functools.partial(images.load_rgb_array, image_size=params.image_size, resize_mode=params.resize,
                               max_pixels=max_pixels)
    pixels = iter(tqdm(pool.ordered_map(decode, files, params.workers), total=len(files), unit="image",
                       desc="preprocess", disable=None))
    with atomic.atomic_directory(paths.processed) as building:
        shard_paths: dict[str, list[str]] = {}
        for split in SPLITS:
            rows = table[table["split"] == split]
            examples = zip(itertools.islice(pixels, len(rows)), rows["label_index"].tolist(), rows["path"].tolist())
            written = shards.write_split(examples, len(rows), bytes_per_example, params.shard_megabytes * 2**20,
                                         building, split)
            shard_paths[split] = [path.name for path in written]
        atomic.write_parquet(building / "split.parquet",
                             table[["path", "label", "label_index", "split", "group", "unit", "sha256"]])
        atomic.write_json(building / "labels.json", labels)
        atomic.write_json(building / "preprocess.json", {
            "image_size": params.image_size,
            "resize": params.resize,
            "seed": seed,
            "labels": labels,
            "shards": shard_paths,
            "counts": {split: int((table["split"] == split).sum()) for split in SPLITS},
            "counts_per_class": counts,
            "group_by": None if params.group_by is None else str(params.group_by),
        })
    atomic.write_json(paths.reports / "split.json",
                      split_report(table, seed, params.val_fraction, params.test_fraction, params.group_by))
    logger.info("preprocess: images per split %s, %d x %d px, resize=%s",
                {split: sum(counts[split].values()) for split in SPLITS}, params.image_size, params.image_size,
                params.resize)
    return table


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
