"""Issue 27 item 14: `train.width=100000000` was accepted and the process was killed without a word; params refuse it."""

import pytest

from tasks.config import parse_config


def test_a_huge_train_width_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"train\.width") as raised:
        parse_config({"train": {"width": 100_000_000}})
    assert "1024" in str(raised.value)
    assert parse_config({"train": {"width": 1024}}).train.width == 1024
