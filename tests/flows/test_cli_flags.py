"""Only the command line knows its flags (issue 23 item 4): tasks/ names settings, flows/cli_flags.py spells them,
and the parser's defaults and choices are the ones tasks/ defines."""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from typing import get_args

from flows import cli
from flows.cli_flags import FLAGS, for_command_line
from tasks.engines import names
from tasks.predict.options import (DEFAULT_OUT, DEFAULT_WORKERS, ENGINE_CHOICES, MIN_FILES_PER_WORKER,
                                   PRECISION_CHOICES, PredictOptions)
from tasks.tune import lr_settings
from tests.conftest import PROJECT_ROOT

_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# flags of other programs that a message tells the user to run (prose, not an argument list)
_OTHER_TOOLS_IN_MESSAGES = {
    ("tasks/backbones/pretrained.py", "--force-reinstall"),  # pip install --force-reinstall
    ("tasks/backbones/torch_weights.py", "--force-reinstall"),
    ("tasks/tune/sweep.py", "--kill"),  # dvc queue stop --kill
}
# an argument list of another program that happens to share a name with one of imgpipe's flags
_OTHER_TOOLS_IN_ARGUMENTS = {("tasks/tune/experiments.py", "--jobs")}  # dvc queue start --jobs N


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                found[name] = subparser
                found |= {f"{name} {inner}": deeper for inner, deeper in _subcommands(subparser).items()}
    return found


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings]


def _imgpipe_flags() -> set[str]:
    parser = cli.build_parser()
    return {flag for subparser in [parser, *_subcommands(parser).values()] for action in _options(subparser)
            for flag in action.option_strings if flag.startswith("--")}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _string_constants():
    """(file, text) of every string constant in tasks/ but docstrings (f-strings' literal parts included)."""
    for path in sorted((PROJECT_ROOT / "tasks").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                yield path.relative_to(PROJECT_ROOT).as_posix(), node.value


def test_no_module_under_tasks_spells_a_flag_of_the_command_in_a_string():
    imgpipe_flags = _imgpipe_flags()
    assert {"--engine", "--copy-into", "--restart", "--out", "--force"} <= imgpipe_flags  # the scan sees them
    found = []
    for file, text in _string_constants():
        for flag in _FLAG.findall(text):
            prose = text.strip() != flag and " " in text.strip()
            if prose and (file, flag) not in _OTHER_TOOLS_IN_MESSAGES:
                found.append(f"{file}: {flag} in {text!r}")
            elif not prose and flag in imgpipe_flags and (file, flag) not in _OTHER_TOOLS_IN_ARGUMENTS:
                found.append(f"{file}: {flag} alone, as the command spells it: {text!r}")
    assert not found, "tasks/ names settings (`copy_into`), flows/cli_flags.py spells them:\n" + "\n".join(found)


def test_the_table_is_the_parsers_spelling_of_every_setting_it_names():
    parser = cli.build_parser()
    spelt = {}
    for subparser in [parser, *_subcommands(parser).values()]:
        for action in subparser._actions:
            if action.dest in FLAGS:
                spelt.setdefault(action.dest, set()).add(action.metavar if not action.option_strings else
                                                         next(flag for flag in action.option_strings
                                                              if flag.startswith("--")))
    assert set(spelt) == set(FLAGS), "every setting in FLAGS is an argument of some command, and back"
    for setting, spellings in spelt.items():
        assert spellings == {FLAGS[setting]}, setting


def test_a_message_is_rewritten_by_the_table_alone():
    assert for_command_line("choose another `copy_into`, or `out` x") == "choose another --copy-into, or --out x"
    assert for_command_line("`engine` keras at `precision` int8") == "--engine keras at --precision int8"
    assert for_command_line("`source` and `resize`") == "SOURCE and `resize`"  # no setting of the command: as it was


def test_predict_defaults_and_choices_are_the_ones_tasks_defines():
    from flows.classify import classify_directory
    from tasks.engines import engine
    from tasks.predict import sizing

    arguments = cli.build_parser().parse_args(["predict", "folder"])
    for setting, default in vars(PredictOptions()).items():
        assert getattr(arguments, setting) == default, setting
    assert str(arguments.out) == DEFAULT_OUT and arguments.workers == DEFAULT_WORKERS
    assert arguments.min_files_per_worker == MIN_FILES_PER_WORKER == sizing.MIN_FILES_PER_WORKER
    predict = _subcommands(cli.build_parser())["predict"]
    choices = {action.dest: tuple(action.choices) for action in predict._actions if action.choices}
    assert choices == {"engine": ENGINE_CHOICES, "precision": PRECISION_CHOICES}
    assert ENGINE_CHOICES == (names.AUTO, *engine.ENGINES) and tuple(engine.FILES) == names.ENGINES
    assert {precision for modes in engine.FILES.values() for precision in modes} == set(names.PRECISIONS)
    assert PRECISION_CHOICES == (names.AUTO, *names.PRECISIONS)
    flow_defaults = {name: parameter.default for name, parameter in
                     inspect.signature(classify_directory.fn).parameters.items()}
    for setting, default in vars(PredictOptions()).items():
        assert flow_defaults[setting] == default, setting
    assert flow_defaults["out"] == DEFAULT_OUT and flow_defaults["workers"] == DEFAULT_WORKERS
    assert flow_defaults["min_files_per_worker"] == MIN_FILES_PER_WORKER


def test_other_defaults_and_choices_are_the_ones_tasks_defines():
    from tasks import networks
    from tasks.params import EmbedParams
    from tasks.tune import lr_find

    fetch = _subcommands(cli.build_parser())["weights fetch"]
    name = next(action for action in fetch._actions if action.dest == "name")
    assert tuple(name.choices) == tuple(networks.BACKBONES)
    arguments = cli.build_parser().parse_args(["lr-find"])
    run_defaults = inspect.signature(lr_find.run).parameters
    assert (arguments.min_rate, arguments.max_rate, arguments.steps) == (
        lr_settings.MIN_RATE, lr_settings.MAX_RATE, lr_settings.STEPS) == tuple(
        run_defaults[key].default for key in ("min_rate", "max_rate", "steps"))
    # embed.engine is a params.yaml key (a Literal, so that every stage need not depend on tasks/backbones/): the
    # engines that compute a backbone's features, held to feature_engine's list (not every engine of a model folder)
    from tasks.backbones import feature_engine

    assert get_args(EmbedParams.model_fields["engine"].annotation) == (names.AUTO, *feature_engine.PRECISIONS)


def test_help_states_the_defaults_it_takes_from_tasks():
    predict = _subcommands(cli.build_parser())["predict"]
    helps = {action.dest: action.help for action in predict._actions}
    assert f"(default: {PredictOptions.top_k})" in helps["top_k"]
    assert f"(default: {PredictOptions.max_pixels})" in helps["max_pixels"]
    assert f"(default: {PredictOptions.chunk_size})" in helps["chunk_size"]


def test_every_command_says_what_it_does_in_the_list_and_in_its_own_help():
    parser = cli.build_parser()
    listed = {choice.dest: choice.help for action in parser._actions
              if isinstance(action, argparse._SubParsersAction) for choice in action._choices_actions}
    commands = _subcommands(parser)
    assert {name for name in commands if " " not in name} == set(listed)
    for name, subparser in commands.items():
        assert subparser.description, f"`imgpipe {name} --help` has no description line"
        assert subparser.description.endswith("."), name
    for name, text in listed.items():
        assert text, f"`imgpipe --help` lists {name} without a line"
    assert "KEY=VALUE" in commands["tune"].format_help() and "--trials N" in commands["tune"].format_help()
