"""The `imgpipe` command's flags: one table from a setting's name to its flag, and a message rewritten with it.

tasks/ and the flows name a setting of a call in backticks (`max_pixels`), as the Python caller and the Prefect flow
know it; only the command line knows that the setting is the flag --max-pixels. The parser (flows/cli.py) declares
its options from this table, and every message it shows passes through `for_command_line`. Reads and writes nothing.
"""

from __future__ import annotations

# setting (a keyword argument of a task or flow function, as the messages name it) -> how the command line spells it
FLAGS: dict[str, str] = {
    "source": "SOURCE",  # predict's positional argument
    "out": "--out",
    "model": "--model",
    "repo": "--repo",
    "top_k": "--top-k",
    "batch_size": "--batch-size",
    "workers": "--workers",
    "min_files_per_worker": "--min-files-per-worker",
    "scheduler": "--scheduler",
    "copy_into": "--copy-into",
    "link": "--link",
    "chunk_size": "--chunk-size",
    "max_pixels": "--max-pixels",
    "follow_file_links": "--follow-file-links",
    "engine": "--engine",
    "precision": "--precision",
    "force": "--force",
    "reason": "--reason",
    "lock_timeout": "--lock-timeout",
    "issues_table": "--from",  # relabel's label issues table
    "set_param": "--set-param",
    "jobs": "--jobs",
    "apply": "--apply",
    "restart": "--restart",
    "trials": "--trials",
    "epochs": "--epochs",
    "min_rate": "--min-rate",
    "max_rate": "--max-rate",
    "steps": "--steps",
}


def for_command_line(message: str) -> str:
    """`message` with each setting it names in backticks (`copy_into`) spelt as the flag that sets it (--copy-into);
    a backticked word that is no setting of the command stays as it is."""
    for setting, flag in FLAGS.items():
        message = message.replace(f"`{setting}`", flag)
    return message
