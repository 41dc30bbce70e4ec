"""A file or folder swapped after the walk for a link or a FIFO is refused, never followed or waited on."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from tasks.predict import classify, decode
from tests.conftest import make_image
from tests.predict.conftest import options, run_with_a_change_after_the_walk

pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax:UserWarning")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of four photos, and a photo outside it (what a swapped link would point at)."""
    source = tmp_path / "photos"
    for index, folder in enumerate(["a", "a", "b", "b"]):
        (source / folder).mkdir(parents=True, exist_ok=True)
        make_image((200, 40, 40), seed=index).save(source / folder / f"photo_{index}.png")
    outside = tmp_path / "secret" / "outside.png"
    outside.parent.mkdir()
    make_image((1, 2, 3), seed=99).save(outside)
    return source, outside


class Hung(BaseException):
    """Not an OSError, which the code under test might take for the file's own trouble."""


@pytest.fixture
def no_hang():
    """Fail instead of hanging forever (a FIFO opened without O_NONBLOCK waits for a writer)."""
    def timed_out(*_: object) -> None:
        raise Hung("predict hung on a FIFO")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out).set_index("path")


def test_a_file_swapped_for_a_link_out_after_the_walk_is_not_followed(tmp_path, tree, one_label_model):
    source, outside = tree
    victim = source / "a" / "photo_0.png"

    def swap() -> None:
        victim.unlink()
        victim.symlink_to(outside)

    out = tmp_path / "out.parquet"
    summary = run_with_a_change_after_the_walk(source, out, one_label_model("thing"), swap)
    row = _rows(out).loc["a/photo_0.png"]
    assert (row["status"], row["reason"]) == ("error", "link") and "not followed" in row["detail"]
    secret = hashlib.sha256(outside.read_bytes()).hexdigest()
    assert secret not in set(pd.read_parquet(out)["sha256"])  # nothing of the outside file in the table
    assert summary.ok == 3 and summary.errors == {"link": 1}


def test_a_file_swapped_for_a_fifo_after_the_walk_is_refused_without_waiting(tmp_path, tree, one_label_model,
                                                                             no_hang):
    source, _ = tree
    victim = source / "b" / "photo_2.png"

    def swap() -> None:
        victim.unlink()
        os.mkfifo(victim)

    out = tmp_path / "out.parquet"
    run_with_a_change_after_the_walk(source, out, one_label_model("thing"), swap)
    row = _rows(out).loc["b/photo_2.png"]
    assert (row["status"], row["reason"]) == ("error", "special_file")
    assert (_rows(out)["status"] == "ok").sum() == 3


def test_a_folder_swapped_for_a_link_out_after_the_walk_is_not_followed(tmp_path, tree, one_label_model):
    """O_NOFOLLOW guards only a path's last name: each folder is opened from the one above without following."""
    source, outside = tree
    decoy = outside.parent / "photo_2.png"  # where b/photo_2.png would lead through a link at b
    make_image((9, 9, 9), seed=5).save(decoy)
    make_image((9, 9, 9), seed=6).save(outside.parent / "photo_3.png")

    def swap() -> None:
        (source / "b").rename(tmp_path / "b-moved-away")
        (source / "b").symlink_to(outside.parent)

    out = tmp_path / "out.parquet"
    run_with_a_change_after_the_walk(source, out, one_label_model("thing"), swap)
    rows = _rows(out)
    for name in ("b/photo_2.png", "b/photo_3.png"):
        assert (rows.loc[name, "status"], rows.loc[name, "reason"]) == ("error", "link"), rows.loc[name].to_dict()
        assert rows.loc[name, "detail"].startswith(f"{source / 'b'}: is a symbolic link")
    assert hashlib.sha256(decoy.read_bytes()).hexdigest() not in set(rows["sha256"])


def test_a_swap_during_a_run_through_the_read_hook(tmp_path, tree, one_label_model, monkeypatch, no_hang):
    """The whole command (classify.run), a file swapped for a FIFO at the moment before it is read."""
    source, _ = tree

    def swap_before_reading(path: Path) -> None:
        if path.name == "photo_1.png":
            path.unlink()
            os.mkfifo(path)

    monkeypatch.setattr(decode, "before_read", swap_before_reading)
    out = tmp_path / "out.parquet"
    summary = classify.run(source, out, one_label_model("thing"), options())
    assert _rows(out).loc["a/photo_1.png", "reason"] == "special_file" and summary.ok == 3
