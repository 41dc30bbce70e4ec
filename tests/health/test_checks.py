"""The health checks on generated features: flipped labels rank first, near-duplicates across splits are leaks, a
point far from every class is an outlier, memory stays bounded, the block key stops a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.health import features, label_issues, outliers, semantic_duplicates
from tasks.health import stage as health

CLASSES, PER_CLASS, WIDTH = 5, 60, 32


def clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CLASSES well separated clusters of PER_CLASS points each in WIDTH dimensions, and their true labels."""
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(CLASSES, WIDTH)) * 4
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    return centres[labels] + generator.normal(size=(len(labels), WIDTH)), labels


def test_flipped_labels_rank_first():
    points, truth = clusters()
    generator = np.random.default_rng(1)
    flipped = generator.choice(len(truth), size=15, replace=False)
    given = truth.copy()
    given[flipped] = (truth[flipped] + generator.integers(1, CLASSES, size=len(flipped))) % CLASSES
    found = label_issues.find(features.normalised(points), given, CLASSES, folds=5, seed=0, max_fit_images=1000)
    assert found is not None and found.folds == 5
    ranked = found.analysed[np.argsort(found.scores, kind="stable")]
    assert set(ranked[:len(flipped)].tolist()) == set(flipped.tolist())
    assert len(set(found.analysed[found.issues].tolist()) & set(flipped.tolist())) >= len(flipped) - 1
    assert (found.suggested[flipped] == truth[flipped]).all()  # the true label is the suggestion
    assert 0.02 < found.noise_rate < 0.1  # 15 of 300 flipped: 5%


def test_clean_labels_flag_almost_nothing():
    points, truth = clusters(seed=3)
    found = label_issues.find(features.normalised(points), truth, CLASSES, folds=5, seed=0, max_fit_images=1000)
    assert found.issues.sum() <= 3 and found.noise_rate < 0.02


def test_small_classes_use_fewer_folds_and_single_images_are_left_out():
    points, truth = clusters()
    keep = np.concatenate([np.flatnonzero(truth == 0), np.flatnonzero(truth == 1)[:3], np.flatnonzero(truth == 2)[:1]])
    found = label_issues.find(features.normalised(points[keep]), truth[keep], CLASSES, folds=5, seed=0,
                              max_fit_images=1000)
    assert found.folds == 3
    assert len(found.analysed) == len(keep) - 1  # the class of one image is left out
    assert any("single image" in note for note in found.notes)
    assert found.probabilities.shape == (len(keep) - 1, CLASSES)


def test_fits_are_capped_by_a_sample():
    points, truth = clusters()
    capped = label_issues.out_of_fold_probabilities(points, truth, CLASSES, 3, 0, max_fit_images=50)
    assert capped.shape == (len(truth), CLASSES) and np.allclose(capped.sum(axis=1), 1)
    assert (capped.argmax(axis=1) == truth).mean() > 0.95


def test_near_duplicates_found_in_blocks_and_only_once(monkeypatch: pytest.MonkeyPatch):
    generator = np.random.default_rng(0)
    unit = features.normalised(generator.normal(size=(200, 16)))
    unit[50] = features.normalised(unit[10:11] + 0.01 * generator.normal(size=(1, 16)))[0]
    unit[120] = unit[10]
    monkeypatch.setattr(semantic_duplicates, "BLOCK_VALUES", 200 * 7)  # 7 rows a block: many blocks
    found = semantic_duplicates.pairs(unit, 0.99)
    assert [tuple(row[:2].astype(int)) for row in found] == [(10, 50), (10, 120), (50, 120)]
    assert (found[:, 2] >= 0.99).all()
    again = semantic_duplicates.pairs(unit, 0.99, new_rows=np.array([120]))  # only pairs holding a new row
    assert [tuple(row[:2].astype(int)) for row in again] == [(10, 120), (50, 120)]


def test_an_image_far_from_every_class_is_an_outlier():
    points, truth = clusters()
    points = np.vstack([points, np.full((1, WIDTH), 0.0) + np.eye(1, WIDTH, 3) * 40])
    truth = np.append(truth, 0)
    found, spread, nearest = outliers.find(features.normalised(points), truth, CLASSES, spread=6.0)
    assert found.tolist() == [len(truth) - 1]
    assert spread[0] > 6.0


def test_the_block_key_stops_the_run_naming_the_key_and_the_table(tmp_path: Path):
    summary = {"images": 100, "label_issues": {"checked": True, "issues": 8, "fraction": 0.08}}
    health.check_block(None, summary, tmp_path)  # off by default
    health.check_block(0.1, summary, tmp_path)
    with pytest.raises(ValueError, match=r"validate\.max_label_issue_fraction=0\.05.*label_issues\.csv"):
        health.check_block(0.05, summary, tmp_path)
