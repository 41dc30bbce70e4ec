"""The ingest stage against entries a hostile user plants (issue 27 items 7, 10, 11): a class folder swapped for a
link between the walk and the read, a link loop, a huge sparse file, a label with a newline. Each gets its
quarantine reason or its skipped entry; none stops the run, none reads outside the source."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.ingest import stage as ingest
from tasks.params import Config
from tasks.paths import Paths
from tests.conftest import PROJECT_ROOT, make_image, save


def config_for(source: Path, **overrides: Any) -> Config:
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
        "ingest.source": str(source), "ingest.workers": 1, **overrides})
    return config


def class_folders(root: Path, per_class: int = 4) -> Path:
    for offset, (label, colour) in enumerate((("cat", (200, 40, 40)), ("dog", (40, 180, 60)))):
        for index in range(per_class):
            save(make_image(colour, seed=1000 * offset + index, size=24), root / label / f"{index:03d}.png")
    return root


def quarantine(paths: Paths) -> pd.DataFrame:
    return pd.read_csv(paths.quarantine, keep_default_na=False).set_index("source_path")


def test_a_link_loop_a_huge_sparse_file_and_a_label_with_a_newline_do_not_stop_the_run(tmp_path):
    source = class_folders(tmp_path / "source")
    os.symlink("self.png", source / "cat" / "self.png")  # `ln -s self.png self.png`
    with open(source / "cat" / "huge.png", "wb") as handle:
        handle.truncate(12 * 10**9)  # 12 GB, sparse: over the default ingest.max_file_bytes, no disk space taken
    save(make_image((9, 9, 9), seed=5, size=24), source / "ca\nt" / "000.png")
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    manifest = ingest.run(config.ingest, paths)
    assert len(manifest) == 8 and set(manifest["label"]) == {"cat", "dog"}
    bad = quarantine(paths)
    assert (bad.at["cat/huge.png", "reason"], bad.at["cat/huge.png", "detail"]) == (
        "too_large", "12000000000 bytes, over the file size limit of 1000000000 bytes; raise ingest.max_file_bytes "
                     "to accept it")
    assert bad.at["ca\nt/000.png", "reason"] == "bad_label"
    assert "rename the folder" in bad.at["ca\nt/000.png", "detail"]
    summary = json.loads(paths.ingest_summary.read_text())
    assert summary["skipped_links"] == ["cat/self.png"]
    assert summary["quarantined_by_reason"] == {"bad_label": 1, "too_large": 1}


def _swapping_scan(monkeypatch: pytest.MonkeyPatch, swap: Any) -> None:
    """layout.scan as the stage calls it, with `swap()` made right after the walk, before any file is read."""
    real_scan = ingest.layout.scan

    def scan_then_swap(*arguments: Any, **keywords: Any) -> Any:
        found = real_scan(*arguments, **keywords)
        swap()
        return found

    monkeypatch.setattr(ingest.layout, "scan", scan_then_swap)


def test_a_class_folder_swapped_for_a_link_after_the_walk_is_not_followed(tmp_path, monkeypatch):
    """Ingest read 200 outside images into data/raw through a class folder swapped for a link (issue 27.7)."""
    source = class_folders(tmp_path / "source")
    private = tmp_path / "private"
    for index in range(4):  # the same names as cat/'s files, other pixels
        save(make_image((1, 2, 3), seed=50 + index, size=24), private / f"{index:03d}.png")
    outside = {hashlib.sha256(path.read_bytes()).hexdigest() for path in private.iterdir()}

    def swap() -> None:
        (source / "cat").rename(tmp_path / "cat moved away")
        (source / "cat").symlink_to(private)

    _swapping_scan(monkeypatch, swap)
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    manifest = ingest.run(config.ingest, paths)
    assert not outside & set(manifest["sha256"]) and set(manifest["label"]) == {"dog"}
    bad = quarantine(paths)
    assert list(bad.index) == [f"cat/{index:03d}.png" for index in range(4)] and set(bad["reason"]) == {"link"}
    assert (bad["detail"] == f"its folder {source / 'cat'}: is a symbolic link; links are not followed").all()


def test_ingest_max_file_bytes_is_the_limit(tmp_path):
    source = class_folders(tmp_path / "source")
    with open(source / "dog" / "sparse.png", "wb") as handle:
        handle.truncate(300_000)
    config = config_for(source, **{"ingest.max_file_bytes": 200_000})
    paths = Paths(config.paths, tmp_path / "project")
    ingest.run(config.ingest, paths)
    assert quarantine(paths).at["dog/sparse.png", "reason"] == "too_large"
    config = config_for(source, **{"ingest.max_file_bytes": 400_000})  # a verdict holds under its own limit only
    ingest.run(config.ingest, paths)
    assert quarantine(paths).at["dog/sparse.png", "reason"] == "not_an_image"
