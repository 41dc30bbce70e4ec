"""The data lineage train writes into the model card, from a hand-made split table and ingest summary."""

import hashlib
import json

import pandas as pd

from tasks.hashing import file_sha256
from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.train import lineage


def test_the_card_records_source_manifest_hash_image_count_and_a_bottom_sample(tmp_path):
    paths = Paths(PathsParams(), tmp_path)
    paths.processed.mkdir(parents=True)
    paths.interim.mkdir(parents=True)
    digests = sorted((hashlib.sha256(str(number).encode()).hexdigest() for number in range(1000)), reverse=True)
    pd.DataFrame({"sha256": digests + digests[:5], "label": "a"}).to_parquet(paths.processed / "split.parquet")
    pd.DataFrame({"sha256": digests}).to_parquet(paths.manifest)
    paths.ingest_summary.write_text(json.dumps({"source": "/data/photos", "files_seen": 1000}))
    record = lineage.data_lineage(paths)
    assert record["source"] == "/data/photos" and record["manifest_sha256"] == file_sha256(paths.manifest)
    assert record["images"] == 1000  # a repeated image counts once
    assert len(record["image_sample"]) == lineage.SAMPLE_SIZE
    assert record["image_sample"] == sorted(digest[:lineage.SAMPLE_DIGITS] for digest in digests)[:lineage.SAMPLE_SIZE]
    paths.ingest_summary.unlink()  # a data folder without ingest's summary: the source is not known, not made up
    assert lineage.data_lineage(paths)["source"] is None
