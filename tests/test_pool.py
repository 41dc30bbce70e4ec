"""The one process pool: order kept, serial for few items, errors raised, memory bounded, workers spawned."""

import os

import pytest

from tasks import pool


def square(value: int) -> int:
    return value * value


def process_id(_: int) -> int:
    return os.getpid()


def fail_on_seven(value: int) -> int:
    if value == 7:
        raise ValueError("seven")
    return value


def test_results_come_in_the_order_given_in_this_process_and_in_workers():
    items = list(range(pool.SERIAL_BELOW + 37))
    assert list(pool.ordered_map(square, items, workers=2)) == [value * value for value in items]
    assert list(pool.ordered_map(square, items, workers=1)) == [value * value for value in items]


def test_few_items_run_in_this_process_many_in_workers():
    assert set(pool.ordered_map(process_id, list(range(10)), workers=2)) == {os.getpid()}
    many = set(pool.ordered_map(process_id, list(range(pool.SERIAL_BELOW * 2)), workers=2))
    assert os.getpid() not in many and 1 <= len(many) <= 2


def test_a_worker_error_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="seven"):
        list(pool.ordered_map(fail_on_seven, list(range(pool.SERIAL_BELOW + 10)), workers=2))


def test_imap_keeps_at_most_a_few_tasks_per_worker_in_flight():
    consumed = []

    def items():
        for value in range(100):
            consumed.append(value)
            yield value

    with pool.ProcessPool(2) as workers:
        results = workers.imap(square, items())
        first = next(results)
        assert first == 0 and len(consumed) <= pool.IN_FLIGHT_PER_WORKER * 2 + 1
        assert list(results) == [value * value for value in range(1, 100)]


def test_worker_counts_and_batch_sizes():
    assert pool.worker_count(0) == pool.available_cores() >= 1
    assert pool.worker_count(3) == 3
    with pytest.raises(ValueError, match="workers must be >= 0"):
        pool.worker_count(-1)
    assert pool.batch_size(10, 2) == 1 and pool.batch_size(10**6, 2) == pool.MAX_BATCH
