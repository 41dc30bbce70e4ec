"""Exact duplicates and label conflicts among the good images: keeps one copy of content repeated in a class and sets
aside content found under two labels; pure computation on records."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class LabelConflictError(ValueError):
    """The same content under two labels, with ingest.on_label_conflict: fail."""


def resolve_duplicates(
    good: list[dict[str, Any]], on_label_conflict: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[list[str]]]:
    """Keep one copy of content repeated inside a class; set aside content found under two labels."""
    labels_by_hash: dict[str, set[str]] = defaultdict(set)
    for record in good:
        labels_by_hash[record["sha256"]].add(record["label"])
    conflicts = {digest: labels for digest, labels in labels_by_hash.items() if len(labels) > 1}
    if conflicts and on_label_conflict == "fail":
        examples = [sorted(r["source_path"] for r in good if r["sha256"] == digest) for digest in list(conflicts)[:5]]
        raise LabelConflictError(
            f"{len(conflicts)} image(s) appear under two or more labels, e.g. {examples}; remove the wrong copies "
            "or set ingest.on_label_conflict: quarantine"
        )
    kept, conflicted, duplicates = [], [], []
    first_by_key: dict[tuple[str, str], str] = {}
    for record in good:
        if record["sha256"] in conflicts:
            others = ", ".join(sorted(conflicts[record["sha256"]] - {record["label"]}))
            conflicted.append(record | {"reason": "label_conflict", "detail": f"same content also under label(s) {others}"})
            continue
        key = (record["label"], record["sha256"])
        if key in first_by_key:
            duplicates.append([first_by_key[key], record["source_path"]])
            continue
        first_by_key[key] = record["source_path"]
        kept.append(record)
    return kept, conflicted, duplicates
