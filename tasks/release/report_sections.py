"""More sections of the run report: data health, the training params, the augmentation preview, the production model's
history and the gate's record of both models' data; reads data/reports/data_health/, the candidate's model card,
data/reports/augmentation_preview.png, registry/history.jsonl (and the lineage record of gate.json, given by
tasks/release/report.py).

Kept beside tasks/release/report.py (which lays out the page) so that each module stays small; both build their HTML
from tasks/release/report_html.py, so neither imports the other.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from tasks import data_health
from tasks.paths import Paths
from tasks.release import report_html

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
    card = _card(paths)
    params = card.get("params") or {}
    if not params:
        return ("<section id=\"training-params\"><h2>Training params</h2>"
                f"{report_html.missing('No model card with params (train writes one).')}</section>")
    chosen = [("batch size used", str(card.get("batch_size", "—"))),
              ("epochs run", str(card.get("epochs_run", "—"))),
              ("epoch kept", str((card.get("validation") or {}).get("epoch", "—"))),
              ("precision", str(card.get("precision", "—"))), ("image size", str(card.get("image_size", "—"))),
              ("resize", str(card.get("resize", "—")))]
    rows = _flatten(params.get("train") or {}, "train.") + _flatten(params.get("augment") or {}, "preprocess.augment.")
    rows.append(("base.seed", str(params.get("seed", "—"))))
    return ("<section id=\"training-params\"><h2>Training params</h2>" + report_html.pairs(chosen)
            + "<h3>params.yaml</h3>" + report_html.pairs(rows, code=True) + "</section>")


def augmentation_section(paths: Paths) -> str:
    """The augmentation preview picture, with what it shows."""
    picture = paths.reports / PREVIEW_FILE
    if not picture.is_file():
        return ("<section id=\"augmentation\"><h2>Augmentation preview</h2>"
                f"{report_html.missing(f'Not drawn yet: the train stage writes {PREVIEW_FILE}.')}</section>")
    data = base64.b64encode(picture.read_bytes()).decode("ascii")
    caption = ("Each row is one training image, its class at the left: the image as stored (column “original”), "
               "then augmented draws of it as training sees them; the settings are written underneath.")
    return (f"<section id=\"augmentation\"><h2>Augmentation preview</h2><figure><img src=\"data:image/png;base64,"
            f"{data}\" alt=\"augmentation preview\"><figcaption>{html.escape(caption)}</figcaption></figure></section>")


def production_section(paths: Paths) -> str:
    """Which model is in production now and the changes that led there (promotions, forced ones, rollbacks)."""
    from tasks.release import promote

    history = promote.read_history(paths)
    if not history:
        return ("<section id=\"production\"><h2>Production model</h2>"
                f"{report_html.missing('No model was ever promoted.')}</section>")
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
    return (f"<section id=\"production\"><h2>Production model</h2>{report_html.pairs([('in production now', current)])}"
            "<h3>Latest changes, newest first</h3>"
            + report_html.table(["at", "change", "version", "reason", "by"], rows, numeric_from=99) + "</section>")


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
    if not isinstance(record, dict) or not isinstance(record.get("candidate"), dict):
        return ""
    sentence, warn = _lineage_sentence(record)
    models = [("candidate", record["candidate"])]
    if isinstance(record.get("production"), dict):
        models.append(("production", record["production"]))

    def short(value: Any) -> str:
        return str(value)[:12] if value else "not recorded"

    rows = [[name, str(model.get("source") or "not recorded"), report_html.number(model.get("images")),
             short(model.get("manifest_sha256")), short(model.get("data_sha256")), report_html.number(model.get("labels"))]
            for name, model in models]
    heading, style = ("The data differ", " class=\"note\"") if warn else ("The data behind each model", "")
    return (f"<h3>{heading}</h3><p{style}>{html.escape(sentence)}</p>"
            + report_html.table(["model", "source", "images", "manifest sha256", "split table sha256", "labels"], rows,
                            numeric_from=99)
            + f"<p>{html.escape(str(record.get('rule', '')))}.</p>")


def lineage_markdown(record: dict[str, Any] | None) -> list[str]:
    """The lines the Prefect artifact shows when the candidate's data is not shown to be production's data grown."""
    if not isinstance(record, dict) or not record.get("note"):
        return []
    return [f"Data: {_lineage_sentence(record)[0]}".replace("|", "\\|").replace("\n", " "), ""]


def _share(part: Any, whole: Any) -> str:
    return f" ({part / whole:.1%})" if isinstance(part, int) and isinstance(whole, int) and whole else ""


def data_health_section(paths: Paths) -> str:
    """What the health stage found: counts, the estimated noise rate, the most confused classes, and the likely label
    errors drawn with their given and suggested labels."""
    summary = data_health.read_summary(paths.data_health)
    if summary is None:
        return ("<section id=\"data-health\"><h2>Data health</h2>"
                f"{report_html.missing('No data health report yet (the health stage writes data_health/).')}</section>")
    images = summary.get("images")
    issues, pairs, far = (summary.get(key) or {} for key in ("label_issues", "near_duplicates", "outliers"))
    noise = issues.get("estimated_noise_rate")
    rows = [("images checked", report_html.number(images)), ("compared by", str(summary.get("features", "—"))),
            ("likely label errors", (report_html.number(issues.get("issues")) + _share(issues.get("issues"), images))
             if issues.get("checked") else str(issues.get("note", "not checked"))),
            ("estimated label noise", f"{noise:.1%}" if isinstance(noise, (int, float)) else "—"),
            (f"near-duplicate pairs (cosine ≥ {pairs.get('threshold', '—')})", report_html.number(pairs.get("pairs"))),
            ("near-duplicate pairs across splits (leaks)", report_html.number(pairs.get("leaks"))),
            ("outliers (far from every class)", report_html.number(far.get("outliers")) if far.get("checked", True)
             else str(far.get("note", "not checked")))]
    body = report_html.pairs(rows)
    notes = issues.get("notes") or []
    body += "".join(f"<p class=\"note\">{html.escape(str(note))}</p>" for note in notes)
    confused = issues.get("confused_pairs") or []
    if confused:
        body += ("<h3>Classes confused most (given label, predicted out of fold)</h3>"
                 + report_html.table(["given", "predicted", "images"],
                                 [[str(row.get("given")), str(row.get("predicted")), report_html.number(row.get("images"))]
                                  for row in confused], numeric_from=2))
    picture = paths.data_health / data_health.GALLERY
    if picture.is_file() and issues.get("issues"):
        data = base64.b64encode(picture.read_bytes()).decode("ascii")
        caption = ("The likeliest label errors, most likely first: each image with its given label and the label "
                   "the rest of the data suggests. To accept them, delete the rows you reject from "
                   "data/reports/data_health/label_issues.csv, then run `imgpipe relabel`.")
        body += (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"likely label errors\">"
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    links = " · ".join(f"<a href=\"data_health/{name}\">{name}</a>" for name in
                       (data_health.LABEL_ISSUES, data_health.NEAR_DUPLICATES, data_health.OUTLIERS))
    return f"<section id=\"data-health\"><h2>Data health</h2>{body}<p>Tables: {links}</p></section>"


def sections(paths: Paths) -> list[str]:
    from tasks.release import report_drift

    return [data_health_section(paths), report_drift.section(paths), production_section(paths),
            training_params_section(paths), augmentation_section(paths)]
