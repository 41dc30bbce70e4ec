"""Compares the data lineage of the candidate and the production model (from their model cards, written by
tasks/train/lineage.py); reads nothing itself, the gate puts the comparison into gate.json.

The rule, cheap and stated in each record:
- the same split table hash (`data_sha256`): the same data;
- otherwise each card's image sample (the smallest image sha256s) is cut to the slice of the hash space both cover,
  where each holds every image of its model's data: the share of production's images there that the candidate's
  data also holds estimates the share of all production's images it holds. At least GROWN_SHARE (0.9): the
  candidate's data is production's data grown (images added, a few removed); below it: other data;
- fewer than MIN_COMPARED production images in that slice (a candidate with far more images than production), or a
  card without a sample (a model trained before cards kept one): unknown.
Images are compared by content, so moving or renaming files changes nothing; labels are compared by the gate.
"""

from __future__ import annotations

from typing import Any

GROWN_SHARE = 0.9
MIN_COMPARED = 20
SAME, GROWN, OTHER, UNKNOWN = "same data", "grown", "other data", "unknown"


def _summary(card: dict[str, Any]) -> dict[str, Any]:
    """What the gate record keeps of one model's lineage (not its image sample)."""
    lineage = card.get("data_lineage") if isinstance(card.get("data_lineage"), dict) else {}
    labels = card.get("labels") if isinstance(card.get("labels"), list) else []
    return {"version": card.get("version"), "source": lineage.get("source"),
            "manifest_sha256": lineage.get("manifest_sha256"), "data_sha256": card.get("data_sha256"),
            "images": lineage.get("images"), "labels": len(labels), "label_set": sorted(map(str, labels))}


def _covered(card: dict[str, Any]) -> tuple[set[str], str | None] | None:
    """A card's image sample and the largest hash below which it holds every image (None: all of them)."""
    lineage = card.get("data_lineage")
    sample = lineage.get("image_sample") if isinstance(lineage, dict) else None
    if not isinstance(sample, list) or not isinstance(lineage.get("images"), int):
        return None
    whole = len(sample) >= lineage["images"]  # a data set no larger than the sample is in it whole
    return set(sample), (None if whole or not sample else max(sample))


def compare(candidate_card: dict[str, Any], production_card: dict[str, Any] | None) -> dict[str, Any]:
    """Both models' lineage and how the candidate's data relates to production's, with a sentence for people."""
    record: dict[str, Any] = {"candidate": _summary(candidate_card),
                              "production": _summary(production_card) if production_card else None,
                              "relation": None, "production_images_kept": None, "compared_images": None,
                              "rule": f"production's data grown: at least {GROWN_SHARE:.0%} of its images (by content, "
                                      "estimated on a sample) are in the candidate's data", "note": None}
    if production_card is None:
        return record
    candidate, production = record["candidate"], record["production"]
    sources = (f" (production's source: {production['source'] or 'not recorded'}; the candidate's: "
               f"{candidate['source'] or 'not recorded'})")
    if candidate["data_sha256"] and candidate["data_sha256"] == production["data_sha256"]:
        record.update(relation=SAME, production_images_kept=1.0)
        return record
    candidate_sample, production_sample = _covered(candidate_card), _covered(production_card)
    if candidate_sample is None or production_sample is None:
        which = "production's model card" if production_sample is None else "the candidate's model card"
        record.update(relation=UNKNOWN, note=f"{which} records no sample of its images (trained before imgpipe "
                                             "kept one), so the gate cannot tell whether the candidate's data is "
                                             f"production's data grown{sources}")
        return record
    limits = [limit for limit in (candidate_sample[1], production_sample[1]) if limit is not None]
    limit = min(limits) if limits else None
    compared = {digest for digest in production_sample[0] if limit is None or digest <= limit}
    kept = len(compared & candidate_sample[0]) / len(compared) if compared else None
    record.update(compared_images=len(compared), production_images_kept=kept)
    every_image = production_sample[1] is None and len(compared) == len(production_sample[0])  # exact, not a sample
    if kept is None or (len(compared) < MIN_COMPARED and not every_image):
        record.update(relation=UNKNOWN, note=f"too few of production's images fall in the slice both samples cover "
                                             f"({len(compared)}) to tell whether the candidate's data is "
                                             f"production's data grown{sources}")
    elif kept >= GROWN_SHARE:
        record.update(relation=GROWN)
    else:
        record.update(relation=OTHER, note=f"the candidate's data is not the production model's data grown: only "
                                           f"{kept:.0%} of production's images (estimated on {len(compared)}) are "
                                           f"in it{sources}, so the two were tested on different images and "
                                           "production's scores here are not the scores it earned on its own data")
    return record
