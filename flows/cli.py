"""The `imgpipe` command: parses arguments, calls a flow or a step of one, prints what it did.

Its flags for the settings of a call are in flows/cli_flags.py; their defaults and choices are where the settings are
defined (tasks/predict/options.py, tasks/engines/names.py, tasks/params.py, tasks/tune/lr_settings.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import get_args

from flows import console_log, prefect_setup, summaries
from tasks import native_noise
from flows.cli_flags import FLAGS, for_command_line
from tasks.predict.options import (DEFAULT_OUT, DEFAULT_WORKERS, ENGINE_CHOICES, MIN_FILES_PER_WORKER,
                                   PRECISION_CHOICES, PredictOptions)
from tasks.tune import lr_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here, and none wanted
COMMANDS_WITH_SETTINGS = ("predict", "tune", "lr-find")  # their log lines name settings of theirs: shown as flags


def fetchable_backbones() -> tuple[str, ...]:
    """The backbones whose ImageNet weights `imgpipe weights fetch` saves: the names train.model takes (tasks/params.py)
    but auto, simple_cnn and the backbones whose weights install with imgpipe (tasks/backbones/catalog.py)."""
    from tasks.backbones import catalog
    from tasks.params import ModelName

    return tuple(name for name in get_args(ModelName) if name not in ("auto", "simple_cnn", *catalog.BACKBONES))


def _run(arguments: argparse.Namespace) -> int:
    from flows import owner_params

    overrides = owner_params.check(arguments.repo, arguments.set_param)
    params_changed = owner_params.write(arguments.repo, overrides, arguments.lock_timeout) if overrides else []
    prefect_setup.use_project(Path(arguments.repo).resolve(), project_server=True)
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
    sys.stdout.write(summaries.format_summary(summary | {"params_changed": params_changed}))
    return 0


def _serve(arguments: argparse.Namespace) -> int:
    # serve takes Ctrl-C in one thread of its own (flows/deploy.py), so SIGINT must be blocked in every other: block
    # it now, while this is the only thread; the imports below start more (NumPy's, for the params), which inherit it,
    # as does the project's Prefect server (in a session of its own, stopped with SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    from flows import owner_params

    owner_params.check(arguments.repo)
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
                         "not running; `imgpipe run` and `imgpipe serve` start it, or `imgpipe server start`\n")
    return 0


def _promote(arguments: argparse.Namespace) -> int:
    from flows import production

    if arguments.force and not arguments.reason:
        raise ValueError("--force needs --reason saying why the gate is overruled")
    event = production.promote(arguments.repo, arguments.reason, arguments.force, arguments.lock_timeout)
    sys.stdout.write(f"promoted {event['version']} to production\n")
    return 0


def _rollback(arguments: argparse.Namespace) -> int:
    from flows import production

    event = production.rollback(arguments.repo, arguments.reason, arguments.lock_timeout)
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
    from flows import compaction

    summary = compaction.collect(arguments.repo, arguments.keep_cache, arguments.lock_timeout)
    sys.stdout.write(summaries.format_gc_summary(summary))
    return 0


def _predict(arguments: argparse.Namespace) -> int:
    from flows import bulk_predict

    options = PredictOptions(top_k=arguments.top_k, batch_size=arguments.batch_size, chunk_size=arguments.chunk_size,
                             max_pixels=arguments.max_pixels, engine=arguments.engine, precision=arguments.precision,
                             follow_file_links=arguments.follow_file_links)
    summary = bulk_predict.predict(arguments.source, arguments.out, arguments.model, arguments.repo, options,
                                   arguments.workers, arguments.scheduler, arguments.min_files_per_worker,
                                   arguments.copy_into, arguments.link)
    sys.stdout.write(summaries.format_predict_summary(summary))
    return 0


def _fetch_weights(arguments: argparse.Namespace) -> int:
    from tasks import networks

    saved = networks.fetch_weights(arguments.name, arguments.out or networks.weights_file_name(arguments.name))
    sys.stdout.write(f"saved the ImageNet weights of {arguments.name} (no top) to {saved}; set train.weights to "
                     "this file's path on the training machine\n")
    return 0


def _tune(arguments: argparse.Namespace) -> int:
    from flows.tune import PLAIN_STEPS, run_sweep

    from flows import owner_params

    repo = Path(arguments.repo).resolve()
    overrides = owner_params.check_sweep(repo, arguments.set_param, arguments.trials, arguments.epochs)
    params_changed = owner_params.write(repo, overrides, arguments.lock_timeout) if overrides else []
    try:  # without Prefect: the trials outlive this command, which must leave no server behind when killed
        summary = run_sweep(repo, arguments.jobs, arguments.apply, arguments.restart, arguments.lock_timeout,
                            PLAIN_STEPS)
    except KeyboardInterrupt:
        sys.stderr.write("imgpipe tune: interrupted. Trials already queued keep running in DVC's queue "
                         "(`dvc queue status`); `imgpipe tune` again follows them and queues the rest; "
                         "`dvc queue kill TRIAL` and `dvc queue remove --queued` stop them\n")
        return 130
    sys.stdout.write(summaries.format_tune_summary(summary | {"params_changed": params_changed}, repo))
    return 0


def _lr_find(arguments: argparse.Namespace) -> int:
    from flows.tune import find_learning_rate

    result = find_learning_rate(Path(arguments.repo).resolve(), arguments.lock_timeout, arguments.min_rate,
                                arguments.max_rate, arguments.steps)
    sys.stdout.write(summaries.format_lr_find_summary(result))
    return 0


def _relabel(arguments: argparse.Namespace) -> int:
    from flows import run_lock
    from tasks.health import relabel

    root = Path(arguments.repo).resolve()
    with run_lock.workspace_lock(root, 0.0):  # never while a run reads the labels
        table = arguments.issues_table or relabel.default_table(root / "params.yaml")
        done = relabel.relabel(table, root / "params.yaml", arguments.labels)
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
    run = commands.add_parser(
        "run", help="run the training flow: every dvc.yaml stage that is out of date",
        description="Run the training flow once: every dvc.yaml stage that is out of date (through DVC), then the "
                    "gate against the production model, promotion or refusal, the report and the push; print a "
                    "summary. A run with nothing new does nothing and says so.")
    run.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    run.add_argument("--no-push", action="store_true", help="do not push outputs to the DVC remote at the end")
    run.add_argument(FLAGS["lock_timeout"], type=float, default=0.0, metavar="SECONDS",
                     help="wait this long for another run on the same repository to finish (default: do not wait)")
    run.add_argument("-S", FLAGS["set_param"], action="append", metavar="KEY=VALUE",
                     help="set a params.yaml value for this run and keep it there, as `dvc exp run -S` does (checked "
                          "first; repeatable), e.g. -S train.epochs=5 -S ingest.source=/data/pets")
    run.add_argument("--commit", action="store_true",
                     help="after a run that changed outputs, commit dvc.lock and the .dvc files to git (only those "
                          "files) with a message naming the outcome, so `dvc metrics diff` and `dvc plots diff` "
                          "compare revisions")
    run.set_defaults(handler=_run)

    serve = commands.add_parser(
        "serve", help="retrain on a schedule (Prefect serve) until interrupted",
        description="Run the training flow on a schedule until Ctrl-C, one run at a time (a run due while one is in "
                    "flight is cancelled); each run logs the summary `imgpipe run` prints. Uses PREFECT_API_URL when "
                    "set, else the project's own Prefect server, started if it is not running (it keeps running: "
                    "`imgpipe server stop`). Ctrl-C cancels the run in flight.")
    serve.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron schedule, e.g. '0 3 * * *' (03:00 UTC every day)")
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every this many seconds")
    serve.add_argument("--no-commit", action="store_true",
                       help="do not commit dvc.lock and the .dvc files after each run that changed them (by default "
                            "they are committed, alone, when the git index holds nothing staged)")
    serve.set_defaults(handler=_serve)

    server = commands.add_parser(
        "server", help="the project's own Prefect server, which serve and run start: status, start or stop",
        description="The project's own long-lived Prefect server (database, log and API secret in .dvc/tmp/prefect/, "
                    "UI on 127.0.0.1): its status, start it, or stop it. `imgpipe serve` and `imgpipe run` start it "
                    "when no PREFECT_API_URL is set; it answers only clients that hold the project's secret.")
    server.add_argument("action", choices=["status", "start", "stop"])
    server.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    server.set_defaults(handler=_server)

    promote = commands.add_parser(
        "promote", help="make the candidate model the production model",
        description="Make the candidate model (data/models/candidate) the production model and record it in the "
                    "registry; refused when the gate refused the candidate, unless --force with --reason.")
    promote.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    promote.add_argument(FLAGS["force"], action="store_true", help="promote even though the gate refused it")
    promote.add_argument(FLAGS["reason"], default="", help=f"why (required with {FLAGS['force']}); kept in the history")
    promote.add_argument(FLAGS["lock_timeout"], type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for a run on the same repository to finish (default: do not wait)")
    promote.set_defaults(handler=_promote)

    rollback = commands.add_parser(
        "rollback", help="restore the previous production model",
        description="Put the production model before the current one back in production, and record the rollback "
                    "(with --reason) in the registry; the model withdrawn is not promoted again by later runs.")
    rollback.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    rollback.add_argument(FLAGS["reason"], default="rolled back by hand", help="why; kept in the history")
    rollback.add_argument(FLAGS["lock_timeout"], type=float, default=0.0, metavar="SECONDS",
                          help="wait this long for a run on the same repository to finish (default: do not wait)")
    rollback.set_defaults(handler=_rollback)

    listing = commands.add_parser(
        "models", help="list the model registry: versions, dates, test metrics, gate outcome, which is in production",
        description="List the model registry: each version, when it was trained, its test metrics and gate outcome, "
                    "which one is in production, and the candidate.")
    listing.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    listing.set_defaults(handler=_models)

    collect = commands.add_parser(
        "gc", help="compact the raw store (shards mostly holding removed images) and prune DVC's cache",
        description="Rewrite the raw store's shards whose images were mostly removed from the source, then drop "
                    "from DVC's cache what no commit, branch, tag, experiment or the workspace names.")
    collect.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    collect.add_argument("--keep-cache", action="store_true", help="compact the workspace only; leave DVC's cache")
    collect.add_argument(FLAGS["lock_timeout"], type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for a running imgpipe run to finish (default: do not wait)")
    collect.set_defaults(handler=_gc)

    predict = commands.add_parser(
        "predict", help="classify every image under a folder into a table (streamed, resumable, optionally on Dask)",
        description="Classify every file under SOURCE (any depth) with a trained model; one row per file, broken "
                    "files included as error rows. Run it again after an interruption to finish, or after new files "
                    "arrive to classify only what is new or changed.")
    predict.add_argument("source", type=Path, metavar=FLAGS["source"], help="the folder of images to classify")
    predict.add_argument(FLAGS["out"], type=Path, default=Path(DEFAULT_OUT),
                         help=f"the table to write, .parquet or .csv (default: {DEFAULT_OUT}); its resume "
                              "state is kept in OUT.parts/ until the run ends")
    predict.add_argument(FLAGS["model"], help="a model folder (model.keras, labels.json, model_card.json); default: "
                                              f"the production model of {FLAGS['repo']} (a candidate only when named "
                                              "here)")
    predict.add_argument(FLAGS["repo"], default=".",
                         help=f"the imgpipe project whose production model classifies, when {FLAGS['model']} is not "
                              "given (default: the current folder)")
    predict.add_argument(FLAGS["top_k"], type=int, default=PredictOptions.top_k,
                         help=f"how many best labels to list per file (default: {PredictOptions.top_k})")
    predict.add_argument(FLAGS["batch_size"], type=int, default=PredictOptions.batch_size,
                         help=f"images per model call (default: {PredictOptions.batch_size})")
    predict.add_argument(FLAGS["workers"], type=int, default=DEFAULT_WORKERS,
                         help=f"{DEFAULT_WORKERS} (default): this process, decoding on every core; N > 1: a local Dask "
                              f"cluster of N worker processes (through Prefect); with {FLAGS['scheduler']}, shards for "
                              "N workers")
    predict.add_argument(FLAGS["min_files_per_worker"], type=int, default=MIN_FILES_PER_WORKER, metavar="N",
                         help=f"with {FLAGS['workers']} N > 1: start the cluster only for at least N files per worker; "
                              "a smaller folder is classified in this process, which is faster (default: "
                              f"{MIN_FILES_PER_WORKER}; 0: always)")
    predict.add_argument(FLAGS["scheduler"], metavar="ADDRESS",
                         help="an existing Dask scheduler (tcp://host:8786); its workers must see SOURCE, OUT and "
                              "the model folder")
    predict.add_argument(FLAGS["copy_into"], type=Path, metavar="DIR",
                         help="also put each classified file into DIR/<label>/<path>; never overwrites a different "
                              "file")
    predict.add_argument(FLAGS["link"], action="store_true",
                         help=f"with {FLAGS['copy_into']}: hard-link instead of copying")
    predict.add_argument(FLAGS["chunk_size"], type=int, default=PredictOptions.chunk_size,
                         help="files per committed chunk: at most this much work is lost to an interruption "
                              f"(default: {PredictOptions.chunk_size})")
    predict.add_argument(FLAGS["max_pixels"], type=int, default=PredictOptions.max_pixels,
                         help=f"larger images become error rows without being decoded (default: "
                              f"{PredictOptions.max_pixels})")
    predict.add_argument(FLAGS["follow_file_links"], action="store_true",
                         help="read symbolic links to files wherever they point (a tree of links that a split tool "
                              "built); a trust decision: the folder's owner chooses what is read. Links to folders are "
                              "never followed (default: links out of the folder are skipped rows)")
    predict.add_argument(FLAGS["engine"], default=PredictOptions.engine, choices=ENGINE_CHOICES,
                         help=f"what runs the model (default {PredictOptions.engine}: the fastest engine and precision "
                              "that passed the parity check on the test split when the model was trained; keras "
                              "without that record)")
    predict.add_argument(FLAGS["precision"], default=PredictOptions.precision, choices=PRECISION_CHOICES,
                         help=f"default {PredictOptions.precision}: as {FLAGS['engine']} auto chooses; bf16 needs a "
                              "CPU with native bf16, int8 the int8 model that train calibrates")
    predict.set_defaults(handler=_predict)

    weights = commands.add_parser("weights", help="pretrained backbone weights for train.weights",
                                  description="Pretrained backbone weights for train.weights, for a training machine "
                                              "without internet.")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="COMMAND")
    fetch = weights_commands.add_parser(
        "fetch", help="download a backbone's ImageNet weights (through Keras) and save them without the top",
        description="On a machine with internet: save NAME's ImageNet weights, without the classification top, to "
                    "FILE; copy FILE to the training machine and set train.weights to its path.")
    backbones = fetchable_backbones()
    fetch.add_argument("name", metavar="NAME", choices=backbones,
                       help=f"the backbone, as train.model names it: {', '.join(backbones)}")
    fetch.add_argument(FLAGS["out"], type=Path, metavar="FILE",
                       help="where to save the weights; the name must end in .weights.h5 (default: "
                            "NAME_imagenet_notop.weights.h5 in the current folder)")
    fetch.set_defaults(handler=_fetch_weights)

    tune = commands.add_parser(
        "tune", help="a hyper-parameter sweep (params.yaml's tune section), one DVC experiment per trial",
        description="Queue one DVC experiment per trial of params.yaml's `tune` section, run them with DVC's queue, "
                    "follow them and rank them by a validation metric. Run it again after an interruption to "
                    "resume: finished trials stay, the rest run.")
    tune.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    tune.add_argument("-S", FLAGS["set_param"], action="append", metavar="KEY=VALUE",
                      help="set a params.yaml value before the sweep and keep it there, as `imgpipe run -S` does "
                           "(checked first; repeatable), e.g. -S tune.method=grid -S train.batch_size=32")
    tune.add_argument(FLAGS["trials"], type=int, metavar="N",
                      help="draw N trials (sets tune.trials, and tune.max_trials when it is lower; kept in "
                           "params.yaml; tune.method random)")
    tune.add_argument(FLAGS["epochs"], type=int, metavar="N",
                      help="train each trial for at most N epochs (sets train.epochs; kept in params.yaml)")
    tune.add_argument(FLAGS["jobs"], type=int, default=None,
                      help="trials at a time (dvc queue start -j; default: one per 2 cores)")
    tune.add_argument(FLAGS["apply"], action="store_true",
                      help="apply the best trial to the workspace (dvc exp apply); `imgpipe run` then tests and gates it")
    tune.add_argument(FLAGS["restart"], action="store_true", help="plan a new sweep even if this one is recorded")
    tune.add_argument(FLAGS["lock_timeout"], type=float, default=0.0, metavar="SECONDS",
                      help="wait this long for another run on the same repository (default: do not wait)")
    tune.set_defaults(handler=_tune)

    lr_find = commands.add_parser(
        "lr-find", help="a learning-rate range test on the training split; suggests train.learning_rate",
        description="Train the configured model for a few hundred batches while the learning rate grows "
                    "exponentially; write the loss-against-rate plot and suggest train.learning_rate.")
    lr_find.add_argument(FLAGS["repo"], default=".", help="the imgpipe project folder (default: the current folder)")
    lr_find.add_argument(FLAGS["min_rate"], type=float, default=lr_settings.MIN_RATE,
                         help=f"the first learning rate (default: {lr_settings.MIN_RATE:g})")
    lr_find.add_argument(FLAGS["max_rate"], type=float, default=lr_settings.MAX_RATE,
                         help=f"the last learning rate (default: {lr_settings.MAX_RATE:g})")
    lr_find.add_argument(FLAGS["steps"], type=int, default=lr_settings.STEPS,
                         help=f"batches, at most (default: {lr_settings.STEPS})")
    lr_find.add_argument(FLAGS["lock_timeout"], type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for another run on the same repository (default: do not wait)")
    lr_find.set_defaults(handler=_lr_find)
    relabel = commands.add_parser(
        "relabel", help="accept the suggested labels of a label issues table (data/reports/data_health/label_issues.csv)",
        description="Give each image of FILE its suggested label in the label table that ingest.labels names (made "
                    "from the manifest, and ingest.labels set, when there is none). Delete the rows you reject first.")
    relabel.add_argument(FLAGS["issues_table"], dest="issues_table", type=Path, metavar="FILE",
                         help="a label issues table (default: the project's "
                              "data/reports/data_health/label_issues.csv)")
    relabel.add_argument("--repo", default=".", help="the imgpipe project folder (default: the current folder)")
    relabel.add_argument("--labels", type=Path, metavar="FILE",
                         help="where to make the label table when ingest.labels names none (default: labels.csv)")
    relabel.set_defaults(handler=_relabel)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command in ("run", "serve", "predict", "tune", "lr-find"):  # commands that may start TensorFlow here
        native_noise.filter_stderr()
    console_log.configure(rewrite=for_command_line if arguments.command in COMMANDS_WITH_SETTINGS else None,
                          served=arguments.command == "serve")
    try:
        return arguments.handler(arguments)
    except (ValueError, RuntimeError) as error:
        sys.stderr.write(f"imgpipe: error: {for_command_line(str(error))}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
