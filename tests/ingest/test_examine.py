"""Examining one source file: hash, decode check, the copy of a good image."""

from tasks.ingest import examine as ingest
from tests.conftest import make_image, save


def test_examine_reports_a_vanished_file_and_copies_only_good_images(tmp_path):
    record = ingest.examine(tmp_path / "gone.png", "cat/gone.png", None, 1000, 1, copy_to=tmp_path / "raw" / "gone.png")
    assert (record["reason"], record["detail"]) == ("unreadable", "cannot read file: No such file or directory")
    path = save(make_image((200, 40, 40), seed=1, size=24), tmp_path / "cat" / "a.png")
    good = ingest.examine(path, "cat/a.png", None, 1000, 1, copy_to=tmp_path / "raw" / "cat" / "a.png")
    assert good["reason"] == "" and (tmp_path / "raw" / "cat" / "a.png").read_bytes() == path.read_bytes()
    (tmp_path / "cat" / "b.png").write_bytes(b"")
    bad = ingest.examine(tmp_path / "cat" / "b.png", "cat/b.png", None, 1000, 1,
                         copy_to=tmp_path / "raw" / "cat" / "b.png")
    assert bad["reason"] == "empty_file"
    assert sorted(path.name for path in (tmp_path / "raw").rglob("*")) == ["a.png", "cat"]
