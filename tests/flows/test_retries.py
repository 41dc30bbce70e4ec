"""Which failures the training flow retries: only transient ones (a DVC remote that did not answer)."""

from prefect.states import Failed

from flows import stage_runner
from flows.training import _is_transient, push_outputs, run_stage


def _failed_with(error: Exception):
    return Failed(data=error, message=str(error))


def test_only_transient_failures_are_retried():
    assert _is_transient(None, None, _failed_with(stage_runner.TransientError("dvc push failed: timeout")))
    assert _is_transient(None, None, _failed_with(OSError("connection reset")))
    invalid = stage_runner.DataInvalid("stage 'validate' failed: ...", "validate", "tasks.validate.stage.ValidationFailed")
    assert not _is_transient(None, None, _failed_with(invalid))
    assert not _is_transient(None, None, _failed_with(ValueError("train.epochs must be >= 1, got -1")))


def test_pushes_retry_with_backoff_and_stages_never_retry():
    assert push_outputs.retries == 3
    delays = push_outputs.retry_delay_seconds
    assert list(delays) == sorted(delays) and delays[0] < delays[-1]  # growing pauses
    assert run_stage.retries == 0


def test_stage_failure_keeps_its_type_through_pickling():
    import pickle

    failure = stage_runner.DataInvalid("stage 'validate' failed: too few images", "validate", "x.ValidationFailed")
    copy = pickle.loads(pickle.dumps(failure))
    assert isinstance(copy, stage_runner.DataInvalid) and copy.stage == "validate" and str(copy) == str(failure)
