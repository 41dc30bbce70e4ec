"""Drift between runs on generated features: new images drawn like the old ones score near 0 and warn of nothing; a
class whose new images moved scores high and warns by name; a first run, other features, too few new images, and a
run with nothing new each say so; the reference file survives a round trip and refuses what is not one."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from tasks.config import parse_config
from tasks.health import drift, drift_reference, features

CLASSES, WIDTH = 4, 48
LABELS = [f"class{index}" for index in range(CLASSES)]


def digests(prefix: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}-{index}".encode()).hexdigest() for index in range(count)]


def draw(per_class: int, seed: int, moved: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit features of CLASSES clusters (fixed centres, noise of `seed`) and their labels; `moved` shifts a class's
    points by that many noise sigmas times sqrt(WIDTH) (about that many of its spreads) in a random direction."""
    centres = np.random.default_rng(0).normal(size=(CLASSES, WIDTH)) * 3
    generator = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), per_class)
    points = centres[labels] + generator.normal(size=(len(labels), WIDTH))
    for label, amount in (moved or {}).items():
        direction = generator.normal(size=WIDTH)
        points[labels == label] += amount * np.sqrt(WIDTH) * direction / np.linalg.norm(direction)
    return features.normalised(points), labels


def reference_of(unit: np.ndarray, labels: np.ndarray, sha256s: list[str], kind: str = "test features"):
    rows = drift.class_rows(pd.Series(np.asarray(LABELS)[labels]), labels, LABELS, False)
    return drift.summarise(unit, rows, LABELS, sha256s, kind)


def next_run(earlier_unit, earlier_labels, new_unit, new_labels, threshold: float = 0.5, earlier_drift=None,
             kind: str = "test features"):
    """drift.json of a run holding the earlier images and the new ones."""
    old_digests, new_digests = digests("old", len(earlier_labels)), digests("new", len(new_labels))
    earlier = reference_of(earlier_unit, earlier_labels, old_digests)
    unit, labels = np.vstack([earlier_unit, new_unit]), np.concatenate([earlier_labels, new_labels])
    sha256s = old_digests + new_digests
    rows = drift.class_rows(pd.Series(np.asarray(LABELS)[labels]), labels, LABELS, False)
    current = drift.summarise(unit, rows, LABELS, sha256s, kind)
    return drift.compare(earlier, earlier_drift, None, current, unit, rows, LABELS, sha256s, threshold), current


def test_new_images_like_the_old_ones_score_near_zero_and_warn_of_nothing():
    old, old_labels = draw(60, seed=1)
    new, new_labels = draw(15, seed=2)
    found, _ = next_run(old, old_labels, new, new_labels)
    assert found["status"] == "measured" and found["new_images"] == 60 and found["reference_images"] == 240
    assert found["overall"] < 0.15 and all(row["shift"] < 0.3 for row in found["classes"])
    assert all(0.7 < row["spread_ratio"] < 1.3 for row in found["classes"])
    assert found["shifted"] == [] and found["warning"] is None


def test_a_class_whose_new_images_moved_scores_high_and_warns_by_name():
    old, old_labels = draw(60, seed=1)
    new, new_labels = draw(15, seed=2, moved={2: 1.0})
    found, _ = next_run(old, old_labels, new, new_labels)
    by_class = {row["class"]: row for row in found["classes"]}
    assert by_class["class2"]["shift"] > 0.7 and found["classes"][0]["class"] == "class2"  # largest first
    assert all(by_class[name]["shift"] < 0.3 for name in ("class0", "class1", "class3"))
    assert found["largest"] == {"class": "class2", "shift": by_class["class2"]["shift"], "new_images": 15}
    assert found["shifted"] == ["class2"]
    assert "class2" in found["warning"] and "health.drift_warning=0.5" in found["warning"]
    assert drift.judge(found, 2.0)["warning"] is None  # a higher threshold silences it


def test_the_shift_is_in_the_class_s_own_spread_whatever_the_feature_scale():
    old, old_labels = draw(60, seed=1)
    new, new_labels = draw(15, seed=2, moved={1: 0.6})
    plain, _ = next_run(old, old_labels, new, new_labels)
    doubled, _ = next_run(old * 2, old_labels, new * 2, new_labels)
    assert [row["shift"] for row in plain["classes"]] == pytest.approx([row["shift"] for row in doubled["classes"]])


def test_a_few_shifted_images_are_shown_but_do_not_warn():
    old, old_labels = draw(60, seed=1)
    new, new_labels = draw(15, seed=2, moved={2: 1.5})
    keep = (new_labels != 2) | (np.cumsum(new_labels == 2) <= drift.MIN_IMAGES - 1)  # 4 images of class2
    found, _ = next_run(old, old_labels, new[keep], new_labels[keep])
    row = next(row for row in found["classes"] if row["class"] == "class2")
    assert row["new_images"] == drift.MIN_IMAGES - 1 and row["shift"] > 0.7
    assert found["shifted"] == [] and found["warning"] is None


def test_a_first_run_has_no_earlier_run_and_a_class_never_seen_has_no_shift():
    unit, labels = draw(10, seed=1)
    sha256s = digests("old", len(labels))
    current = reference_of(unit, labels, sha256s)
    rows = drift.class_rows(pd.Series(np.asarray(LABELS)[labels]), labels, LABELS, False)
    first = drift.compare(None, None, None, current, unit, rows, LABELS, sha256s, 0.5)
    assert first["status"] == "first_run" and "no earlier run" in first["note"]
    assert first["overall"] is None and first["warning"] is None and first["classes"] == []

    kept = labels != 3
    earlier = reference_of(unit[kept], labels[kept], [digest for digest, keep in zip(sha256s, kept) if keep])
    found = drift.measure(earlier, unit, rows, LABELS, sha256s)
    assert found["classes"] == [{"class": "class3", "new_images": 10, "reference_images": 0, "shift": None,
                                 "spread_ratio": None, "note": "a class the last run did not have"}]
    assert found["overall"] is None and found["largest"] is None


def test_other_features_cannot_be_compared():
    old, old_labels = draw(20, seed=1)
    new, new_labels = draw(5, seed=2)
    earlier = reference_of(old, old_labels, digests("old", len(old_labels)), kind="efficientnet_lite0 features")
    unit, labels = np.vstack([old, new]), np.concatenate([old_labels, new_labels])
    sha256s = digests("old", len(old_labels)) + digests("new", len(new_labels))
    rows = drift.class_rows(pd.Series(np.asarray(LABELS)[labels]), labels, LABELS, False)
    current = drift.summarise(unit, rows, LABELS, sha256s, "efficientnet_lite2 features")
    found = drift.compare(earlier, None, None, current, unit, rows, LABELS, sha256s, 0.5)
    assert found["status"] == "not_comparable" and "features changed" in found["note"] and found["overall"] is None


def test_a_run_with_nothing_new_carries_the_last_drift_over_judged_with_today_s_threshold():
    old, old_labels = draw(60, seed=1)
    new, new_labels = draw(15, seed=2, moved={2: 1.0})
    measured, current = next_run(old, old_labels, new, new_labels)
    unit, labels = np.vstack([old, new]), np.concatenate([old_labels, new_labels])
    sha256s = digests("old", len(old_labels)) + digests("new", len(new_labels))
    rows = drift.class_rows(pd.Series(np.asarray(LABELS)[labels]), labels, LABELS, False)
    again = drift.compare(current, measured, None, current, unit, rows, LABELS, sha256s, 0.5)
    assert again["carried"] and again["status"] == "measured" and "carried over" in again["note"]
    assert again["classes"] == measured["classes"] and again["warning"] == measured["warning"]
    assert drift.compare(current, measured, None, current, unit, rows, LABELS, sha256s, 5.0)["warning"] is None
    nothing = drift.compare(current, None, None, current, unit, rows, LABELS, sha256s, 0.5)
    assert nothing["status"] == "no_new_images" and nothing["new_images"] == 0 and nothing["warning"] is None


def test_the_reference_survives_a_round_trip_and_a_broken_file_is_refused():
    unit, labels = draw(10, seed=1)
    current = reference_of(unit, labels, digests("old", len(labels)))
    found = {"status": "first_run", "note": "n"}
    back, carried = drift_reference.decode(drift_reference.encode(current, found))
    assert back.labels == LABELS and back.features == current.features and carried == found
    assert np.array_equal(back.counts, current.counts) and np.array_equal(back.seen, current.seen)
    assert np.allclose(back.means, current.means) and np.allclose(back.variances, current.variances)
    with pytest.raises(ValueError, match="not a drift reference"):
        drift_reference.decode(b"not an archive")


def test_a_multi_label_image_counts_for_each_of_its_labels():
    cells = pd.Series(["a;b", "b", "c", "a"], index=[10, 11, 12, 13])
    rows = drift.class_rows(cells, np.full(4, -1), ["a", "b", "c"], True)
    assert [members.tolist() for members in rows] == [[0, 3], [0, 1], [2]]


def test_the_threshold_is_a_checked_param():
    with pytest.raises(ValueError, match=r"health\.drift_warning must be > 0"):
        parse_config({"health": {"drift_warning": 0}})
    assert parse_config({}).health.drift_warning == 0.5
