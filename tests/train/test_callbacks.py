"""Training callbacks and schedules: the learning-rate schedule, the best weights on disk, history across restarts."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from tasks.params import TrainParams
from tasks.train import callbacks, model


def test_cosine_schedule_warms_up_then_decays_and_other_schedules_are_constant():
    schedule = callbacks.learning_rate(0.01, "cosine", warmup_epochs=1, epochs=5, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 49)]
    assert rates[0] == pytest.approx(0.001) and rates[2] == pytest.approx(0.01)  # warm-up from a tenth to the top
    assert rates[2] > rates[3] > rates[4] >= 0.01 * 0.01  # then down to alpha * rate
    assert callbacks.learning_rate(0.01, "plateau", 1, 5, 10) == 0.01 == callbacks.learning_rate(0.01, "constant", 1, 5, 10)
    assert callbacks.steps_per_epoch(65, 64) == 2 and callbacks.steps_per_epoch(0, 64) == 1


def test_best_weights_keeps_only_a_lower_val_loss_and_survives_a_restart(tmp_path):
    network = model.simple_cnn(8, 2, depth=1, width=2, dropout=0.0)
    keeper = callbacks.BestWeights(tmp_path, "train")
    keeper.set_model(network)
    keeper.on_epoch_end(0, {"val_loss": 0.9})
    saved = [np.array(weight) for weight in network.get_weights()]
    network.set_weights([weight + 1.0 for weight in network.get_weights()])
    callbacks.BestWeights(tmp_path, "train").on_epoch_end(1, {"val_loss": 1.2})  # a resumed run: worse, ignored
    again = callbacks.BestWeights(tmp_path, "train")
    again.set_model(network)
    again.on_epoch_end(1, {"val_loss": 1.2})
    assert json.loads((tmp_path / "train.best.json").read_text()) == {"val_loss": 0.9, "epoch": 1}
    network.load_weights(callbacks.best_weights_path(tmp_path, "train"))
    for kept, now in zip(saved, network.get_weights()):
        np.testing.assert_array_equal(kept, now)
    assert not list(tmp_path.glob("*.partial*"))


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
