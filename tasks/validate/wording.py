"""Puts validation results into words: each failed check with its observed values and the param that sets its limit,
and the one-screen summary; pure computation, reads and writes nothing."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tasks.params import ValidateParams
from tasks.validate.facts import Facts, labels_of, repeated_content


def _quoted(values: Any, limit: int = 8) -> str:
    values = [str(value) for value in values]
    text = ", ".join(repr(value) for value in values[:limit])
    return text + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _span(low: Any, high: Any) -> str:
    return f"{low}" if low == high else f"{low}..{high}"


def describe_failure(name: str, result: dict[str, Any], manifest: pd.DataFrame, facts: Facts,
                     params: ValidateParams) -> str:
    """One failed check in plain words, with the observed values and the param that sets the limit."""
    if name.startswith("not_null_"):
        return f"{result.get('unexpected_count')} manifest rows have no {name.removeprefix('not_null_')}"
    if name == "labels_expected":
        labels = labels_of(manifest.dropna(subset=["label"]))
        unknown = labels[~labels.isin(params.expected_labels or ())].value_counts()
        listed = ", ".join(f"{label!r} ({count} images)" for label, count in unknown.items())
        return f"labels not in validate.expected_labels: {listed}"
    if name == "labels_present":
        missing = sorted(set(params.expected_labels or ()) - set(facts.images_per_class))
        return f"expected labels with no images: {_quoted(missing)}"
    if name in ("width_range", "height_range"):
        side = name.removesuffix("_range")
        bad = manifest[(manifest[side] < params.min_side) | (manifest[side] > params.max_side)]
        examples = ", ".join(f"{row.path} ({row.width}x{row.height})" for row in bad.head(3).itertuples())
        return (f"{len(bad)} images have a {side} outside validate.min_side={params.min_side}..validate.max_side="
                f"{params.max_side} (observed {_span(bad[side].min(), bad[side].max())}), e.g. {examples}")
    if name == "sha256_unique":
        repeated = repeated_content(manifest)
        groups = [" = ".join(f"{row.path} [{row.label}]" for row in group.itertuples())
                  for _, group in repeated.groupby("sha256")]
        return f"{len(repeated)} images share their content (sha256) with another image: " + "; ".join(groups[:3])
    if name == "min_classes":
        labels = f" ({_quoted(facts.images_per_class)})" if facts.images_per_class else ""
        return f"only {len(facts.images_per_class)} classes{labels}, under validate.min_classes={params.min_classes}"
    if name == "max_classes":  # the labels are not listed: there are too many, and they are the user's data
        return (f"{len(facts.images_per_class)} classes, over validate.max_classes={params.max_classes}: the "
                f"per-class outputs (confusion matrix, per-class tables) and the evaluation's memory grow with the "
                f"number of classes; merge or drop classes in the source, or raise validate.max_classes in "
                f"params.yaml if the machine can afford it")
    if name == "min_images_per_class":
        limit = params.min_images_per_class
        small = sorted((count, label) for label, count in facts.images_per_class.items() if count < limit)
        if len(small) == 1:
            return f"class {small[0][1]!r} has {small[0][0]} images, under validate.min_images_per_class={limit}"
        listed = ", ".join(f"{label!r} ({count})" for count, label in small[:8])
        return f"{len(small)} classes have fewer than validate.min_images_per_class={limit} images: {listed}"
    if name == "max_bad_fraction":
        reasons = ", ".join(f"{reason}: {count}" for reason, count in facts.quarantined_by_reason.items())
        files = facts.images_used + facts.quarantined
        return (f"{facts.bad_fraction:.0%} of files were quarantined ({facts.quarantined} of {files}; {reasons}), "
                f"over validate.max_bad_fraction={params.max_bad_fraction:g}")
    if name == "split_leakage":
        shown = "; ".join(f"{first} ({first_split}) ~ {second} ({second_split})"
                          for first, first_split, second, second_split in facts.leaks[:5])
        more = f" and {len(facts.leaks) - 5} more" if len(facts.leaks) > 5 else ""
        return (f"{len(facts.leaks)} near-duplicate pair(s) lie in different given splits, so the evaluation sees "
                f"images close to training ones: {shown}{more}; move or remove one of each pair in the source")
    if name == "class_imbalance":
        classes = list(facts.train_images_per_class.items())
        (largest, most), (smallest, fewest) = classes[0], classes[-1]
        return (f"classes are imbalanced in the training images: {largest!r} has {most}, {smallest!r} {fewest} "
                f"(ratio {most / fewest:.1f}, over validate.warn_max_class_imbalance="
                f"{params.warn_max_class_imbalance:g}); set train.class_weight: balanced or "
                f"train.sampling: balanced so that the small classes are not ignored, and judge the model by "
                f"macro-F1 and per-class recall rather than accuracy")
    return f"check {name} failed: {result}"


def render_summary(facts: Facts, statuses: list[tuple[str, str, str]], headline: str) -> str:
    """The one-screen text report: the data set in figures, then each check as PASS, FAIL or WARN."""
    def listing(mapping: dict[str, int]) -> str:
        return ", ".join(f"{key}: {value}" for key, value in mapping.items()) or "none"

    classes = list(facts.images_per_class.items())
    if len(classes) > 24:  # keep one screen: the largest and the smallest classes
        classes = classes[:12] + [(f"... {len(classes) - 24} more classes", "")] + classes[-12:]
    width = max((len(label) for label, _ in classes), default=0)
    ingest = facts.ingest_summary
    lines = [headline, "", f"Images per class ({len(facts.images_per_class)} classes, {facts.images_used} images):"]
    lines += [f"  {label:<{width}}  {count}".rstrip() for label, count in classes]
    lines += [
        f"Images per format: {listing(facts.images_per_format)}",
        "Image size: " + (", ".join(f"{side} {_span(*span)} px" for side, span in facts.side_ranges.items()) or "n/a"),
        f"Quarantined: {facts.quarantined} ({facts.bad_fraction:.1%} of files); by reason: "
        f"{listing(facts.quarantined_by_reason)}",
        "; ".join(f"{title}: {ingest.get(key, 'n/a')}" for key, title in (
            ("files_seen", "Files seen"), ("duplicates_dropped", "duplicates dropped"),
            ("near_duplicate_groups", "near-duplicate groups"), ("non_image_files", "non-image files"),
            ("hidden_entries", "hidden entries"))),
    ]
    for key, title in (("empty_class_folders", "Empty class folders"), ("root_files", "Files at the source root"),
                       ("skipped_links", "Links not followed"), ("unreadable_folders", "Folders that could not be read")):
        if ingest.get(key):
            lines.append(f"{title} (ignored): {_quoted(ingest[key])}")
    lines += ["", "Checks:"]
    lines += [f"  {status:<4}  {title}" + (detail and f"\n        {detail}") for status, title, detail in statuses]
    lines += ["", "Details: result.json, data_docs/index.html (Great Expectations Data Docs)"]
    return "\n".join(lines) + "\n"
