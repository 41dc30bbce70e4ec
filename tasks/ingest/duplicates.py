"""Exact duplicates and label conflicts among the good images: keeps one copy of content repeated in a class and sets
aside content found under two labels; pure computation on a table."""

from __future__ import annotations

import pandas as pd


class LabelConflictError(ValueError):
    """The same content under two labels, with ingest.on_label_conflict: fail."""


def resolve_duplicates(good: pd.DataFrame, on_label_conflict: str) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                             list[list[str]]]:
    """Split the good images (columns source_path, label, sha256, ..., in source_path order) into the kept ones,
    the ones set aside for a label conflict (reason and detail filled in), and [first, dropped] duplicate pairs."""
    label_counts = good.groupby("sha256", sort=False)["label"].nunique()
    conflicted_hashes = label_counts.index[label_counts > 1]
    conflicts = (good[good["sha256"].isin(conflicted_hashes)].groupby("sha256")["label"]
                 .agg(lambda labels: sorted(set(labels))))  # only for the few hashes in conflict
    if len(conflicts) and on_label_conflict == "fail":
        examples = [sorted(good.loc[good["sha256"] == digest, "source_path"]) for digest in conflicts.index[:5]]
        raise LabelConflictError(
            f"{len(conflicts)} image(s) appear under two or more labels, e.g. {examples}; remove the wrong copies "
            "or set ingest.on_label_conflict: quarantine"
        )
    in_conflict = good["sha256"].isin(conflicts.index)
    conflicted = good[in_conflict].copy()
    conflicted["reason"] = "label_conflict"
    conflicted["detail"] = [
        "same content also under label(s) " + ", ".join(label for label in conflicts[digest] if label != own)
        for digest, own in zip(conflicted["sha256"], conflicted["label"])]
    rest = good[~in_conflict]
    repeated = rest.duplicated(["label", "sha256"], keep="first")
    first_path = rest[~repeated].set_index(["label", "sha256"])["source_path"]
    duplicates = [[first_path[(label, digest)], path]
                  for label, digest, path in zip(rest.loc[repeated, "label"], rest.loc[repeated, "sha256"],
                                                 rest.loc[repeated, "source_path"])]
    return rest[~repeated], conflicted, duplicates
