"""The evaluation pictures (tasks/plots.py) and the run report (tasks/report.py), opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks import images, metrics_file
from tasks.evaluate import plots
from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.release import report
from tests.conftest import CLASS_COLOURS, make_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELS = [*CLASS_COLOURS, "<b>odd & $label_$</b>"]  # escaped in the page, and no mathtext in the pictures
FIGURE_NAMES = ["training_curves.png", "confusion_matrix.png", "confusion_matrix_normalised.png", "per_class.png",
                "mistakes.png"]


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        return image.size


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def fake_history() -> pd.DataFrame:
    """history.csv as train writes it: 4 epochs of training, then 2 of fine-tuning, epochs counted per phase."""
    rows = [{"epoch": epoch, "phase": phase, "accuracy": 0.5 + 0.08 * step, "loss": 1.2 - 0.15 * step,
             "val_accuracy": 0.45 + 0.07 * step, "val_loss": 1.3 - 0.12 * step + (0.2 if step == 5 else 0),
             "learning_rate": 0.002}
            for step, (phase, epoch) in enumerate([("train", 0), ("train", 1), ("train", 2), ("train", 3),
                                                    ("fine_tune", 0), ("fine_tune", 1)])]
    return pd.DataFrame(rows)


def thumbnails_from(root: Path) -> plots.Thumbnails:
    """Pictures from image files under root; None for a missing or outside one (as the raw store would fail)."""
    def thumbnails(names: list[str]) -> list[np.ndarray | None]:
        pictures = []
        for name in names:
            file = (root / name).resolve()
            inside = file.is_relative_to(root.resolve()) and file.is_file()
            pictures.append(images.load_rgb_array(file, plots.THUMBNAIL_SIDE, "pad", 10**7) if inside else None)
        return pictures

    return thumbnails


def fake_predictions(raw: Path) -> pd.DataFrame:
    """test_predictions.csv rows over real tiny images under raw/, with five mistakes (two unreadable)."""
    rows = []
    for class_index, (label, colour) in enumerate(CLASS_COLOURS.items()):
        for index in range(4):
            relative = f"{label}/{label}_{index:02d}.png"
            (raw / label).mkdir(parents=True, exist_ok=True)
            make_image(colour, seed=class_index * 100 + index, size=24).save(raw / relative)
            wrong = index == 0 or (label == "red" and index == 1)
            predicted = list(CLASS_COLOURS)[(class_index + 1) % 3] if wrong else label
            rows.append({"path": relative, "actual": label, "predicted": predicted,
                         "confidence": round(0.6 + 0.1 * index + 0.01 * class_index, 3)})
    rows.append({"path": "green/missing.png", "actual": "green", "predicted": "blue", "confidence": 0.51})
    rows.append({"path": "../outside.png", "actual": "blue", "predicted": "red", "confidence": 0.5})
    return pd.DataFrame(rows)


def fake_metrics() -> dict[str, object]:
    per_class = {label: {"precision": 0.9 - 0.1 * index, "recall": 0.8, "f1": 0.85 - 0.1 * index, "support": 10 + index}
                 for index, label in enumerate(LABELS)}
    return {"accuracy": 0.875, "accuracy_ci": [0.81, 0.93], "macro_f1": 0.861, "macro_f1_ci": [0.79, 0.92],
            "weighted_f1": 0.87, "top_2_accuracy": 0.97, "ece": 0.043, "test_images": 46, "per_class": per_class}


def fake_gate(decision: str = "fail") -> dict[str, object]:
    return {"decision": decision, "sentence": "The candidate's macro_f1 0.861 is below the champion's 0.90 by more "
                                              "than the tolerance 0.01.",
            "headline_metric": "macro_f1", "tolerance": 0.01,
            "candidate": {"version": "c" * 12, "metrics": {"accuracy": 0.875, "macro_f1": 0.861}},
            "champion": {"version": "d" * 12, "metrics": {"accuracy": 0.91, "macro_f1": 0.90}},
            "checks": [{"name": "macro_f1 not worse than champion", "passed": False, "value": 0.861,
                        "threshold": 0.89, "detail": "0.861 < 0.90 - 0.01"},
                       {"name": "minimum accuracy", "passed": True, "value": 0.875, "threshold": 0.5, "detail": ""}],
            "promoted": False, "created_at": "2025-01-02T03:04:05+00:00"}


@pytest.fixture(scope="module")
def report_paths(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A project tree with every input of the report, the pictures drawn by tasks/evaluate/plots.py."""
    paths = Paths(PathsParams(), tmp_path_factory.mktemp("project"))
    write_json(paths.processed / "preprocess.json", {
        "counts": {"train": 60, "val": 13, "test": 13},
        "counts_per_class": {split: {label: count + index for index, label in enumerate(LABELS)}
                             for split, count in (("train", 14), ("val", 2), ("test", 2))}})
    paths.validation.mkdir(parents=True)
    (paths.validation / "summary.txt").write_text("Validation PASSED: 86 images in 4 classes\n\nChecks:\n  PASS  labels\n",
                                                  encoding="utf-8")
    write_json(paths.candidate / "model_card.json", {"git_revision": "abc1234", "data_sha256": "e" * 64,
                                                     "model": "simple_cnn", "epochs_run": 6})
    metrics = fake_metrics()
    metrics_file.write(paths.evaluation, metrics)  # as the evaluate stage writes them: test_accuracy, per_class.json
    write_json(paths.evaluation / "gate.json", fake_gate())
    matrix = np.array([[9, 1, 0, 0], [2, 8, 1, 0], [0, 0, 12, 0], [1, 0, 0, 12]])
    plots.confusion_matrix(matrix, LABELS, paths.evaluation / "confusion_matrix.png", normalised=False)
    plots.confusion_matrix(matrix, LABELS, paths.evaluation / "confusion_matrix_normalised.png", normalised=True)
    plots.training_curves(fake_history(), paths.evaluation / "training_curves.png")
    plots.per_class_bars(metrics["per_class"], paths.evaluation / "per_class.png")
    plots.mistakes_gallery(fake_predictions(paths.raw), thumbnails_from(paths.raw), paths.evaluation / "mistakes.png")
    return paths


def test_plots_write_readable_pngs(report_paths: Paths) -> None:
    sizes = {name: png_size(report_paths.evaluation / name) for name in FIGURE_NAMES}
    assert all(width >= 300 and height >= 200 for width, height in sizes.values()), sizes
    counts = (report_paths.evaluation / "confusion_matrix.png").read_bytes()
    assert counts != (report_paths.evaluation / "confusion_matrix_normalised.png").read_bytes()
    assert not list(report_paths.evaluation.glob(".*partial")), "a temporary file was left behind"


def test_plot_sizes_scale_with_class_count(tmp_path: Path) -> None:
    def confusion_width(classes: int) -> int:
        labels = [f"class_{index}" for index in range(classes)]
        path = tmp_path / f"confusion_{classes}.png"
        plots.confusion_matrix(np.eye(classes, dtype=int) * 5, labels, path, normalised=True)
        return png_size(path)[0]

    def bars_height(classes: int) -> int:
        path = tmp_path / f"bars_{classes}.png"
        plots.per_class_bars({f"class_{index}": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3}
                              for index in range(classes)}, path)
        return png_size(path)[1]

    assert confusion_width(20) > 1.5 * confusion_width(3)
    assert bars_height(20) > 2 * bars_height(3)
    assert bars_height(500) == bars_height(plots.MAX_BAR_CLASSES)  # only the lowest-F1 classes are drawn


def test_the_curves_mark_the_epoch_kept_and_draw_macro_f1() -> None:
    """The dot is the epoch train kept (the card's validation: fine-tune epoch 1, chosen on macro-F1), not the lowest
    validation loss (fine-tune epoch 2 here), and macro-F1 has a panel of its own."""
    history = fake_history().assign(macro_f1=lambda table: table["accuracy"] - 0.05,
                                    val_macro_f1=[0.3, 0.4, 0.5, 0.6, 0.8, 0.7])
    figure = plots.curves_figure(history, {"phase": "fine_tune", "epoch": 1, "selected_on": "macro_f1"})
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["Loss per epoch", "Accuracy per epoch", "Macro-F1 per epoch"]
    for axes in figure.axes:
        marked = [line for line in axes.lines if line.get_label().startswith("kept:")]
        assert [line.get_label() for line in marked] == ["kept: epoch 5 (best validation macro_f1)"]
        assert list(marked[0].get_xdata()) == [5]
    assert figure.axes[2].lines[-1].get_ydata()[0] == 0.8
    # no card: no dot, and a history without macro-F1 draws two panels
    plain = plots.curves_figure(fake_history())
    assert len(plain.axes) == 2 and not [line for axes in plain.axes for line in axes.lines
                                         if line.get_label().startswith("kept:")]


def test_gallery_and_curves_with_nothing_to_show(tmp_path: Path) -> None:
    right = pd.DataFrame({"path": ["a/1.png"], "actual": ["a"], "predicted": ["a"], "confidence": [0.9]})
    plots.mistakes_gallery(right, thumbnails_from(tmp_path), tmp_path / "mistakes.png")
    plots.training_curves(pd.DataFrame(), tmp_path / "curves.png")
    plots.per_class_bars({}, tmp_path / "bars.png")
    for name in ("mistakes.png", "curves.png", "bars.png"):
        assert png_size(tmp_path / name)[0] > 100


def test_report_is_one_self_contained_page(report_paths: Paths) -> None:
    page_path = report.run(report_paths, {"prefect_flow_run_id": "run-1234", "dataset": "digits <v2>"})
    assert page_path == report_paths.reports / "index.html"
    page = page_path.read_text(encoding="utf-8")

    for section in ("lineage", "validation", "splits", "metrics", "figures", "gate"):
        assert f'id="{section}"' in page
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == len(FIGURE_NAMES) and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"https?://|<script|<link|@import|url\(", page, re.IGNORECASE)
    assert "&lt;b&gt;odd &amp; $label_$&lt;/b&gt;" in page and "<b>odd" not in page
    assert "digits &lt;v2&gt;" in page
    # lineage from the arguments, the model card and the gate
    for value in ("run-1234", "abc1234", "e" * 64, "c" * 12, "simple_cnn"):
        assert value in page
    # metrics with their intervals, the gate's decision and every check
    assert "0.8750" in page and "0.8100 – 0.9300" in page and "top_2_accuracy" in page and "ece" in page
    assert 'class="badge fail">FAIL' in page and "below the champion" in page
    assert "macro_f1 not worse than champion" in page and "minimum accuracy" in page
    assert "Validation PASSED: 86 images" in page and ">60<" in page


def test_report_before_the_first_gate(tmp_path: Path) -> None:
    paths = Paths(PathsParams(), tmp_path)
    page = report.run(paths).read_text(encoding="utf-8")
    assert "NO GATE YET" in page and "No gate decision (gate.json) yet." in page
    assert "No metrics (metrics.json) yet." in page and "No split counts" in page
    assert page.count("is missing") == len(FIGURE_NAMES) and "<img" not in page
    assert "Gate: no decision yet" in report.markdown_summary(paths)


def test_report_warns_when_the_gate_judged_another_model(tmp_path: Path) -> None:
    paths = Paths(PathsParams(), tmp_path)
    write_json(paths.evaluation / "gate.json", fake_gate())
    write_json(paths.candidate / "model_card.json", {"version": "0123456789ab"})  # a retrained model
    page = report.run(paths).read_text(encoding="utf-8")
    assert "Caution: this decision was made for another model (version cccccccccccc)" in page
    assert "0123456789ab" in page


def test_markdown_summary(report_paths: Paths) -> None:
    write_json(report_paths.evaluation / "gate.json", fake_gate("pass") | {"promoted": True})
    try:
        text = report.markdown_summary(report_paths)
    finally:
        write_json(report_paths.evaluation / "gate.json", fake_gate())
    assert text.startswith("## Gate: PASS (promoted)")
    assert "| accuracy | 0.8750 | 0.8100 – 0.9300 |" in text
    assert "| macro_f1 | 0.8610 | 0.7900 – 0.9200 |" in text
    assert "| red | 0.9000 | 0.8000 | 0.8500 | 10 |" in text


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium_binary() is None, reason="no chromium (make test installs Debian's when root)")
def test_report_renders_in_headless_chromium(report_paths: Paths, tmp_path: Path) -> None:
    page = report.run(report_paths, {"prefect_flow_run_id": "run-1234"}).read_text(encoding="utf-8")
    # A copy with a tiny probe that records, once the page has loaded, how many images decoded to real pixels;
    # the report itself carries no script.
    probe = ("<script>window.addEventListener('load', () => { const all = [...document.images]; "
             "document.body.dataset.rendered = all.filter(image => image.complete && image.naturalWidth > 0).length"
             " + '/' + all.length; });</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    screenshot = tmp_path / "shot.png"
    command = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000",
               "--hide-scrollbars"]

    dom = subprocess.run([*command, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert f'data-rendered="{len(FIGURE_NAMES)}/{len(FIGURE_NAMES)}"' in dom.stdout, dom.stderr[-2000:]

    subprocess.run([*command, f"--screenshot={screenshot}", (report_paths.reports / "index.html").as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert png_size(screenshot) == (1200, 3000)
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20, "the screenshot is blank"
    red, green, blue = (pixels[..., channel].astype(int) for channel in range(3))
    assert ((abs(red - green) > 40) | (abs(green - blue) > 40)).mean() > 0.01, "no coloured pictures on the page"


def test_report_shows_both_label_sets_when_they_differ(tmp_path: Path) -> None:
    paths = Paths(PathsParams(), tmp_path)
    label_sets = {"candidate": ["cat", "dog", "fox"], "production": [str(digit) for digit in range(10)], "same": False,
                  "added": ["cat", "dog", "fox"], "removed": [str(digit) for digit in range(10)]}
    write_json(paths.evaluation / "gate.json", fake_gate() | {"label_sets": label_sets})
    page = report.run(paths).read_text(encoding="utf-8")
    assert "The label sets differ" in page
    assert "10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in page and "3: cat, dog, fox" in page
    summary = report.markdown_summary(paths)
    assert "Production labels: 0, 1, 2" in summary and "Candidate labels: cat, dog, fox" in summary

    write_json(paths.evaluation / "gate.json", fake_gate() | {"label_sets": label_sets | {
        "candidate": label_sets["production"], "same": True, "added": [], "removed": []}})
    assert "The label sets differ" not in report.run(paths).read_text(encoding="utf-8")
