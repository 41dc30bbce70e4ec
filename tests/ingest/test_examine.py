"""Examining one source file: read once, hashed, decoded to check it; an earlier verdict reused for the same bytes."""

import errno
import hashlib
import os

import pytest

from tasks.ingest import examine
from tests.conftest import make_image, save


def job(path, source_path="cat/a.png", previous=None):
    return examine.FileJob(str(path), source_path, previous)


def test_a_good_image_comes_back_with_its_bytes_and_a_bad_one_with_a_reason(tmp_path):
    path = save(make_image((200, 40, 40), seed=1, size=24), tmp_path / "cat" / "a.png")
    good = examine.examine(job(path), 1000, 1)
    assert good.record["reason"] == "" and good.data == path.read_bytes()
    assert good.record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (good.record["width"], good.record["height"], good.record["format"]) == (24, 24, "PNG")
    (tmp_path / "cat" / "b.png").write_bytes(b"")
    bad = examine.examine(job(tmp_path / "cat" / "b.png", "cat/b.png"), 1000, 1)
    assert bad.record["reason"] == "empty_file" and bad.data is None
    gone = examine.examine(job(tmp_path / "gone.png", "cat/gone.png"), 1000, 1)
    assert (gone.record["reason"], gone.record["detail"]) == ("unreadable", "cannot read file: No such file or directory")
    small = examine.examine(job(path), 1000, min_side=30)
    assert small.record["reason"] == "too_small" and "lower ingest.min_side" in small.record["detail"]


def test_a_name_swapped_for_a_link_or_a_fifo_is_refused_not_followed(tmp_path):
    outside = save(make_image((1, 2, 3), seed=2, size=24), tmp_path / "outside.png")
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "swapped.png").symlink_to(outside)
    assert examine.examine(job(tmp_path / "cat" / "swapped.png"), 1000, 1).record["reason"] == "link"
    os.mkfifo(tmp_path / "cat" / "pipe.png")  # a blocking open would hang here: nobody writes to it
    assert examine.examine(job(tmp_path / "cat" / "pipe.png"), 1000, 1).record["reason"] == "special_file"


def test_an_earlier_verdict_for_the_same_bytes_is_reused_without_decoding(tmp_path, monkeypatch):
    path = save(make_image((200, 40, 40), seed=1, size=24), tmp_path / "a.png")
    first = examine.examine(job(path), 1000, 1).record

    def refuse(*arguments, **keywords):
        raise AssertionError("decoded again")

    monkeypatch.setattr(examine.images, "inspect_bytes", refuse)
    again = examine.examine(job(path, previous=first), 1000, 1)
    assert again.record == first and again.data == path.read_bytes()
    with pytest.raises(AssertionError, match="decoded again"):  # other bytes: the verdict cannot hold
        examine.examine(job(path, previous=first | {"sha256": "0" * 64}), 1000, 1)


def test_an_error_of_the_machine_stops_the_stage_instead_of_quarantining(tmp_path, monkeypatch):
    path = save(make_image((200, 40, 40), seed=1, size=24), tmp_path / "a.png")

    def disk_error(*arguments, **keywords):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(examine.images.os, "open", disk_error)
    with pytest.raises(OSError, match="Input/output error"):
        examine.examine(job(path), 1000, 1)
