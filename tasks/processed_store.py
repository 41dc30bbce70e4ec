"""The processed store format: writes and reads data/processed/, every image decoded once (oriented, RGB, resized) as
uint8 pixels in TFRecord shards, and the split table that says which image is in which split with which label.

A shard (`decoded-NNNNNN.tfrecord`) holds records of (sha256, pixels) for one normalisation (image size, resize
mode, decoder version), is written once under a temporary name and never rewritten; shards know nothing of splits
or labels, so adding images, relabelling or re-splitting never moves a decoded image. split.parquet maps each
image (by sha256) to its path, label, split and shard; readers keep the records the table names and drop the rest.
labels.json holds the labels in class index order, preprocess.json what preprocess settled and kept (image size,
resize, labels, counts, the network). This module alone names, writes and reads these files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import atomic, disk_space, tfrecord_file

if TYPE_CHECKING:  # numpy and pandas are imported where used: the report and promotion name files only
    import numpy as np
    import pandas as pd
    import tensorflow as tf

SHARD_PATTERN = re.compile(r"decoded-(?P<serial>\d{6})\.tfrecord")
SPLIT_TABLE = "split.parquet"
LABELS_FILE = "labels.json"
SUMMARY_FILE = "preprocess.json"
RECORD_OVERHEAD = tfrecord_file.RECORD_OVERHEAD  # TFRecord framing per record: its length and two checksums


def shard_names(folder: Path) -> list[str]:
    """The finished shards in `folder`, in the order they were written."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder) if SHARD_PATTERN.fullmatch(entry.name))


def remove_temporary(folder: Path) -> None:
    """Delete shards a killed run left unfinished."""
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".decoded-") and entry.name.endswith(".partial"):
                os.unlink(entry.path)


def remove(folder: Path, names: list[str]) -> None:
    for name in names:
        if not SHARD_PATTERN.fullmatch(name):
            raise ValueError(f"{name}: not a processed shard; refusing to delete it")
        (folder / name).unlink(missing_ok=True)


def _record(sha256: str, pixels: np.ndarray) -> bytes:
    """One serialized tf.train.Example {"sha256": the key in ASCII, "image": the raw uint8 pixels}."""
    import numpy as np

    return tfrecord_file.encode_example({"sha256": sha256.encode("ascii"),
                                         "image": np.ascontiguousarray(pixels).tobytes()})


class ShardWriter:
    """Adds decoded images to new shards of at most about `shard_bytes` each (a context manager).

    A shard is renamed into place when full and on a clean exit; on an error its temporary file is removed, also
    when closing it fails too (a full disk fails the close as well). A full disk is raised as disk_space.DiskFull,
    naming the folder and `needed_bytes` (what the whole write needs, when the caller knows). Written without
    TensorFlow (tasks/tfrecord_file.py), in the format tf.io.TFRecordWriter writes and tf.data reads.
    """

    def __init__(self, folder: Path, shard_bytes: int, needed_bytes: int | None = None) -> None:
        self.folder = folder
        self.shard_bytes = shard_bytes
        self.needed_bytes = needed_bytes
        names = shard_names(folder)
        self._serial = int(SHARD_PATTERN.fullmatch(names[-1])["serial"]) if names else 0
        self._writer: tfrecord_file.Writer | None = None
        self._size = 0
        self.written: list[str] = []
        self.counts: dict[str, int] = {}  # records in each shard written

    @property
    def _name(self) -> str:
        return f"decoded-{self._serial:06d}.tfrecord"

    @property
    def _temporary(self) -> Path:
        return self.folder / f".{self._name}.partial"

    def __enter__(self) -> ShardWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, error_type: object, *rest: object) -> None:
        if error_type is None:
            self._finish()
        else:
            self._abandon()

    def add(self, sha256: str, pixels: np.ndarray) -> str:
        """Append one decoded image; return the name its shard will have."""
        record = _record(sha256, pixels)
        if self._writer is not None and self._size + len(record) + RECORD_OVERHEAD > self.shard_bytes:
            self._finish()
        try:
            if self._writer is None:
                self._serial += 1
                self._writer = tfrecord_file.Writer(self._temporary)
                self._size = 0
            self._writer.write(record)
        except Exception as error:
            self._raise_disk_full(error)
            raise
        self._size += len(record) + RECORD_OVERHEAD
        self.counts[self._name] = self.counts.get(self._name, 0) + 1
        return self._name

    def _finish(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
            os.replace(self._temporary, self.folder / self._name)
        except Exception as error:
            self._abandon()
            self._raise_disk_full(error)
            raise
        self.written.append(self._name)
        self._writer = None

    def _abandon(self) -> None:
        """Remove the shard being written, whatever closing it says."""
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # the write already failed; its error is the one to report
            pass
        finally:
            self._temporary.unlink(missing_ok=True)
            self._writer = None

    def _raise_disk_full(self, error: Exception) -> None:
        """Say a full disk in plain words, not as the OSError of a write."""
        if disk_space.is_full(error):
            raise disk_space.DiskFull(self.folder, "the decoded image shards", self.needed_bytes) from error


def parse_batch(serialized: tf.Tensor, image_size: int) -> dict[str, tf.Tensor]:
    """Parse a batch of serialized records into uint8 images [batch, size, size, 3] and their sha256."""
    import tensorflow as tf

    features = tf.io.parse_example(serialized, {"sha256": tf.io.FixedLenFeature([], tf.string),
                                                "image": tf.io.FixedLenFeature([], tf.string)})
    images = tf.reshape(tf.io.decode_raw(features["image"], tf.uint8), [-1, image_size, image_size, 3])
    return {"image": images, "sha256": features["sha256"]}


def records(folder: Path, name: str, image_size: int) -> Iterator[tuple[str, np.ndarray]]:
    """(sha256, pixels) of every record of one shard, in order (for compaction and checks), read without TensorFlow;
    the pixels are read-only arrays over the record's bytes.

    A damaged shard (a record cut short, failing its checksum or not holding both features) raises ValueError naming
    the file.
    """
    import numpy as np

    path = folder / name
    shape = (image_size, image_size, 3)
    try:
        for record in tfrecord_file.read_records(path):
            features = tfrecord_file.decode_example(record)
            sha256, image = features.get("sha256", []), features.get("image", [])
            if len(sha256) != 1 or len(image) != 1 or len(image[0]) != image_size * image_size * 3:
                raise ValueError(f"{path}: a record is not one sha256 and {image_size}x{image_size}x3 pixels")
            yield sha256[0].tobytes().decode("ascii"), np.frombuffer(image[0], dtype=np.uint8).reshape(shape)
    except ValueError as error:
        message = str(error) if str(path) in str(error) else f"{path}: {error}"
        raise ValueError(f"{message}; delete that shard and run the preprocess stage again (it decodes the images "
                         "of a missing shard again)") from error


def summary_file(folder: Path) -> Path:
    """preprocess.json: what preprocess settled and kept (image size, resize, labels, counts, the network)."""
    return folder / SUMMARY_FILE


def table_file(folder: Path) -> Path:
    """split.parquet: the split table."""
    return folder / SPLIT_TABLE


def write_split(folder: Path, table: pd.DataFrame, labels: list[str], summary: dict[str, Any]) -> None:
    """The split table, labels.json and preprocess.json, each atomically and only rewritten when changed; the
    summary last, so that it names a table and labels already in place."""
    atomic.write_parquet(table_file(folder), table, keep_if_same=True)
    atomic.write_json(folder / LABELS_FILE, labels, keep_if_same=True)
    atomic.write_json(summary_file(folder), summary, keep_if_same=True)


def read_summary(folder: Path) -> dict[str, Any]:
    """preprocess.json as written by write_split."""
    return json.loads(summary_file(folder).read_text(encoding="utf-8"))


def read_earlier_summary(folder: Path) -> dict[str, Any]:
    """preprocess.json of an earlier run, or {} when there is none yet."""
    return read_summary(folder) if summary_file(folder).is_file() else {}


def read_labels(folder: Path) -> list[str]:
    """labels.json: the labels in class index order."""
    return json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))


def read_table(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The split table: path, label, label_index, split, group, unit, sha256, shard (one row per image used), or
    only `columns` of it."""
    import pandas as pd

    path = table_file(folder)
    if not path.is_file():
        raise ValueError(f"{path}: not found; run the preprocess stage first")
    return pd.read_parquet(path, columns=columns)
