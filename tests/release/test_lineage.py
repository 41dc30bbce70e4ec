"""The gate's comparison of the candidate's and production's data lineage, on hand-made model cards."""

import hashlib

import pytest

from tasks.release import lineage
from tasks.train import lineage as train_lineage


def _digests(name: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{name}-{number}".encode()).hexdigest() for number in range(count)]


def _card(digests: list[str], source: str, data: str, labels: list[str] | None = None) -> dict:
    """A model card as train writes it: the split table hash, the labels and the data lineage."""
    return {"version": f"v-{data}", "data_sha256": data, "labels": labels or [str(digit) for digit in range(10)],
            "data_lineage": {"source": source, "manifest_sha256": "m-" + data, "images": len(set(digits[:64]
                                                                                                 for digits in digests)),
                             "image_sample": train_lineage.image_sample(digests)}}


def test_other_data_under_the_same_labels_is_named_with_both_sources():
    # the reported case: hand-sign photos 0-9 gated against the demo digits model (same label set, other data)
    digits, photos = _digests("digit", 1797), _digests("photo", 2062)
    record = lineage.compare(_card(photos, "/home/me/hand-signs", "b" * 64),
                             _card(digits, "data/demo/digits", "a" * 64))
    assert record["relation"] == lineage.OTHER and record["production_images_kept"] == 0.0
    assert record["compared_images"] >= lineage.MIN_COMPARED
    assert record["production"]["source"] == "data/demo/digits" and record["candidate"]["source"] == "/home/me/hand-signs"
    assert record["production"]["manifest_sha256"] == "m-" + "a" * 64 and record["candidate"]["images"] == 2062
    assert record["production"]["label_set"] == record["candidate"]["label_set"]
    assert record["note"].startswith("the candidate's data is not the production model's data grown: only 0% of "
                                     "production's images")
    assert "production's source: data/demo/digits; the candidate's: /home/me/hand-signs" in record["note"]


@pytest.mark.parametrize("added, removed", [(20, 0), (1000, 30), (20000, 0)])
def test_production_data_grown_is_recognised_whatever_was_added(added, removed):
    production = _digests("image", 1000)
    candidate = production[removed:] + _digests("new", added)
    record = lineage.compare(_card(candidate, "src", "c"), _card(production, "src", "p"))
    assert record["relation"] == lineage.GROWN and record["note"] is None
    assert record["production_images_kept"] >= 0.9


def test_much_of_production_dropped_is_other_data_and_the_same_split_table_is_the_same_data():
    production = _digests("image", 3000)
    half = lineage.compare(_card(production[:1500] + _digests("new", 1500), "src", "c"), _card(production, "src", "p"))
    assert half["relation"] == lineage.OTHER and 0.35 < half["production_images_kept"] < 0.65
    same = lineage.compare(_card(production, "src", "p"), _card(production, "src", "p"))
    assert same["relation"] == lineage.SAME and same["note"] is None


def test_small_data_sets_are_compared_whole_and_a_sample_too_thin_to_tell_says_so():
    tiny = _digests("tiny", 12)  # smaller than the sample: compared image by image, however few
    assert lineage.compare(_card(tiny + _digests("new", 3), "s", "c"), _card(tiny, "s", "p"))["relation"] == \
        lineage.GROWN
    # a candidate with 400 times production's images: too few of production's sampled images fall in the slice of
    # the hash space the candidate's sample covers to tell
    production = _digests("image", 1000)
    record = lineage.compare(_card(production + _digests("new", 400000), "s", "c"), _card(production, "s", "p"))
    assert record["relation"] == lineage.UNKNOWN and "too few of production's images" in record["note"]


def test_a_production_card_without_lineage_is_unknown_and_no_production_gives_no_relation():
    candidate = _card(_digests("image", 100), "src", "c")
    old = {"version": "old", "data_sha256": "x", "labels": ["a"]}  # written before cards kept a lineage
    record = lineage.compare(candidate, old)
    assert record["relation"] == lineage.UNKNOWN and record["production"]["source"] is None
    assert record["note"].startswith("production's model card records no sample of its images")
    first = lineage.compare(candidate, None)
    assert first["production"] is None and first["relation"] is None and first["note"] is None
