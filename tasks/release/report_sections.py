"""More sections of the run report: the training params, the augmentation preview, the production model's history
and the gate's record of both models' data; reads the candidate's model card, data/reports/augmentation_preview.png,
registry/history.jsonl (and the lineage record of gate.json, given by tasks/release/report.py).

Kept beside tasks/release/report.py (which lays out the page and owns its small HTML helpers) so that each
module stays small.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from tasks.paths import Paths

PREVIEW_FILE = "augmentation_preview.png"  # in paths.reports, written by the train stage


def _card(paths: Paths) -> dict[str, Any]:
    try:
        card = json.loads((paths.candidate / "model_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def _flatten(values: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", json.dumps(value) if isinstance(value, (list, type(None))) else str(value)))
    return rows


def training_params_section(paths: Paths) -> str:
    """The params the candidate was trained with (from its model card), and what training chose."""
    from tasks.release import report

    card = _card(paths)
    params = card.get("params") or {}
    if not params:
        return ("<section id=\"training-params\"><h2>Training params</h2>"
                f"{report._missing('No model card with params (train writes one).')}</section>")
    chosen = [("batch size used", str(card.get("batch_size", "—"))),
              ("epochs run", str(card.get("epochs_run", "—"))),
              ("epoch kept", str((card.get("validation") or {}).get("epoch", "—"))),
              ("precision", str(card.get("precision", "—"))), ("image size", str(card.get("image_size", "—"))),
              ("resize", str(card.get("resize", "—")))]
    rows = _flatten(params.get("train") or {}, "train.") + _flatten(params.get("augment") or {}, "preprocess.augment.")
    rows.append(("base.seed", str(params.get("seed", "—"))))
    return ("<section id=\"training-params\"><h2>Training params</h2>" + report._pairs(chosen)
            + "<h3>params.yaml</h3>" + report._pairs(rows, code=True) + "</section>")


def augmentation_section(paths: Paths) -> str:
    """The augmentation preview picture, with what it shows."""
    from tasks.release import report

    picture = paths.reports / PREVIEW_FILE
    if not picture.is_file():
        return ("<section id=\"augmentation\"><h2>Augmentation preview</h2>"
                f"{report._missing(f'Not drawn yet: the train stage writes {PREVIEW_FILE}.')}</section>")
    data = base64.b64encode(picture.read_bytes()).decode("ascii")
    caption = ("Each row is one training image, its class at the left: the image as stored (column “original”), "
               "then augmented draws of it as training sees them; the settings are written underneath.")
    return (f"<section id=\"augmentation\"><h2>Augmentation preview</h2><figure><img src=\"data:image/png;base64,"
            f"{data}\" alt=\"augmentation preview\"><figcaption>{html.escape(caption)}</figcaption></figure></section>")


def production_section(paths: Paths) -> str:
    """Which model is in production now and the changes that led there (promotions, forced ones, rollbacks)."""
    from tasks.release import promote, report

    history = promote.read_history(paths)
    if not history:
        return ("<section id=\"production\"><h2>Production model</h2>"
                f"{report._missing('No model was ever promoted.')}</section>")
    current = promote.current_version(paths) or "none (every promotion was rolled back)"
    rows = []
    for event in reversed(history[-10:]):
        what = event["action"]
        if what == "promote" and event.get("forced"):
            what = "promote (forced over the gate)"
        if what == "rollback":
            what = f"rollback to {event.get('restored', '?')}"
        rows.append([str(event.get("at", "")), what, str(event.get("version", "")), str(event.get("reason", "")),
                     str(event.get("requested_by", ""))])
    return (f"<section id=\"production\"><h2>Production model</h2>{report._pairs([('in production now', current)])}"
            "<h3>Latest changes, newest first</h3>"
            + report._table(["at", "change", "version", "reason", "by"], rows, numeric_from=99) + "</section>")


def _lineage_sentence(record: dict[str, Any]) -> tuple[str, bool]:
    """What the gate found of the two models' data, and whether a person should look (other data, or unknown)."""
    relation, kept = record.get("relation"), record.get("production_images_kept")
    if relation == "same data":
        return "Both models learnt from the same data (the same split table).", False
    if relation == "grown" and isinstance(kept, (int, float)):
        return (f"The candidate's data is the production model's data grown: {kept:.0%} of production's images "
                f"(estimated on {record.get('compared_images')}) are in it.", False)
    if record.get("note"):
        return str(record["note"])[:1].upper() + str(record["note"])[1:] + ".", True
    return "No production model: the candidate's data alone.", False


def data_lineage_part(record: dict[str, Any] | None) -> str:
    """The gate's record of both models' data (source, image count, manifest and split table hashes, labels), with
    whether the candidate's data is production's data grown; nothing for a gate.json written before it kept one."""
    from tasks.release import report

    if not isinstance(record, dict) or not isinstance(record.get("candidate"), dict):
        return ""
    sentence, warn = _lineage_sentence(record)
    models = [("candidate", record["candidate"])]
    if isinstance(record.get("production"), dict):
        models.append(("production", record["production"]))

    def short(value: Any) -> str:
        return str(value)[:12] if value else "not recorded"

    rows = [[name, str(model.get("source") or "not recorded"), report._number(model.get("images")),
             short(model.get("manifest_sha256")), short(model.get("data_sha256")), report._number(model.get("labels"))]
            for name, model in models]
    heading, style = ("The data differ", " class=\"note\"") if warn else ("The data behind each model", "")
    return (f"<h3>{heading}</h3><p{style}>{html.escape(sentence)}</p>"
            + report._table(["model", "source", "images", "manifest sha256", "split table sha256", "labels"], rows,
                            numeric_from=99)
            + f"<p>{html.escape(str(record.get('rule', '')))}.</p>")


def lineage_markdown(record: dict[str, Any] | None) -> list[str]:
    """The lines the Prefect artifact shows when the candidate's data is not shown to be production's data grown."""
    if not isinstance(record, dict) or not record.get("note"):
        return []
    return [f"Data: {_lineage_sentence(record)[0]}".replace("|", "\\|").replace("\n", " "), ""]


def sections(paths: Paths) -> list[str]:
    return [production_section(paths), training_params_section(paths), augmentation_section(paths)]
