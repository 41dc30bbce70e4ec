"""Preprocess stage: reads the manifest and data/raw/, writes data/processed/ (decoded shards, split.parquet, labels,
preprocess.json) and data/reports/split.json.

It also settles the network `train.model` stands for (tasks/preprocess/settle.py) and records it in preprocess.json. A head
on a pretrained backbone's features needs no decoded pixels here (the embed stage reads the raw store itself), so for
that route no shards are written.

Incremental: each image is decoded once per normalisation (image size, resize mode, decoder version) and kept by
its sha256, so a run decodes only images it has not decoded before; an image keeps the split it was given; shards
whose images were mostly removed are compacted (their live records copied, not decoded again).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from tasks import manifest as manifest_file
from tasks import (atomic, disk_space, dvc_outputs, images, joins, label_sets, model_choice, pool, processed_store,
                   progress, raw_store)
from tasks import stored_images
from tasks.config import load_config
from tasks.params import GroupBy, PreprocessParams
from tasks.paths import Paths
from tasks.preprocess import storage_order
from tasks.preprocess import settle
from tasks.preprocess.split import (SPLITS, assign_splits, describe_splits, split_counts, split_report,
                                     storage_orders, subjects_for)

logger = logging.getLogger(__name__)

# what readers need; the units that kept images together are in the split report (split.json), not here: a
# sha256-sized key per image would make this table, rewritten on every change, twice as large
TABLE_COLUMNS = ["path", "label", "label_index", "split", "sha256", "shard"]
OLD_SHARD = re.compile(r"(train|val|test)-\d{5}-of-\d{5}\.tfrecord")
# what this stage reads of the manifest (not the perceptual hashes, modes and orientations ingest keeps)
MANIFEST_COLUMNS = ["path", "label", "sha256", "shard", "offset", "bytes", "width", "height", "group", "split",
                    "subject"]
RECORD_BYTES = 256  # per decoded image beyond its pixels: sha256, protobuf and TFRecord framing (over-estimated)
COMPACT_BELOW = 0.5  # a shard whose live share of records falls under this is rewritten without the dead ones


def read_subjects(manifest: pd.DataFrame, group_by: GroupBy | None, paths: Paths) -> pd.Series | None:
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


def normalisation(params: PreprocessParams) -> str:
    """What decoded pixels depend on: an earlier run's shards are reused only under the same."""
    return f"image_size={params.image_size} resize={params.resize} decoder=v{images.DECODE_VERSION}"


def _splitting(params: PreprocessParams, seed: int) -> dict[str, Any]:
    """What the split depends on: an earlier run's assignment is kept only under the same."""
    return {"seed": seed, "val_fraction": params.val_fraction, "test_fraction": params.test_fraction,
            "group_by": None if params.group_by is None else str(params.group_by)}


def _no_strings() -> pd.Series:
    return pd.Series(index=pd.Index([], dtype="str"), dtype="str")


@dataclass
class Earlier:
    """What the last run left that this one may reuse (tables keyed by sha256: joined, never looped over)."""

    shards: pd.Series = field(default_factory=_no_strings)  # sha256 -> the shard holding its pixels
    splits: pd.Series = field(default_factory=_no_strings)  # sha256 -> its split
    records: dict[str, int] = field(default_factory=dict)  # shard -> how many records it holds, live or not
    places: pd.DataFrame | None = None  # sha256 -> shard and row in the last table (storage_order.last_places)


def _by_sha256(table: pd.DataFrame, column: str) -> pd.Series:
    """sha256 -> `column` of the table, last row first (joins.lookup takes the first of a repeated key: the last
    row's, as a dict built from the rows would hold)."""
    table = table.iloc[::-1]
    return pd.Series(table[column].array, index=pd.Index(table["sha256"].array, dtype="str"), dtype="str")


def _earlier(paths: Paths, params: PreprocessParams, seed: int) -> Earlier:
    """The last run's shards (under the same normalisation), splits (under the same splitting) and storage order
    (under the same seed), when its outputs are whole. Unfinished shards of a killed run are removed."""
    folder = paths.processed
    processed_store.remove_temporary(folder)
    if not (processed_store.summary_file(folder).is_file() and processed_store.table_file(folder).is_file()):
        return Earlier()
    summary = processed_store.read_summary(folder)
    stored = set(pq.read_schema(processed_store.table_file(folder)).names)  # a table of an older layout lacks some
    table = processed_store.read_table(folder, [column for column in ("sha256", "shard", "split") if column in stored])
    if "shard" not in table.columns or not isinstance(summary.get("shard_records"), dict):
        logger.info("%s: written before the incremental store; every image is decoded again", folder)
        for old in folder.glob("*.tfrecord"):  # per-split shards of that layout (train-00000-of-00002.tfrecord)
            if OLD_SHARD.fullmatch(old.name):
                old.unlink()
        return Earlier()
    earlier = Earlier()
    if summary.get("normalisation") == normalisation(params):
        present = set(processed_store.shard_names(folder))
        earlier.shards = _by_sha256(table[table["shard"].isin(present)], "shard")
        earlier.records = {shard: int(count) for shard, count in summary["shard_records"].items() if shard in present}
    if summary.get("splitting") == _splitting(params, seed):
        earlier.splits = _by_sha256(table, "split")
    if summary.get("seed") == seed:
        earlier.places = storage_order.last_places(table)
    return earlier


def _decode_new(table: pd.DataFrame, earlier: Earlier, params: PreprocessParams, max_pixels: int,
                paths: Paths, seed: int) -> tuple[pd.Series, dict[str, int]]:
    """Decode the images no shard holds yet (in `order`, over all cores) into new shards; return sha256 -> shard
    and the record count of each new shard."""
    new = table[~joins.is_in(table["sha256"], earlier.shards.index)]
    lacking = new["order"].isna()  # kept images decoded again (another normalisation): their order is computed now
    if lacking.any():
        new = new.assign(order=new["order"].where(~lacking, pd.Series(
            storage_orders(new.loc[lacking, "sha256"].tolist(), seed), index=new.index[lacking])))
    new = new.sort_values("order", kind="stable")
    decoder = stored_images.Decoder(paths.raw, params.image_size, params.resize, max_pixels)
    jobs = [(row.path, raw_store.location_of(row)) for row in new.itertuples(index=False)]
    placed: dict[str, str] = {}
    needed = len(jobs) * (params.image_size ** 2 * 3 + RECORD_BYTES)
    free = disk_space.free_bytes(paths.processed)
    if jobs and free is not None and needed > free:  # say so now, not after hours of decoding
        raise disk_space.DiskFull(paths.processed, f"{len(jobs)} decoded images", needed)
    with processed_store.ShardWriter(paths.processed, params.shard_megabytes * 2**20, needed) as writer, \
            progress.bar(len(jobs), "image", "preprocess") as shown:
        for sha256, pixels in zip(new["sha256"], pool.ordered_map(decoder, jobs, params.workers, params.scheduler)):
            placed[sha256] = writer.add(sha256, pixels)
            shown.update()
    return pd.Series(placed, index=pd.Index(list(placed), dtype="str"), dtype="str"), writer.counts


def _compact(table: pd.DataFrame, records: dict[str, int], params: PreprocessParams,
             paths: Paths) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rewrite the shards whose records are mostly no longer used (their live records copied, not decoded)."""
    live = table.groupby("shard").size()
    sparse = [shard for shard, count in live.items() if count < COMPACT_BELOW * records.get(shard, count)]
    if not sparse:
        return table, records
    wanted = set(table.loc[table["shard"].isin(sparse), "sha256"])
    moved: dict[str, str] = {}
    with processed_store.ShardWriter(paths.processed, params.shard_megabytes * 2**20) as writer:
        for shard in sparse:
            for sha256, pixels in processed_store.records(paths.processed, shard, params.image_size):
                if sha256 in wanted and sha256 not in moved:
                    moved[sha256] = writer.add(sha256, pixels)
    logger.info("preprocess: compacted %d sparse shard(s) into %d", len(sparse), len(writer.written))
    moved_to = pd.Series(moved, index=pd.Index(list(moved), dtype="str"), dtype="str")
    table = table.assign(shard=joins.lookup(table["sha256"], moved_to).set_axis(table.index).fillna(table["shard"]))
    return table, {shard: count for shard, count in records.items() if shard not in sparse} | writer.counts


def run(params: PreprocessParams, seed: int, max_pixels: int, paths: Paths, model: str = "auto",
        weights: str | None = "auto") -> pd.DataFrame:
    """Settle the network (`model`, train.model; `weights`, train.weights), split the manifest, decode the images
    not decoded before (when the network learns from pixels), and write the split table and reports; return the
    split table (its stored columns, with each image's `unit` and `order`: see assign_splits)."""
    started = time.perf_counter()
    manifest = manifest_file.read(paths.manifest, MANIFEST_COLUMNS)
    chosen_automatically = params.image_size == "auto"
    if manifest.empty:
        raise ValueError(f"{paths.manifest}: the manifest lists no images; run ingest on a folder of class folders")
    if "shard" not in manifest.columns:
        raise ValueError(f"{paths.manifest}: written by an older ingest, without the raw store; run the ingest "
                         "stage again (dvc repro ingest) and then this one")
    choice = settle.network(manifest, model, weights, paths.processed)
    if params.resize == "auto":
        params = params.model_copy(update={"resize": model_choice.resize_mode(choice)})
    if params.image_size == "auto":
        params = params.model_copy(update={"image_size": settle.image_size(manifest, params, paths.processed, choice)})
    # the vocabulary is the individual labels: a multi-label image ("a;b") counts for a and for b
    cells = manifest["label"].unique().tolist()  # the distinct label cells: a few, however many images
    labels = label_sets.vocabulary(cells)
    task = label_sets.MULTI_LABEL if label_sets.has_several(cells) else label_sets.SINGLE_LABEL
    subjects = read_subjects(manifest, params.group_by, paths)
    if subjects is None and "subject" in manifest.columns and (manifest["subject"] != "").any():
        subjects = manifest["subject"]  # the label table's group column
    dvc_outputs.restore(paths.root, "preprocess", [paths.processed, paths.reports / "split.json"])
    earlier = _earlier(paths, params, seed)
    table = assign_splits(manifest, seed, params.val_fraction, params.test_fraction, subjects, earlier.splits)
    # a class index for an image with one label; -1 for one with several (readers build multi-hot rows from `label`)
    table["label_index"] = table["label"].map({label: index for index, label in enumerate(labels)}).fillna(-1)
    table["label_index"] = table["label_index"].astype("int64")
    if choice.on_features:  # the embed stage decodes from the raw store itself: no pixels are kept here
        earlier, placed, new_records = Earlier(splits=earlier.splits, places=earlier.places), _no_strings(), {}
        table = table.assign(shard="")
    else:
        placed, new_records = _decode_new(table, earlier, params, max_pixels, paths, seed)
        stored = pd.concat([earlier.shards, placed])  # the new images are in no earlier shard
        table = table.assign(shard=joins.lookup(table["sha256"], stored).set_axis(table.index))
    table, records = _compact(table, earlier.records | new_records, params, paths)
    table = storage_order.in_storage_order(table[TABLE_COLUMNS + ["unit", "order"]], earlier.places, seed)

    if "split" in manifest.columns and (manifest["split"] != "").any():  # else every split is by hash: nothing to say
        given = pd.Series(manifest["split"].array, index=pd.Index(manifest["sha256"].array, dtype="str"), dtype="str")
        origin = describe_splits(joins.lookup(table["sha256"], given).fillna(""), table["split"], params.val_fraction,
                                 params.test_fraction)
        if origin:
            logger.info("preprocess: %s", origin)
    counts = split_counts(table)
    for split in SPLITS:
        missing = [label for label in labels if counts[split].get(label, 0) == 0]
        if missing:
            logger.warning("split %s has no images of class(es) %s; add images or change the fractions", split,
                           ", ".join(missing))
    folder = paths.processed
    processed_store.write_split(folder, table[TABLE_COLUMNS], labels, {
        "image_size": params.image_size,
        "auto_max_size": params.auto_max_size if chosen_automatically else None,  # image_size chosen by auto
        "resize": params.resize,
        "normalisation": normalisation(params),
        "splitting": _splitting(params, seed),
        "seed": seed,
        "labels": labels,
        "task": task,  # as the data says: multi_label when an image has several labels (train.task may force it)
        "model": choice.as_record(),  # the network train.model stands for, and why (tasks/model_choice.py)
        "model_asked": {"model": model, "weights": weights},  # the train.model and train.weights it was settled for
        "pixels": not choice.on_features,  # whether the shards hold the decoded images (else the raw store only)
        # the size simple_cnn would take here: a pretrained backbone's challenger from scratch trains at it
        "scratch_image_size": settle.choose_image_size(manifest, params.auto_max_size) if choice.on_features else None,
        # where readers decode images from when there are no pixels here (relative to this folder) and under which
        # pixel limit
        "raw_store": os.path.relpath(paths.raw, folder),
        "manifest": os.path.relpath(paths.manifest, folder),
        "max_pixels": max_pixels,
        "shards": sorted(shard for shard in table["shard"].unique().tolist() if shard),
        "shard_records": {shard: records[shard] for shard in sorted(table["shard"].unique()) if shard},
        "counts": {split: int((table["split"] == split).sum()) for split in SPLITS},
        "counts_per_class": counts,
        "group_by": None if params.group_by is None else str(params.group_by),
    })
    processed_store.remove(folder, sorted(set(processed_store.shard_names(folder)) - set(table["shard"])))
    atomic.write_json(paths.reports / "split.json",
                      split_report(table, seed, params.val_fraction, params.test_fraction, params.group_by),
                      keep_if_same=True)
    sizes = ", ".join(f"{split} {int((table['split'] == split).sum())}" for split in SPLITS)
    logger.info("preprocess: images per split: %s; %d x %d px, resize=%s; %d decoded now, %d reused; %.1f s",
                sizes, params.image_size, params.image_size,
                params.resize, len(placed), len(table) - len(placed), time.perf_counter() - started)
    return table


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model, config.train.weights)
