"""Drift between runs: how far the features of the images new since the last run sit from that run's images of their
class, per class and overall; pure computation, reads and writes nothing (tasks/health/drift_reference.py keeps what
the next run compares against).

The shift of a class is the distance between the centre (mean unit feature) of its new images and the centre of
its images at the last run, in units of that class's spread at the last run (the root mean squared distance of its
images to their centre), with the sampling noise of both centres taken out:

    shift^2 = (|m_new - m_ref|^2 - v_new / n_new - v_ref / n_ref) / v_ref

where m is a centre, v the mean squared distance to it (unbiased) and n a count; a shift^2 below 0 (pure noise)
counts as 0. Without the noise terms a handful of new images would always look shifted: the centre of n images
drawn from the very same class lies about spread / sqrt(n) from the class's centre. With one new image, v_new is
taken to be v_ref. A shift of 0.5 means the new images' centre moved half the distance a typical image of the class
lies from its centre, whatever the backbone, the image size or the photo set. The overall figure is the same
quantity pooled over classes, each weighted by its new images: sqrt(max(0, sum n_c shift_c^2 / sum n_c)), with
the unclipped estimates so that noise cancels across classes.

On the clothing photos (efficientnet_lite0 features, benchmarks/BENCHMARKS.md "Data drift"), images drawn at random
from the same classes stayed under 0.47 from 5 new images of a class on (one new image reaches 0.5 one time in eight:
hence MIN_IMAGES), greyscale copies scored up to 0.42, a class's new images taken from a neighbouring class 0.54 to
0.74; health.drift_warning 0.5 sits between.

Cost: the comparison is O(new images x features) against O(classes x features) summaries kept from the last run (it
never reads the last run's features again); summarising this run for the next is one pass over the features the stage
has loaded anyway (0.3 s for 50,000 images x 1,280 features). The spread ratio (sqrt(v_new / v_ref)) says whether the
new images vary more (> 1) or less (< 1) than the class did; it is shown, not judged.
The stand-in features (pixels, when no backbone's are cached) are standardised on each run's own images, so two runs
measure in slightly different frames: there the shift is approximate, more so the more new images differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks import label_sets

CHUNK = 8192  # rows summed at once
MIN_IMAGES = 5  # new images of a class (or in all) before its shift may warn: the estimate's noise falls as 1/n
FLAT_VARIANCE = 1e-8  # a class whose earlier images were all alike has no spread to measure against
METHOD = ("distance of the new images' mean unit feature from the last run's mean of their class, in units of "
          "that class's spread then (root mean squared distance to its mean), sampling noise of both means removed")


@dataclass(frozen=True)
class Reference:
    """What a run keeps of its images for the next run to compare against."""

    labels: list[str]
    counts: np.ndarray  # int64 [classes]: images of each class
    means: np.ndarray  # float32 [classes, features]: mean unit feature of each class
    variances: np.ndarray  # float64 [classes]: mean squared distance to that mean (unbiased); the spread squared
    seen: np.ndarray  # uint64, sorted: the first 8 bytes of the sha256 of every image of the run
    features: str  # what the features were; a run with other features cannot be compared against these


def prefixes(sha256s: list[str]) -> np.ndarray:
    """The first 8 bytes of each hex sha256 as uint64 (a collision among 10^7 images has odds under 1 in 10^5)."""
    if not sha256s:
        return np.zeros(0, dtype=np.uint64)
    return np.frombuffer(bytes.fromhex("".join(digest[:16] for digest in sha256s)), dtype=">u8").astype(np.uint64)


def class_rows(cells: pd.Series, label_index: np.ndarray, labels: list[str], multi_label: bool) -> list[np.ndarray]:
    """The rows of each class (of each label in a multi-label project: an image counts for every label it holds)."""
    if not multi_label:
        order = np.argsort(label_index, kind="stable")
        bounds = np.searchsorted(label_index[order], np.arange(len(labels) + 1))
        return [order[bounds[index]:bounds[index + 1]] for index in range(len(labels))]
    exploded = cells.reset_index(drop=True).astype(str).map(label_sets.split).explode().dropna()
    position = {label: index for index, label in enumerate(labels)}
    rows: list[list[int]] = [[] for _ in labels]
    for row, label in zip(exploded.index, exploded.to_numpy()):
        if label in position:
            rows[position[label]].append(int(row))
    return [np.asarray(members, dtype=np.int64) for members in rows]


def _centre(unit: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, float]:
    """(mean of the rows `members`, their unbiased mean squared distance to it; nan for fewer than two rows), in
    float64 from blocks of CHUNK rows: no float64 copy of a large class is ever made."""
    total, squares = np.zeros(unit.shape[1]), 0.0
    for start in range(0, len(members), CHUNK):
        block = unit[members[start:start + CHUNK]]
        total += block.sum(axis=0, dtype=np.float64)
        squares += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    mean = total / max(len(members), 1)
    if len(members) < 2:
        return mean, float("nan")
    return mean, max(squares - len(members) * float(mean @ mean), 0.0) / (len(members) - 1)


def summarise(unit: np.ndarray, rows: list[np.ndarray], labels: list[str], sha256s: list[str],
              features: str) -> Reference:
    """The reference of this run's images: each class's count, mean and spread, and which images they were."""
    width = unit.shape[1] if unit.ndim == 2 else 0
    counts = np.array([len(members) for members in rows], dtype=np.int64)
    means = np.zeros((len(labels), width), dtype=np.float32)
    variances = np.full(len(labels), np.nan)
    for index, members in enumerate(rows):
        if len(members):
            mean, variance = _centre(unit, members)
            means[index], variances[index] = mean, variance
    return Reference(list(labels), counts, means, variances, np.unique(prefixes(sha256s)), features)


def _class_shift(reference: Reference, index: int | None, unit: np.ndarray, new: np.ndarray) -> dict[str, Any]:
    """One class's row: its new images, the images it had, the shift (None with a note when unmeasurable)."""
    row: dict[str, Any] = {"new_images": len(new), "reference_images": 0, "shift": None, "spread_ratio": None}
    if index is None or reference.counts[index] == 0:
        return {**row, "note": "a class the last run did not have"}
    count, variance = int(reference.counts[index]), float(reference.variances[index])
    row["reference_images"] = count
    if count < 2 or not np.isfinite(variance):
        return {**row, "note": "one image of the class at the last run: no spread to measure against"}
    if variance < FLAT_VARIANCE:
        return {**row, "note": "the class's images at the last run were all alike: no spread to measure against"}
    mean, new_variance = _centre(unit, new)
    own = new_variance if len(new) >= 2 else variance
    squared = (float(((mean - reference.means[index].astype(np.float64)) ** 2).sum()) - own / len(new)
               - variance / count) / variance
    row.update(shift=round(float(np.sqrt(max(squared, 0.0))), 4), squared=squared,
               spread_ratio=round(float(np.sqrt(new_variance / variance)), 4) if len(new) >= 2 else None)
    return row


def measure(reference: Reference, unit: np.ndarray, rows: list[np.ndarray], labels: list[str],
            sha256s: list[str]) -> dict[str, Any]:
    """The drift of the images that `reference` did not see: per class, overall and the largest (before judging)."""
    is_new = ~np.isin(prefixes(sha256s), reference.seen)
    where = {label: index for index, label in enumerate(reference.labels)}
    classes = []
    for label, members in zip(labels, rows):
        new = members[is_new[members]]
        if len(new):
            classes.append({"class": label, **_class_shift(reference, where.get(label), unit, new)})
    measured = [row for row in classes if row["shift"] is not None]
    weight = sum(row["new_images"] for row in measured)
    overall = (round(float(np.sqrt(max(0.0, sum(row["new_images"] * row["squared"] for row in measured) / weight))),
                     4) if weight else None)
    for row in classes:
        row.pop("squared", None)
    classes.sort(key=lambda row: (row["shift"] is None, -(row["shift"] or 0.0), row["class"]))
    largest = next(({"class": row["class"], "shift": row["shift"], "new_images": row["new_images"]}
                    for row in classes if row["shift"] is not None), None)
    return {"new_images": int(is_new.sum()), "reference_images": int(len(reference.seen)),
            "measured_images": weight, "overall": overall, "largest": largest, "classes": classes}


def judge(drift: dict[str, Any], threshold: float) -> dict[str, Any]:
    """`drift` with what passes `threshold` (health.drift_warning): the shifted classes and a warning, or None."""
    classes = drift.get("classes") or []
    shifted = [row["class"] for row in classes
               if row.get("shift") is not None and row["new_images"] >= MIN_IMAGES and row["shift"] > threshold]
    overall = drift.get("overall")
    overall_over = (overall is not None and (drift.get("measured_images") or 0) >= MIN_IMAGES
                    and overall > threshold)
    warning = None
    if shifted or overall_over:
        named = ", ".join(f"{row['class']} {row['shift']:.2f}" for row in classes if row["class"] in shifted[:5])
        more = f" (and {len(shifted) - 5} more)" if len(shifted) > 5 else ""
        where = (f"the new images of {len(shifted)} class(es) sit far from that class's images of the last run: "
                 f"{named}{more} spreads" if shifted else "the new images sit far from the last run's images")
        warning = (f"data drift: {where}; {drift.get('new_images', 0)} new images, overall shift {overall:.2f} "
                   f"(health.drift_warning={threshold}); check that they are labelled right and come from the same "
                   "kind of source (data/reports/data_health/drift.json)")
    return {**drift, "threshold": threshold, "min_images": MIN_IMAGES, "shifted": shifted, "warning": warning}


def compare(earlier: Reference | None, earlier_drift: dict[str, Any] | None, problem: str | None,
            current: Reference, unit: np.ndarray, rows: list[np.ndarray], labels: list[str], sha256s: list[str],
            threshold: float) -> dict[str, Any]:
    """drift.json: the drift of this run's new images against `earlier` (the last run's reference), judged.

    No earlier reference (a first run, or `problem` says why it cannot be read) or other features: nothing to
    measure, and the next run compares against this one. No new images (a run for a changed param or code, or
    images only removed or relabelled): the last measured drift is carried over, judged with today's threshold.
    """
    base = {"method": METHOD, "features": current.features, "images": len(sha256s), "carried": False,
            "new_images": 0, "reference_images": 0, "measured_images": 0, "overall": None, "largest": None,
            "classes": []}
    if earlier is None:
        note = problem or "no earlier run to compare with: the next run measures its new images against these"
        return judge({**base, "status": "first_run", "note": note}, threshold)
    if earlier.features != current.features or earlier.means.shape[1:] != current.means.shape[1:]:
        note = (f"the features changed since the last run ({earlier.features} then, {current.features} now), so "
                "its images cannot be compared with these; the next run compares against these")
        return judge({**base, "status": "not_comparable", "note": note}, threshold)
    measured = measure(earlier, unit, rows, labels, sha256s)
    if measured["new_images"] == 0:
        if earlier_drift and earlier_drift.get("status") == "measured":
            note = ("no images new since the last run; the drift measured when the newest images arrived is carried "
                    "over")
            kept = {key: value for key, value in earlier_drift.items() if key in base}
            return judge({**base, **kept, "features": current.features, "images": len(sha256s), "carried": True,
                          "status": "measured", "note": note}, threshold)
        note = "no images new since the last run: nothing to measure"
        return judge({**base, **measured, "status": "no_new_images", "note": note}, threshold)
    note = (f"{measured['new_images']} images new since the last run, compared with the "
            f"{measured['reference_images']} it had")
    return judge({**base, **measured, "status": "measured", "note": note}, threshold)
