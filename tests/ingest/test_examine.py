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


def test_a_class_folder_swapped_for_a_link_after_the_walk_is_refused_not_followed(tmp_path):
    """Ingest read 200 outside images through a class folder swapped for a link after the walk (issue 27.7): under
    the source root, each folder is opened from the root down without following a link."""
    source = tmp_path / "source"
    inside = save(make_image((200, 40, 40), seed=1, size=24), source / "cat" / "deep" / "a.png")
    outside = save(make_image((1, 2, 3), seed=2, size=24), tmp_path / "private" / "deep" / "a.png")
    examiner = examine.Examiner(1000, 1, root=str(source))
    assert examiner(job(inside)).data == inside.read_bytes() != outside.read_bytes()
    (source / "cat").rename(tmp_path / "moved")
    (source / "cat").symlink_to(tmp_path / "private")  # the same names, other bytes
    refused = examiner(job(source / "cat" / "deep" / "a.png"))
    assert refused.data is None and refused.record["reason"] == "link"
    assert refused.record["detail"] == f"its folder {source / 'cat'}: is a symbolic link; links are not followed"
    assert refused.record["sha256"] == ""
    assert examine.examine(job(outside), 1000, 1).data == outside.read_bytes()  # a path out of the root: as it is
    (source / "cat").unlink()
    (source / "cat").write_bytes(b"now a file")
    assert examiner(job(source / "cat" / "deep" / "a.png")).record["reason"] == "not_a_folder"
    assert "not_a_folder" in examine.READ_REASONS  # read again next run, like a link


def test_a_file_over_the_size_limit_is_quarantined_without_being_read(tmp_path, monkeypatch):
    """A 12 GB sparse file filled the memory (issue 27.10): ingest.max_file_bytes is checked before reading."""
    sparse = tmp_path / "source" / "cat" / "huge.png"
    sparse.parent.mkdir(parents=True)
    with open(sparse, "wb") as handle:
        handle.truncate(12 * 10**9)  # 12 GB that take no disk space
    monkeypatch.setattr(examine.images, "inspect_bytes", lambda *arguments, **keywords: pytest.fail("decoded"))
    for examiner in (examine.Examiner(1000, 1, max_file_bytes=5_000, root=str(tmp_path / "source")),
                     examine.Examiner(1000, 1)):  # the default limit, images.MAX_FILE_BYTES, is 1 GB
        refused = examiner(job(sparse, "cat/huge.png"))
        assert refused.record["reason"] == "too_large" and refused.data is None
        assert refused.record["detail"].startswith("12000000000 bytes, over the file size limit of ")
        assert refused.record["detail"].endswith("; raise ingest.max_file_bytes to accept it")
    assert examine.checks(1000, 1, 5_000) != examine.checks(1000, 1, 6_000)  # a verdict holds under its limit only
