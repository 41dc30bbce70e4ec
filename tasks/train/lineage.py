"""The data lineage a model card records: reads data/interim/ (ingest summary, manifest) and the split table in
data/processed/; writes nothing (train puts the record into the model card).

The gate (tasks/release/lineage.py) compares the records of the candidate and the production model to say whether
the candidate learnt from the production model's data grown, or from other data. Hashes of whole files say only
"same" or "not the same", so the record also keeps a sample of the images by content: the SAMPLE_SIZE smallest
image sha256s (a bottom-k sample, cut to SAMPLE_DIGITS hex digits). Two such samples are uniform samples of the
same slice of the hash space below the smaller of their largest values, so they estimate cheaply (a few KB in the
card, no image list) what share of production's images the candidate's data still holds.
"""

from __future__ import annotations

import heapq
import json
import logging
from typing import Any

from tasks import processed_store
from tasks.hashing import file_sha256
from tasks.paths import Paths

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 512
SAMPLE_DIGITS = 16  # 64 bits of each sha256: no two images of a data set share them in practice


def _source(paths: Paths) -> str | None:
    """The source folder or label table as ingest recorded it; None where ingest wrote no summary."""
    try:
        summary = json.loads(paths.ingest_summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = summary.get("source") if isinstance(summary, dict) else None
    return str(source) if source else None


def image_sample(sha256s: list[str]) -> list[str]:
    """The SAMPLE_SIZE smallest distinct image hashes (cut to SAMPLE_DIGITS), in order."""
    return heapq.nsmallest(SAMPLE_SIZE, {digest[:SAMPLE_DIGITS] for digest in sha256s})


def data_lineage(paths: Paths) -> dict[str, Any]:
    """Where the model's data came from and which images it holds, for the model card."""
    sha256s = processed_store.read_table(paths.processed, columns=["sha256"])["sha256"].tolist()
    return {
        "source": _source(paths),
        "manifest_sha256": file_sha256(paths.manifest) if paths.manifest.is_file() else None,
        "images": len(set(sha256s)),
        "image_sample": image_sample(sha256s),
    }
