"""Training callbacks and schedules: the learning-rate schedule, the best weights on disk, history across restarts."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from tasks import networks
from tasks.params import TrainParams
from tasks.train import callbacks


def test_cosine_schedule_warms_up_then_decays_and_other_schedules_are_constant():
    schedule = callbacks.learning_rate(0.01, "cosine", warmup_epochs=1, epochs=5, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 49)]
    assert rates[0] == pytest.approx(0.001) and rates[2] == pytest.approx(0.01)  # warm-up from a tenth to the top
    assert rates[2] > rates[3] > rates[4] >= 0.01 * 0.01  # then down to alpha * rate
    assert callbacks.learning_rate(0.01, "plateau", 1, 5, 10) == 0.01 == callbacks.learning_rate(0.01, "constant", 1, 5, 10)
    assert callbacks.steps_per_epoch(65, 64) == 2 and callbacks.steps_per_epoch(0, 64) == 1


def test_best_weights_keeps_only_a_better_epoch_and_survives_a_restart(tmp_path):
    network = networks.simple_cnn(8, 2, depth=1, width=2, dropout=0.0)
    keeper = callbacks.BestWeights(tmp_path, "train", select_on="macro_f1")
    keeper.set_model(network)
    keeper.on_epoch_end(0, {"val_loss": 0.9, "val_macro_f1": 0.6})
    saved = [np.array(weight) for weight in network.get_weights()]
    network.set_weights([weight + 1.0 for weight in network.get_weights()])
    again = callbacks.BestWeights(tmp_path, "train", select_on="macro_f1")  # a resumed run: reads the record
    again.set_model(network)
    again.on_epoch_end(1, {"val_loss": 0.5, "val_macro_f1": 0.55})  # lower loss, worse macro-F1: not kept
    record = json.loads((tmp_path / "train.best.json").read_text())
    assert record["epoch"] == 1 and record["val_loss"] == 0.9 and record["select_on"] == "macro_f1"
    network.load_weights(callbacks.best_weights_path(tmp_path, "train"))
    for kept, now in zip(saved, network.get_weights()):
        np.testing.assert_array_equal(kept, now)
    assert not list(tmp_path.glob("*.partial*"))
    again.on_epoch_end(2, {"val_loss": 0.8, "val_macro_f1": 0.6})  # the same macro-F1, a lower loss: kept
    assert json.loads((tmp_path / "train.best.json").read_text())["epoch"] == 3


def test_early_stopping_waits_for_min_epochs_and_counts_patience_from_the_best_epoch(tmp_path):
    network = networks.simple_cnn(8, 2, depth=1, width=2, dropout=0.0)
    keeper = callbacks.BestWeights(tmp_path, "train", select_on="accuracy", patience=2, min_epochs=5)
    keeper.set_model(network)
    stopped_after = None
    for epoch in range(10):
        network.stop_training = False
        keeper.on_epoch_end(epoch, {"val_loss": 1.0, "val_accuracy": 0.9 if epoch == 0 else 0.5})
        if network.stop_training:
            stopped_after = epoch + 1
            break
    assert stopped_after == 5  # no better epoch since epoch 1, but not before min_epochs
    resumed = callbacks.BestWeights(tmp_path, "train", select_on="accuracy", patience=2, min_epochs=1)
    resumed.set_model(network)
    network.stop_training = False
    resumed.on_epoch_end(5, {"val_loss": 1.0, "val_accuracy": 0.5})  # patience counts from the recorded best
    assert network.stop_training


def test_macro_f1_metric_matches_the_evaluation_for_indices_and_one_hot_labels():
    from tasks.scoring import metrics as metric_functions

    generator = np.random.default_rng(3)
    actual = generator.integers(0, 4, 50)
    probabilities = generator.random((50, 4))
    probabilities[:, 3] = 0  # class 3 is never predicted
    metric = callbacks.MacroF1(4)
    metric.update_state(actual[:20], probabilities[:20])
    metric.update_state(actual[20:], probabilities[20:])  # accumulated over batches, not averaged
    confusion = np.zeros((4, 4), dtype=int)
    np.add.at(confusion, (actual, probabilities.argmax(axis=1)), 1)
    expected = float(metric_functions.macro_f1_from_counts(confusion))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    one_hot = callbacks.MacroF1(4)
    one_hot.update_state(np.eye(4)[actual], probabilities)
    assert float(one_hot.result()) == pytest.approx(expected, abs=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    uniform = callbacks.MacroF1(2)
    uniform.update_state(np.array([0, 0, 1, 1]), np.tile([0.6, 0.4], (4, 1)))  # one class for every image
    assert float(uniform.result()) == pytest.approx(1 / 3)


def test_history_keeps_the_last_record_of_each_epoch_across_interruptions(tmp_path):
    pd.DataFrame({"epoch": [0, 1, 1, 2], "loss": [3.0, 2.5, 2.0, 1.0]}).to_csv(tmp_path / "train.history.csv",
                                                                             index=False)
    history = callbacks.read_history(tmp_path, "train")
    assert list(history["epoch"]) == [0, 1, 2] and list(history["loss"]) == [3.0, 2.0, 1.0]
    assert callbacks.read_history(tmp_path, "fine_tune").empty


def test_a_run_resumes_only_into_the_same_configuration_and_data(tmp_path):
    data = tmp_path / "split.parquet"
    data.write_bytes(b"one split")
    key = callbacks.run_key(TrainParams(), {"seed": 1}, [data])
    assert key == callbacks.run_key(TrainParams(), {"seed": 1}, [data])
    assert key != callbacks.run_key(TrainParams(epochs=3), {"seed": 1}, [data])
    assert key != callbacks.run_key(TrainParams(), {"seed": 2}, [data])
    data.write_bytes(b"another split")
    assert key != callbacks.run_key(TrainParams(), {"seed": 1}, [data])


def test_phase_callbacks_end_with_backup_and_add_plateau_only_when_asked(tmp_path):
    constant = callbacks.phase_callbacks(TrainParams(schedule="cosine"), tmp_path, "train", live=None)
    assert isinstance(constant[-1], keras.callbacks.BackupAndRestore)
    assert not any(isinstance(item, keras.callbacks.ReduceLROnPlateau) for item in constant)
    plateau = callbacks.phase_callbacks(TrainParams(schedule="plateau"), tmp_path, "train", live=None)
    assert any(isinstance(item, keras.callbacks.ReduceLROnPlateau) for item in plateau)


def _tiny_network() -> keras.Model:
    network = networks.simple_cnn(8, 2, depth=1, width=2, dropout=0.0)
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return network


class _StopAt(keras.callbacks.Callback):
    """Kills a fit at the start of an epoch, as a killed process would stop it."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _fit(network, run_dir, epochs, extra=()):
    images = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    classes = np.array([0, 1, 0, 1])
    restore = callbacks.phase_callbacks(TrainParams(schedule="constant"), run_dir, "train", live=None)[-1]
    return network.fit(images, classes, epochs=epochs, batch_size=4, verbose=0, callbacks=[*extra, restore])


def test_a_damaged_latest_backup_is_set_aside_and_training_resumes_from_the_one_before(tmp_path, caplog):
    run_dir = tmp_path / ".runs" / "0123456789abcdef"
    with pytest.raises(KeyboardInterrupt):
        _fit(_tiny_network(), run_dir, epochs=3, extra=[_StopAt(2)])  # killed after two whole epochs
    latest = run_dir / "train.backup" / "latest.weights.h5"
    damaged_bytes = latest.read_bytes()[: latest.stat().st_size // 3]  # a disk that filled up in mid-write
    latest.write_bytes(damaged_bytes)
    with caplog.at_level("WARNING"):
        history = _fit(_tiny_network(), run_dir, epochs=3)
    assert len(history.history["loss"]) == 2  # resumed after epoch 1, the previous whole backup
    assert "cannot be read" in caplog.text and "resumes from the backup before" in caplog.text
    aside = list((tmp_path / ".runs" / "damaged").iterdir())
    assert len(aside) == 1 and aside[0].read_bytes() == damaged_bytes  # set aside, not deleted
    assert not (run_dir / "train.backup").exists()  # removed once the phase finished, as Keras does


def test_garbage_as_the_only_backup_restarts_training_from_scratch_with_a_warning(tmp_path, caplog):
    run_dir = tmp_path / ".runs" / "0123456789abcdef"
    (run_dir / "train.backup").mkdir(parents=True)
    (run_dir / "train.backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    network = _tiny_network()
    with caplog.at_level("WARNING"):
        history = _fit(network, run_dir, epochs=2)
    assert len(history.history["loss"]) == 2  # every epoch, from scratch
    assert "starts from scratch" in caplog.text
    aside = list((tmp_path / ".runs" / "damaged").iterdir())
    assert [path.read_bytes()[-7:] for path in aside] == [b"garbage"]


def test_a_full_disk_while_writing_a_backup_leaves_the_previous_backup_intact(tmp_path, monkeypatch):
    import errno

    run_dir = tmp_path / "run"
    network = _tiny_network()
    with pytest.raises(KeyboardInterrupt):
        _fit(network, run_dir, epochs=3, extra=[_StopAt(1)])  # one whole backup on disk
    latest = run_dir / "train.backup" / "latest.weights.h5"
    before = latest.read_bytes()

    def save_half_then_fail(filepath, overwrite=True):
        with open(filepath, "wb") as file:
            file.write(before[: len(before) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(network, "save_weights", save_half_then_fail)
    with pytest.raises(OSError, match="disk is full") as raised:
        _fit(network, run_dir, epochs=3)
    assert str(run_dir / "train.backup") in str(raised.value) and raised.value.errno == errno.ENOSPC
    assert latest.read_bytes() == before
    assert sorted(path.name for path in (run_dir / "train.backup").iterdir()) == ["latest.weights.h5"]


def test_the_time_left_follows_the_typical_epoch_not_the_last_one():
    """The first epoch (building, compiling) and one slow epoch no longer swing the estimate (33 s to 7 min, seen)."""
    assert callbacks.typical_epoch_seconds([20.0]) == 20.0
    assert callbacks.typical_epoch_seconds([20.0, 1.5]) == 1.5  # the first epoch left out once there are others
    assert callbacks.typical_epoch_seconds([20.0, 1.5, 1.4, 9.0, 1.6]) == 1.55  # the median: one slow epoch ignored
