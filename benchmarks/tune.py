"""Sweep benchmark: a random `imgpipe tune` sweep against the default params, on the clothing photos, in one run.

In a committed copy of this repository whose `ingest.source` is the clothing photos (713 JPEGs, 10 classes):
  1. `imgpipe run --no-push` with the default params: test macro-F1 of the defaults, which become production;
  2. `imgpipe tune --apply` with a random space of --trials trials: the sweep's wall time, what each trial ran;
  3. `imgpipe run --no-push` again: the winner evaluated on the test split and gated against the defaults.
Prints a Markdown summary for benchmarks/BENCHMARKS.md; exits 1 when a trial re-ran a stage before `train`
(trials must take ingest and preprocess from DVC's cache) or a step failed.

    .venv/bin/python benchmarks/tune.py [--trials 12] [--image-size 32] [--epochs 10] [--jobs N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)
from tasks import metrics_file  # noqa: E402

BIN = Path(sys.executable).parent
SPACE = {
    "train.learning_rate": {"low": 0.0003, "high": 0.01, "scale": "log"},
    "train.dropout": [0.1, 0.3, 0.5],
    "train.width": [16, 32],
    "train.depth": [2, 3, 4],
    "train.batch_size": [16, 32, 64],
    "preprocess.augment.horizontal_flip": [False, True],
}


def run(command: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    """Run a command with its output in a log file; return its wall seconds and output, or stop on a failure."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                       PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
                       PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=cwd, env=environment, stdout=handle, stderr=subprocess.STDOUT,
                              check=False).returncode
    seconds = time.perf_counter() - started
    output = log.read_text(errors="replace")
    if code != 0:
        sys.exit(f"{' '.join(command)} failed ({code}); last lines of {log}:\n{output[-3000:]}")
    return seconds, output


def copy_repository(target: Path) -> Path:
    """The files git knows (committed or not, not ignored), committed in a new repository: DVC experiments need one."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in names:
        if (PROJECT_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, target / name)
    return target


def commit(repo: Path, message: str) -> None:
    for arguments in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", message]):
        subprocess.run(["git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@example.com", *arguments],
                       cwd=repo, check=True, capture_output=True)


def gather_source(target: Path) -> Path:
    """One folder per class holding the photos of both published splits (imgpipe makes its own split)."""
    for path in machine.PHOTOS.glob("*/*/*.jpg"):
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.parent.name / f"{path.parent.parent.name}_{path.name}")
    return target


def test_scores(repo: Path) -> dict[str, float | str]:
    metrics = metrics_file.read(repo / "data/reports/evaluation")  # plain names: macro_f1 (test_macro_f1 in the file)
    gate = json.loads((repo / "data/reports/evaluation/gate.json").read_text())
    return {"macro_f1": metrics["macro_f1"], "macro_f1_ci": metrics.get("macro_f1_ci"),
            "accuracy": metrics["accuracy"], "test_images": metrics["test_images"], "gate": gate["decision"],
            "sentence": gate["sentence"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10, help="train.epochs, for the defaults and every trial")
    parser.add_argument("--jobs", type=int, default=None, help="trials at a time (default: imgpipe's, 1 per 2 cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository")
    arguments = parser.parse_args()
    if not machine.PHOTOS.is_dir():
        sys.exit(f"{machine.PHOTOS}: the clothing photos are not here; nothing to measure")

    scratch = Path(tempfile.mkdtemp(prefix="imgpipe-tune-benchmark-"))
    repo = copy_repository(scratch / "repo")
    source = gather_source(scratch / "photos")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["source"] = str(source)
    params["preprocess"]["image_size"] = arguments.image_size
    params["train"]["epochs"] = arguments.epochs
    # low floors, so that the defaults become production and the winner is gated against them
    params["evaluate"]["gate"].update(min_accuracy=0.05, min_macro_f1=0.05)
    params["tune"] = {"method": "random", "trials": arguments.trials, "seed": 0, "max_trials": arguments.trials,
                      "max_minutes": None, "objective": "val_accuracy", "space": SPACE,
                      "prune": {"after_epoch": None, "min_trials": 3}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "benchmark")
    load_before = os.getloadavg()

    imgpipe = str(BIN / "imgpipe")
    default_seconds, output = run([imgpipe, "run", "--no-push"], repo, scratch / "defaults.log")
    train_seconds = float(re.search(r"^\s+train\s+ran\s+([\d.]+)", output, re.MULTILINE)[1])
    defaults = test_scores(repo)
    tune_command = [imgpipe, "tune", "--apply"] + ([] if arguments.jobs is None else ["--jobs", str(arguments.jobs)])
    sweep_seconds, _ = run(tune_command, repo, scratch / "tune.log")
    trials = pd.read_parquet(repo / "data/reports/tuning/trials.parquet")
    tuned_seconds, _ = run([imgpipe, "run", "--no-push"], repo, scratch / "tuned.log")
    tuned = test_scores(repo)
    load_after = os.getloadavg()

    done = trials[trials["status"] == "done"]
    reran_early = done[done["stages_run"] != "train"]
    best = trials[trials["rank"] == 1].iloc[0]
    keys = list(SPACE)
    print(f"\nMachine: {os.cpu_count()} cores ({machine.cpu_model()}), load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after; {time.strftime('%Y-%m-%d')}\n")
    print("| | test macro-F1 (95% interval) | test accuracy | wall |")
    print("|---|---|---|---|")
    rows = (("defaults", defaults, default_seconds), ("tuned (best of sweep)", tuned, tuned_seconds))
    for name, scores, seconds in rows:
        low, high = scores["macro_f1_ci"] or (float("nan"), float("nan"))
        print(f"| {name} | {scores['macro_f1']:.3f} ({low:.3f}-{high:.3f}) | {scores['accuracy']:.3f} | "
              f"{seconds:.0f} s `imgpipe run` |")
    print(f"\nSweep: {len(trials)} trials ({len(done)} done), wall {sweep_seconds:.0f} s = "
          f"{sweep_seconds / 60:.1f} min; default train stage {train_seconds:.1f} s; "
          f"sweep / ({len(trials)} x default train stage) = {sweep_seconds / (len(trials) * train_seconds):.2f}")
    overhead = done["seconds"] - done["train_seconds"]
    print(f"Per trial: median {done['seconds'].median():.0f} s wall as followed (5 s polls), median "
          f"{done['train_seconds'].median():.0f} s in fit, so median {overhead.median():.0f} s outside fit (DVC's "
          f"folder, checkout and commit, TensorFlow's start, SavedModel export); fit in all trials "
          f"{done['train_seconds'].sum():.0f} s; stages run: {sorted(set(done['stages_run']))}")
    print(f"Best trial {best['trial']}: " + ", ".join(f"{key}={best[key]}" for key in keys) +
          f" (val_accuracy {best['val_accuracy']:.3f}); gate against the defaults: {tuned['gate']} "
          f"({tuned['sentence']})")
    print("\n" + trials[["trial", "status", "rank", *keys, "val_accuracy", "val_loss", "epochs_run", "seconds",
                         "stages_run"]].to_markdown(index=False, floatfmt=".4g"))
    if arguments.keep:
        print(f"\nkept {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    if len(reran_early):
        sys.exit(f"trials re-ran stages before train: {reran_early[['trial', 'stages_run']].to_dict('records')}")


if __name__ == "__main__":
    main()
