"""Preprocess stage: reads data/raw/ and the manifest, writes data/processed/ (split table, labels, TFRecord shards)."""

from __future__ import annotations

import itertools
import logging

import pandas as pd
from tqdm import tqdm

from tasks import atomic
from tasks.decode_pool import decode_all
from tasks.config import Paths, PreprocessParams, load_config
from tasks.split import SPLITS, assign_splits, split_counts

logger = logging.getLogger(__name__)


def run(params: PreprocessParams, seed: int, max_pixels: int, paths: Paths) -> pd.DataFrame:
    """Split the manifest, decode every image once and write each split as a few large shards."""
    # Imported here, not at the top: the decoding processes re-import this module, and must not load TensorFlow.
    from tasks import shards

    manifest = pd.read_parquet(paths.manifest)
    if manifest.empty:
        raise ValueError(f"{paths.manifest}: the manifest lists no images; run ingest on a folder of class folders")
    labels = sorted(manifest["label"].unique().tolist())
    label_index = {label: index for index, label in enumerate(labels)}
    table = assign_splits(manifest, seed, params.val_fraction, params.test_fraction)
    split_rank = table["split"].map({split: rank for rank, split in enumerate(SPLITS)})
    table = table.assign(split_rank=split_rank).sort_values(["split_rank", "order"], kind="stable")
    table = table.drop(columns="split_rank").reset_index(drop=True)
    table["label_index"] = table["label"].map(label_index).astype("int64")
    bytes_per_image = params.image_size * params.image_size * 3
    counts = split_counts(table)
    for split in SPLITS:
        missing = [label for label in labels if counts[split].get(label, 0) == 0]
        if missing:
            logger.warning("split %s has no images of class(es) %s; add images or change the fractions", split, missing)

    # one pass over all images (table is sorted by split), so the worker processes start once
    files = [paths.raw / path for path in table["path"]]
    pixels = iter(tqdm(decode_all(files, params.image_size, params.resize, max_pixels, params.workers),
                       total=len(files), unit="image", desc="preprocess", disable=None))
    with atomic.atomic_directory(paths.processed) as building:
        shard_paths: dict[str, list[str]] = {}
        for split in SPLITS:
            rows = table[table["split"] == split]
            examples = zip(itertools.islice(pixels, len(rows)), rows["label_index"].tolist(), rows["path"].tolist())
            written = shards.write_split(examples, len(rows), bytes_per_image, params.shard_megabytes * 2**20,
                                         building, split)
            shard_paths[split] = [path.name for path in written]
        atomic.write_parquet(building / "split.parquet",
                             table[["path", "label", "label_index", "split", "group", "sha256"]])
        atomic.write_json(building / "labels.json", labels)
        atomic.write_json(building / "preprocess.json", {
            "image_size": params.image_size,
            "resize": params.resize,
            "seed": seed,
            "labels": labels,
            "shards": shard_paths,
            "counts": {split: int((table["split"] == split).sum()) for split in SPLITS},
            "counts_per_class": counts,
        })
    logger.info("preprocess: images per split %s, %d x %d px, resize=%s",
                {split: sum(counts[split].values()) for split in SPLITS}, params.image_size, params.image_size,
                params.resize)
    return table


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)


if __name__ == "__main__":
    main()
