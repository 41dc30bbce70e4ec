"""Backs up a training phase at the end of every epoch and restores it after an interruption; reads and writes
`<phase>.backup/` in the run folder, and moves a damaged backup into the run folders' `damaged/` folder.

Keras's own BackupAndRestore overwrites its weights file in place: a full disk or a kill in the middle of a write
leaves a damaged file that fails every later run ("addr overflow"). Here each backup is written under a temporary
name and renamed into place, so the latest whole backup and the one before it always survive; a backup that cannot
be read (a disk that failed under it, a copy from elsewhere) is set aside with a warning, never deleted, and
training restarts from the one before or from scratch.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import h5py
import keras
from keras import ops

from tasks import disk_space

logger = logging.getLogger(__name__)

LATEST = "latest.weights.h5"
PREVIOUS = "previous.weights.h5"
PARTIAL = ".latest.partial.weights.h5"  # Keras saves weights only to a name ending in .weights.h5
EPOCH_ATTRIBUTE = "imgpipe_epochs_done"  # in the weights file itself, so a backup's weights and epoch never part
DAMAGED_FOLDER = "damaged"  # beside the run folders: data/models/.runs/damaged/
UNREADABLE = (OSError, ValueError, KeyError, RuntimeError)  # what h5py and Keras raise on a damaged file


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (the same folder, epoch-end saves, the folder removed when the phase ends), with
    every write atomic, two whole backups kept, and a damaged backup set aside instead of failing the run."""

    def __init__(self, backup_dir: Path, damaged_dir: Path, label: str) -> None:
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=True)
        self.folder = Path(backup_dir)
        self.damaged_dir = damaged_dir
        self.label = label  # names the set-aside files: run key and phase

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        (self.folder / PARTIAL).unlink(missing_ok=True)  # a write that was cut short: never a backup
        if not self.model.built:
            raise ValueError(f"{self.folder}: the model must be built before training starts, to restore a backup")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its state is part of the backup
        variables = list(self.model.weights) + list(self.model.optimizer.variables if self.model.optimizer else [])
        initial = None
        damaged = False
        for name in (LATEST, PREVIOUS):
            path = self.folder / name
            if not path.exists():
                continue
            if initial is None:  # a load that fails half-way must not leave half its weights in the model
                initial = [ops.convert_to_numpy(variable) for variable in variables]
            try:
                epochs_done = read_epochs_done(path)
                self.model.load_weights(path)
            except UNREADABLE as error:
                for variable, value in zip(variables, initial):
                    variable.assign(value)
                aside = self.set_aside(path)
                logger.warning("training backup %s cannot be read (%s: %s); moved it to %s and %s", path,
                               type(error).__name__, error, aside,
                               "trying the one before" if name == LATEST else "starting the phase from scratch")
                damaged = True
                continue
            self.model._initial_epoch = epochs_done  # what Keras's own BackupAndRestore sets
            if damaged:
                logger.warning("training resumes from the backup before the damaged one (after epoch %d)",
                               epochs_done)
            return
        if damaged:
            logger.warning("no readable training backup left in %s: the phase starts from scratch", self.folder)

    def set_aside(self, path: Path) -> Path:
        """Move a damaged backup out of the way (never delete it: a person may want to see what happened)."""
        self.damaged_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.damaged_dir / f"{self.label}.{stamp}.{path.name}"
        counter = 1
        while aside.exists():
            aside = self.damaged_dir / f"{self.label}.{stamp}-{counter}.{path.name}"
            counter += 1
        os.replace(path, aside)
        return aside

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.save(epoch + 1)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass  # backups at the end of each epoch only

    def save(self, epochs_done: int) -> None:
        """Write the weights, optimizer state and epoch under a temporary name, then make it the latest backup and
        the one it replaces the previous one. A failed write leaves both earlier backups as they were."""
        self.folder.mkdir(parents=True, exist_ok=True)
        latest, previous, temporary = self.folder / LATEST, self.folder / PREVIOUS, self.folder / PARTIAL
        try:
            self.model.save_weights(temporary, overwrite=True)
            with h5py.File(temporary, "a") as file:
                file.attrs[EPOCH_ATTRIBUTE] = epochs_done
            if latest.exists():
                os.replace(latest, previous)
            os.replace(temporary, latest)
        except (OSError, RuntimeError) as error:
            if disk_space.is_full(error):
                size = latest.stat().st_size if latest.exists() else None
                raise disk_space.DiskFull(self.folder, f"the training backup after epoch {epochs_done} (the last "
                                          f"whole backup is kept: training resumes from it)", size) from error
            raise
        finally:
            temporary.unlink(missing_ok=True)


def read_epochs_done(path: Path) -> int:
    """The number of epochs a backup holds; ValueError when the file is not one of ours."""
    with h5py.File(path, "r") as file:
        if EPOCH_ATTRIBUTE not in file.attrs:
            raise ValueError(f"{path}: no {EPOCH_ATTRIBUTE} record, not a backup written by imgpipe")
        return int(file.attrs[EPOCH_ATTRIBUTE])
