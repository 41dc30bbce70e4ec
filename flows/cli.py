"""The `imgpipe` command: parses arguments, runs a flow, prints what it did."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows import console_log, prefect_setup

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here, and none wanted


def format_summary(summary: dict[str, Any]) -> str:
    """A short, plain-text account of a training run: each stage and its time, test accuracy, where things are."""
    lines = ["", f"imgpipe training run: {summary.get('outcome', '')}", "", f"  {'stage':<12}{'status':<10}{'seconds':>8}"]
    for stage in summary["stages"]:
        lines.append(f"  {stage['name']:<12}{stage['status']:<10}{stage['seconds']:>8.1f}")
    metrics = summary.get("metrics") or {}
    if metrics:
        accuracy_low, accuracy_high = metrics.get("accuracy_ci", [float("nan")] * 2)
        lines += ["", f"  test accuracy  {metrics['accuracy']:.4f}  (95% interval {accuracy_low:.3f}-{accuracy_high:.3f})"
                      f"   macro-F1  {metrics['macro_f1']:.4f}   ({metrics['test_images']} test images)"]
    if summary.get("recovered"):
        lines += ["", "  finished what an interrupted run left:"] + [f"    {item}" for item in summary["recovered"]]
    if summary.get("gate"):
        lines += ["", f"  gate: {summary['gate']['decision']}  ->  {summary['outcome']}",
                  f"  {summary['gate']['sentence']}"]
    lines.append("")
    root = Path(summary["repo"])
    for name, location in summary.get("outputs", {}).items():
        path = Path(location)
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        lines.append(f"  {name + ':':<20}{shown}")
    lines.append(f"  {'pushed to remote:':<20}{'yes' if summary.get('pushed') else 'no'}")
    for change in summary.get("params_changed") or []:
        lines.append(f"  {'params.yaml:':<20}{change}  (kept; `git checkout params.yaml` undoes it)")
    if summary.get("committed"):
        lines.append(f"  {'git commit:':<20}{summary['committed']}")
    return "\n".join(lines) + "\n"


def _check_params(repo: str, assignments: list[str] | None = None) -> dict[str, Any]:
    """params.yaml, with the `-S key=value` changes, checked before any flow starts: a bad key is one line."""
    from tasks import params_file
    from tasks.config import load_config

    params = Path(repo).resolve() / "params.yaml"
    load_config(params)
    overrides = params_file.parse_assignments(assignments or [])
    if overrides:
        params_file.check(params, overrides)
    return overrides


def _write_params(repo: str, overrides: dict[str, Any], lock_timeout: float) -> list[str]:
    """Write the owner's `-S` changes into params.yaml (checked again, under the run lock); what changed.

    Only this command changes params: the training flow takes none, so that a run created over Prefect's API runs
    the committed params.yaml.
    """
    from flows import run_lock
    from tasks import params_file

    root = Path(repo).resolve()
    with run_lock.workspace_lock(root, lock_timeout):
        changes = params_file.write(root / "params.yaml", overrides)
    for key, old_value, new_value in changes:
        logging.getLogger(__name__).info("params.yaml: %s %r -> %r (kept in params.yaml)", key, old_value, new_value)
    return [f"{key}: {old_value!r} -> {new_value!r}" for key, old_value, new_value in changes]


def _run(arguments: argparse.Namespace) -> int:
    overrides = _check_params(arguments.repo, arguments.set_param)
    params_changed = _write_params(arguments.repo, overrides, arguments.lock_timeout) if overrides else []
    prefect_setup.use_project(Path(arguments.repo).resolve(), temporary_server=True)
    from prefect.exceptions import FailedRun

    from flows.training import training

    try:
        summary = training(repo=arguments.repo, push=not arguments.no_push, lock_timeout=arguments.lock_timeout,
                           commit=arguments.commit)
    except FailedRun as failed:  # a named failed state, e.g. Invalid data
        raise RuntimeError(str(failed)) from None
    if summary.get("outcome") == "Skipped":
        sys.stdout.write("another imgpipe run holds this repository; this run did nothing\n")
        return 0
    sys.stdout.write(format_summary(summary | {"params_changed": params_changed}))
    return 0


def _serve(arguments: argparse.Namespace) -> int:
    # serve takes Ctrl-C in one thread of its own (flows/deploy.py), so SIGINT must be blocked in every other: block
    # it now, while this is the only thread; the imports below start more (NumPy's, for the params), which inherit it,
    # as does the project's Prefect server (in a session of its own, stopped with SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    _check_params(arguments.repo)
    prefect_setup.use_project(Path(arguments.repo).resolve(), need_scheduler=True)
    from flows.deploy import serve_retraining

    serve_retraining(Path(arguments.repo), cron=arguments.cron, interval_seconds=arguments.interval,
                     commit=False if arguments.no_commit else None)
    return 0


def _server(arguments: argparse.Namespace) -> int:
    from flows import local_server, prefect_home

    root = Path(arguments.repo).resolve()
    if arguments.action == "start":
        prefect_setup.use_project(root)
        server, started = local_server.ensure(root, prefect_setup.startup_timeout())
        sys.stdout.write(f"{'started' if started else 'already running:'} {server.ui_url} (log {server.log}; it "
                         f"asks for the secret in {prefect_home.auth_file(root)})\n")
    elif arguments.action == "stop":
        server = local_server.stop(root)
        sys.stdout.write(f"stopped the Prefect server at {server.ui_url}\n" if server else "no Prefect server of this "
                         "project was running\n")
    else:
        server = local_server.running(root)
        sys.stdout.write(f"running at {server.ui_url} (pid {server.pid}, database "
                         f"{prefect_home.home(root) / 'prefect.db'}, log {server.log}, secret "
                         f"{prefect_home.auth_file(root)})\n" if server else
                         "not running; `imgpipe serve` starts it, or `imgpipe server start`\n")
    return 0


def _change_production(repo: str, lock_timeout: float, change: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run a promotion or rollback under the run lock, then version production and the registry with `dvc add`.

    The `dvc add` is recorded as owed (flows/journal.py) before anything changes, so that a command killed
    half-way is finished by the next run.
    """
    from flows import journal, run_lock, stage_runner
    from tasks.config import load_config

    _, paths = load_config(Path(repo) / "params.yaml")
    with run_lock.workspace_lock(paths.root, lock_timeout):
        already_owed = "track" in journal.owed(paths.root)
        journal.owe(paths.root, ["track"])
        try:
            event = change(paths)
        except ValueError:
            if not already_owed:
                journal.done(paths.root, "track")
            raise
        stage_runner.track(paths.root, [paths.production, paths.registry], logging.getLogger("dvc").info)
        journal.done(paths.root, "track")
        from tasks.release import report  # the run report says which model is in production now

        report.run(paths, lineage={"prefect_flow_run_id": f"none: rewritten by imgpipe {event['action']}"})
    return event


def _promote(arguments: argparse.Namespace) -> int:
    from tasks.release import promote

    if arguments.force and not arguments.reason:
        raise ValueError("--force needs --reason saying why the gate is overruled")
    event = _change_production(arguments.repo, arguments.lock_timeout, lambda paths: promote.promote(
        paths, reason=arguments.reason or "passed the gate", force=arguments.force))
    sys.stdout.write(f"promoted {event['version']} to production\n")
    return 0


def _rollback(arguments: argparse.Namespace) -> int:
    from tasks.release import promote

    event = _change_production(arguments.repo, arguments.lock_timeout,
                               lambda paths: promote.rollback(paths, reason=arguments.reason))
    sys.stdout.write(f"production is {event['restored']} again (withdrew {event['version']})\n")
    return 0


def _models(arguments: argparse.Namespace) -> int:
    from tasks.config import load_config
    from tasks.release import models

    _, paths = load_config(Path(arguments.repo) / "params.yaml")
    entries, candidate = models.list_models(paths)
    sys.stdout.write(models.format_models(entries, candidate, paths))
    return 0


def _gc(arguments: argparse.Namespace) -> int:
    from flows import run_lock, stage_runner
    from tasks.config import load_config
    from tasks.ingest import gc

    config, paths = load_config(Path(arguments.repo) / "params.yaml")
    with run_lock.workspace_lock(paths.root, arguments.lock_timeout):
        summary = gc.run(config.ingest, paths)
        log = logging.getLogger("dvc").info
        stage_runner.commit(paths.root, "ingest", log)
        if not arguments.keep_cache:
            stage_runner.collect_garbage(paths.root, log)
    sys.stdout.write(f"raw store: {summary['shards_before']} shards, {summary['bytes_before'] / 1e6:.1f} MB -> "
                     f"{summary['shards_after']} shards, {summary['bytes_after'] / 1e6:.1f} MB "
                     f"({summary['images_moved']} images moved)\n")
    return 0


def format_predict_summary(summary: dict[str, Any]) -> str:
    """A short, plain-text account of a classification run."""
    errors, skipped = summary["errors"], summary.get("skipped", {})
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(errors.items()))
    skipped_reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
    rate = summary["files"] / summary["seconds"] if summary["seconds"] else 0.0
    lines = ["", "imgpipe predict", "",
             f"  {'files:':<14}{summary['files']}",
             f"  {'ok:':<14}{summary['ok']}",
             f"  {'errors:':<14}{sum(errors.values())}" + (f"  ({reasons})" if reasons else ""),
             f"  {'skipped:':<14}{sum(skipped.values())}" + (f"  ({skipped_reasons}; not read: hidden names, links "
                                                           "to folders, out of SOURCE or dangling, special files)"
                                                           if skipped_reasons else ""),
             f"  {'classified:':<14}{summary['processed']}  (reused from the earlier table {summary['reused']}, "
             f"from an interrupted run {summary['resumed']})",
             f"  {'seconds:':<14}{summary['seconds']:.1f}  ({rate:.0f} files/s)",
             f"  {'model:':<14}{summary['model_folder']}  (version {summary['model_version']})",
             f"  {'engine:':<14}{summary.get('engine', '')} {summary.get('precision', '')}",
             f"  {'table:':<14}{summary['output']}"]
    copied = summary.get("copy_into")
    if copied:
        lines.append(f"  {'copied into:':<14}{copied['destination']}  ({copied['placed']} placed, "
                     f"{copied['already_there']} already there, {copied['conflict']} name conflicts left alone, "
                     f"{copied.get('refused', 0)} refused, {copied['changed']} changed since classified)")
        for problem, found in copied.get("problems", {}).items():
            lines.append(f"  {'':<14}not placed: {found['files']} file(s) (e.g. {found['example']}): "
                         f"{as_flags(problem)}")
    return "\n".join(lines) + "\n"


def _predict(arguments: argparse.Namespace) -> int:
    repo = Path(arguments.repo).resolve()
    if arguments.model is None:  # the project's production model; --repo names the project
        from tasks.config import load_config
        from tasks.predict.classify import default_model

        arguments.model = str(default_model(load_config(repo / "params.yaml")[1]))
    if arguments.workers > 1 and not arguments.scheduler:  # no Prefect server, no cluster, for a small folder
        from tasks.predict import sizing

        if not sizing.choose(arguments.source, arguments.out, arguments.workers, arguments.chunk_size,
                             min_files_per_worker=arguments.min_files_per_worker)[0]:
            arguments.workers = 1
    if arguments.workers > 1 or arguments.scheduler:  # Prefect's Dask task runner shards the files
        prefect_setup.use_project(prefect_setup.find_project(repo), temporary_server=True)
        from flows.classify import classify_directory

        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # a line per worker event otherwise
        copy_into = str(arguments.copy_into) if arguments.copy_into else None
        summary = classify_directory(
            source=str(arguments.source), out=str(arguments.out), model=arguments.model, top_k=arguments.top_k,
            batch_size=arguments.batch_size, workers=arguments.workers, address=arguments.scheduler,
            copy_into=copy_into, link=arguments.link, chunk_size=arguments.chunk_size, max_pixels=arguments.max_pixels,
            engine=arguments.engine, precision=arguments.precision, follow_file_links=arguments.follow_file_links,
            min_files_per_worker=arguments.min_files_per_worker)
    else:  # one process, decoding on every core: no Prefect server or Dask cluster to start
        from tasks.predict import classify, copy_into

        options = classify.PredictOptions(top_k=arguments.top_k, batch_size=arguments.batch_size,
                                          chunk_size=arguments.chunk_size, max_pixels=arguments.max_pixels,
                                          engine=arguments.engine, precision=arguments.precision,
                                          follow_file_links=arguments.follow_file_links)
        summary = classify.run(arguments.source, arguments.out, Path(arguments.model), options).as_dict()
        if arguments.copy_into:
            summary["copy_into"] = copy_into.copy_into(arguments.out, arguments.source, arguments.copy_into,
                                                       arguments.link).as_dict()
    sys.stdout.write(format_predict_summary(summary))
    return 0


def _fetch_weights(arguments: argparse.Namespace) -> int:
    from tasks import networks

    saved = networks.fetch_weights(arguments.name, arguments.out)
    sys.stdout.write(f"saved the ImageNet weights of {arguments.name} (no top) to {saved}; set train.weights to "
                     "this file's path on the training machine\n")
    return 0


def format_tune_summary(summary: dict[str, Any], repo: Path) -> str:
    """A short, plain-text account of a sweep: the trials ranked, the best one, where the results are."""
    counts = ", ".join(f"{number} {status}" for status, number in summary["counts"].items())
    lines = ["", f"imgpipe tune: sweep {summary['sweep']} ({counts}); objective {summary['objective']} on the "
                 "validation split", "", summary["text"], ""]
    best = summary["best"]
    if best:
        settings = "  ".join(f"{key}={value}" for key, value in best["params"].items())
        lines.append(f"  best: {best['trial']}  {settings}  (val_accuracy {best['val_accuracy']:.4f}, "
                     f"val_loss {best['val_loss']:.4f})")
        if summary.get("applied"):
            lines.append("  applied to the workspace (params.yaml, dvc.lock, the candidate model); next: "
                         "`imgpipe run` evaluates it on the test split and gates it")
        else:
            lines.append(f"  not applied: `imgpipe tune --apply` (or `dvc exp apply {best['trial']}`) applies it")
    else:
        lines.append("  no trial finished; the notes in the table say why")
    lines.append("")
    for name in ("table", "plot", "sweep_file"):
        path = Path(summary[name])
        lines.append(f"  {name.replace('_', ' ') + ':':<14}{path.relative_to(repo) if path.is_relative_to(repo) else path}")
    lines.append(f"  {'compare:':<14}dvc exp show --only-changed;  dvc plots diff TRIAL TRIAL")
    return "\n".join(lines) + "\n"


def _tune(arguments: argparse.Namespace) -> int:
    from flows.tune import PLAIN_STEPS, run_sweep

    repo = Path(arguments.repo).resolve()
    try:  # without Prefect: the trials outlive this command, which must leave no server behind when killed
        summary = run_sweep(repo, arguments.jobs, arguments.apply, arguments.restart, arguments.lock_timeout,
                            PLAIN_STEPS)
    except KeyboardInterrupt:
        sys.stderr.write("imgpipe tune: interrupted. Trials already queued keep running in DVC's queue "
                         "(`dvc queue status`); `imgpipe tune` again follows them and queues the rest; "
                         "`dvc queue kill TRIAL` and `dvc queue remove --queued` stop them\n")
        return 130
    sys.stdout.write(format_tune_summary(summary, repo))
    return 0


def _lr_find(arguments: argparse.Namespace) -> int:
    from flows import run_lock
    from flows.tune import bring_up_to_date
    from tasks.config import load_config
    from tasks.tune import experiments, lr_find

    root = Path(arguments.repo).resolve()
    with run_lock.workspace_lock(root, arguments.lock_timeout):
        for name in experiments.read_pipeline(root).upstream:  # the training split, up to date
            bring_up_to_date(root, name)
        config, paths = load_config(root / "params.yaml")
        result = lr_find.run(config.train, config.preprocess.augment, config.base.seed, paths,
                             min_rate=arguments.min_rate, max_rate=arguments.max_rate, steps=arguments.steps)
    sys.stdout.write(f"\nimgpipe lr-find: {result.steps} batches; the smoothed loss was lowest at learning rate "
                     f"{result.minimum_loss_rate:.2g}\n\n  suggested train.learning_rate: {result.suggested:.2g}\n\n"
                     f"  plot:   {result.plot}\n  table:  {result.table}\n"
                     f"  use it: dvc exp run -S train.learning_rate={result.suggested:.2g}   (or edit params.yaml)\n")
    return 0


def _relabel(arguments: argparse.Namespace) -> int:
    from flows import run_lock
    from tasks.health import relabel

    root = Path(arguments.repo).resolve()
    with run_lock.workspace_lock(root, 0.0):  # never while a run reads the labels
        done = relabel.relabel(Path(arguments.source), root / "params.yaml", arguments.labels)
    sys.stdout.write(f"imgpipe relabel: {len(done.changed)} image(s) relabelled in {done.table}"
                     + (" (made from the manifest; ingest.labels now names it)" if done.created else "")
                     + (f"; {len(done.unchanged)} left, relabelled since the report" if done.unchanged else "")
                     + "\n  the next `imgpipe run` trains on the new labels\n")
    return 0


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("imgpipe")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed; `make setup` installs it)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgpipe",
        description="Train CNN image classifiers from folders of labelled images, reproducibly (Prefect + DVC).",
    )
    parser.add_argument("--version", action="version", version=f"imgpipe {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the training flow: every dvc.yaml stage that is out of date")
    run.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    run.add_argument("--no-push", action="store_true", help="do not push outputs to the DVC remote at the end")
    run.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long for another run on the same repository to finish (default: do not wait)")
    run.add_argument("-S", "--set-param", action="append", metavar="KEY=VALUE",
                     help="set a params.yaml value for this run and keep it there, as `dvc exp run -S` does (checked "
                          "first; repeatable), e.g. -S train.epochs=5 -S ingest.source=/data/pets")
    run.add_argument("--commit", action="store_true",
                     help="after a run that changed outputs, commit dvc.lock and the .dvc files to git (only those "
                          "files) with a message naming the outcome, so `dvc metrics diff` and `dvc plots diff` "
                          "compare revisions")
    run.set_defaults(handler=_run)

    serve = commands.add_parser("serve", help="retrain on a schedule (Prefect serve) until interrupted")
    serve.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron schedule, e.g. '0 3 * * *' (03:00 UTC every day)")
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every this many seconds")
    serve.add_argument("--no-commit", action="store_true",
                       help="do not commit dvc.lock and the .dvc files after each run that changed them (by default "
                            "they are committed, alone, when the git index holds nothing staged)")
    serve.set_defaults(handler=_serve)

    server = commands.add_parser("server", help="the project's own Prefect server, which serve starts: "
                                                "status, start or stop")
    server.add_argument("action", choices=["status", "start", "stop"])
    server.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    server.set_defaults(handler=_server)

    promote = commands.add_parser("promote", help="make the candidate model the production model")
    promote.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    promote.add_argument("--force", action="store_true", help="promote even though the gate refused it")
    promote.add_argument("--reason", default="", help="why (required with --force); kept in the history")
    promote.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for a run on the same repository to finish (default: do not wait)")
    promote.set_defaults(handler=_promote)

    rollback = commands.add_parser("rollback", help="restore the previous production model")
    rollback.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    rollback.add_argument("--reason", default="rolled back by hand", help="why; kept in the history")
    rollback.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                          help="wait this long for a run on the same repository to finish (default: do not wait)")
    rollback.set_defaults(handler=_rollback)

    listing = commands.add_parser(
        "models", help="list the model registry: versions, dates, test metrics, gate outcome, which is in production")
    listing.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    listing.set_defaults(handler=_models)

    collect = commands.add_parser(
        "gc", help="compact the raw store (shards mostly holding removed images) and prune DVC's cache",
        description="Rewrite the raw store's shards whose images were mostly removed from the source, then drop "
                    "from DVC's cache what no commit, branch, tag, experiment or the workspace names.")
    collect.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    collect.add_argument("--keep-cache", action="store_true", help="compact the workspace only; leave DVC's cache")
    collect.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for a running imgpipe run to finish (default: do not wait)")
    collect.set_defaults(handler=_gc)

    predict = commands.add_parser(
        "predict", help="classify every image under a folder into a table (streamed, resumable, optionally on Dask)",
        description="Classify every file under SOURCE (any depth) with a trained model; one row per file, broken "
                    "files included as error rows. Run it again after an interruption to finish, or after new files "
                    "arrive to classify only what is new or changed.")
    predict.add_argument("source", type=Path, metavar="SOURCE", help="the folder of images to classify")
    predict.add_argument("--out", type=Path, default=Path("predictions.parquet"),
                         help="the table to write, .parquet or .csv (default: predictions.parquet); its resume "
                              "state is kept in OUT.parts/ until the run ends")
    predict.add_argument("--model", help="a model folder (model.keras, labels.json, model_card.json); default: "
                                         "the production model of --repo (a candidate only when named here)")
    predict.add_argument("--repo", default=".", help="the imgpipe project whose production model classifies, when "
                                                     "--model is not given (default: the current folder)")
    predict.add_argument("--top-k", type=int, default=3, help="how many best labels to list per file (default: 3)")
    predict.add_argument("--batch-size", type=int, default=64, help="images per model call (default: 64)")
    predict.add_argument("--workers", type=int, default=1,
                         help="1 (default): this process, decoding on every core; N > 1: a local Dask cluster of N "
                              "worker processes (through Prefect); with --scheduler, shards for N workers")
    predict.add_argument("--min-files-per-worker", type=int, default=1000, metavar="N",
                         help="with --workers N > 1: start the cluster only for at least N files per worker; a smaller "
                              "folder is classified in this process, which is faster (default: 1000; 0: always)")
    predict.add_argument("--scheduler", metavar="ADDRESS",
                         help="an existing Dask scheduler (tcp://host:8786); its workers must see SOURCE, OUT and "
                              "the model folder")
    predict.add_argument("--copy-into", type=Path, metavar="DIR",
                         help="also put each classified file into DIR/<label>/<path>; never overwrites a different "
                              "file")
    predict.add_argument("--link", action="store_true", help="with --copy-into: hard-link instead of copying")
    predict.add_argument("--chunk-size", type=int, default=1024,
                         help="files per committed chunk: at most this much work is lost to an interruption")
    predict.add_argument("--max-pixels", type=int, default=40_000_000,
                         help="larger images become error rows without being decoded (default: 40000000)")
    predict.add_argument("--follow-file-links", action="store_true",
                         help="read symbolic links to files wherever they point (a tree of links that a split tool "
                              "built); a trust decision: the folder's owner chooses what is read. Links to folders are "
                              "never followed (default: links out of the folder are skipped rows)")
    predict.add_argument("--engine", default="auto", choices=["auto", "keras", "onnxruntime", "openvino"],
                         help="what runs the model (default auto: the fastest engine and precision that passed the "
                              "parity check on the test split when the model was trained; keras without that record)")
    predict.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                         help="default auto: as --engine auto chooses; bf16 needs a CPU with native bf16, int8 the "
                              "int8 model that train calibrates")
    predict.set_defaults(handler=_predict)

    weights = commands.add_parser("weights", help="pretrained backbone weights for train.weights")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="COMMAND")
    fetch = weights_commands.add_parser(
        "fetch", help="download a backbone's ImageNet weights (through Keras) and save them without the top",
        description="On a machine with internet: save NAME's ImageNet weights, without the classification top, to "
                    "FILE; copy FILE to the training machine and set train.weights to its path.")
    fetch.add_argument("name", metavar="NAME", choices=["mobilenet_v3_small", "efficientnet_v2_b0", "resnet50"],
                       help="the backbone, as train.model names it: mobilenet_v3_small, efficientnet_v2_b0, resnet50")
    fetch.add_argument("--out", type=Path, required=True, metavar="FILE",
                       help="where to save the weights; the name must end in .weights.h5")
    fetch.set_defaults(handler=_fetch_weights)

    tune = commands.add_parser(
        "tune", help="a hyper-parameter sweep (params.yaml's tune section), one DVC experiment per trial",
        description="Queue one DVC experiment per trial of params.yaml's `tune` section, run them with DVC's queue, "
                    "follow them and rank them by a validation metric. Run it again after an interruption to "
                    "resume: finished trials stay, the rest run.")
    tune.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    tune.add_argument("--jobs", type=int, default=None,
                      help="trials at a time (dvc queue start -j; default: one per 2 cores)")
    tune.add_argument("--apply", action="store_true",
                      help="apply the best trial to the workspace (dvc exp apply); `imgpipe run` then tests and gates it")
    tune.add_argument("--restart", action="store_true", help="plan a new sweep even if this one is recorded")
    tune.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                      help="wait this long for another run on the same repository (default: do not wait)")
    tune.set_defaults(handler=_tune)

    lr_find = commands.add_parser(
        "lr-find", help="a learning-rate range test on the training split; suggests train.learning_rate",
        description="Train the configured model for a few hundred batches while the learning rate grows "
                    "exponentially; write the loss-against-rate plot and suggest train.learning_rate.")
    lr_find.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    lr_find.add_argument("--min-rate", type=float, default=1e-6, help="the first learning rate (default: 1e-6)")
    lr_find.add_argument("--max-rate", type=float, default=1.0, help="the last learning rate (default: 1)")
    lr_find.add_argument("--steps", type=int, default=200, help="batches, at most (default: 200)")
    lr_find.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for another run on the same repository (default: do not wait)")
    lr_find.set_defaults(handler=_lr_find)
    relabel = commands.add_parser(
        "relabel", help="accept the suggested labels of a label issues table (data/reports/data_health/label_issues.csv)",
        description="Give each image of FILE its suggested label in the label table that ingest.labels names (made "
                    "from the manifest, and ingest.labels set, when there is none). Delete the rows you reject first.")
    relabel.add_argument("--from", dest="source", required=True, metavar="FILE", help="a label issues table")
    relabel.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    relabel.add_argument("--labels", type=Path, metavar="FILE",
                         help="where to make the label table when ingest.labels names none (default: labels.csv)")
    relabel.set_defaults(handler=_relabel)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command in ("run", "serve", "predict", "tune", "lr-find"):  # commands that may start TensorFlow here
        console_log.filter_native_noise()
    console_log.configure()
    try:
        return arguments.handler(arguments)
    except (ValueError, RuntimeError) as error:
        sys.stderr.write(f"imgpipe: error: {as_flags(str(error))}\n")
        return 1


_ARGUMENT = re.compile(r"`([a-z][a-z0-9_]*)`")
_POSITIONAL = {"source": "SOURCE"}


def as_flags(message: str) -> str:
    """A message from tasks/ with its `argument_names` spelt as this command's flags (--argument-names)."""
    return _ARGUMENT.sub(lambda match: _POSITIONAL.get(match[1], "--" + match[1].replace("_", "-")), message)


if __name__ == "__main__":
    sys.exit(main())
