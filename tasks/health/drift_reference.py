"""The drift reference format: encodes and decodes data/reports/data_health/drift_reference.npz, what a health run keeps
of its images for the next run to measure drift against (the stage writes and reads the file through
tasks/data_health.py with the rest of its folder).

Per class: the number of images, their mean unit feature (float32) and their spread (mean squared distance to that
mean); the first 8 bytes of the sha256 of every image (which images are new next time); what the features were; and
the drift this run measured (carried over by a run with no new images). About 8 bytes an image plus
4 x features bytes a class: 0.8 MB for 10^5 images. A NumPy archive without pickled objects: nothing in it runs code.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from tasks.health.drift import Reference

VERSION = 1


def encode(reference: Reference, drift: dict[str, Any]) -> bytes:
    """The file's bytes: the reference, and the drift measured by the run that made it."""
    meta = {"version": VERSION, "features": reference.features, "drift": drift}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=np.asarray(reference.labels, dtype=str), counts=reference.counts,
                        means=reference.means.astype(np.float32), variances=reference.variances.astype(np.float64),
                        seen=reference.seen.astype(np.uint64), meta=np.asarray(json.dumps(meta, sort_keys=True)))
    return buffer.getvalue()


def decode(data: bytes) -> tuple[Reference, dict[str, Any] | None]:
    """(the reference, the drift its run measured); a ValueError says what is wrong with a file that is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            if meta.get("version") != VERSION:
                raise ValueError(f"version {meta.get('version')!r}, not {VERSION}")
            labels = [str(label) for label in archive["labels"].tolist()]
            reference = Reference(labels, archive["counts"].astype(np.int64), archive["means"].astype(np.float32),
                                  archive["variances"].astype(np.float64), archive["seen"].astype(np.uint64),
                                  str(meta["features"]))
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:  # ValueError: JSON, pickled data
        raise ValueError(f"not a drift reference ({type(error).__name__}: {error})") from error
    if len(reference.counts) != len(labels) or reference.means.shape[0] != len(labels) \
            or len(reference.variances) != len(labels):
        raise ValueError(f"not a drift reference: {len(labels)} labels for {len(reference.counts)} counts, "
                         f"{reference.means.shape[0]} means and {len(reference.variances)} spreads")
    drift = meta.get("drift")
    return reference, drift if isinstance(drift, dict) else None
