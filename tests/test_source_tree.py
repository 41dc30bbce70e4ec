"""The one tree walker and its policy: sorted, streamed, hidden entries and links skipped and reported."""

import os

from tasks import source_tree


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_files_come_sorted_by_relative_path_with_folders_as_name_slash(tmp_path):
    for name in ("b.jpg", "a/z.jpg", "a-b.jpg", "a/b/c.jpg", "A.jpg"):
        touch(tmp_path / name)
    assert [file.relative for file in source_tree.walk(tmp_path)] == ["A.jpg", "a-b.jpg", "a/b/c.jpg", "a/z.jpg",
                                                                       "b.jpg"]


def test_hidden_entries_links_and_special_files_are_skipped_and_reported(tmp_path):
    root = tmp_path / "root"
    touch(root / "cat" / "a.jpg")
    touch(root / ".hidden.jpg")
    touch(root / "__MACOSX" / "cat" / "._a.jpg")
    touch(root / "cat" / ".git" / "config")
    outside = touch(tmp_path / "outside.jpg")
    (root / "cat" / "out.jpg").symlink_to(outside)
    (root / "cat" / "in.jpg").symlink_to(root / "cat" / "a.jpg")
    (root / "cat" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "loop").symlink_to(root)
    os.mkfifo(root / "cat" / "pipe.jpg")
    skipped = []
    files = list(source_tree.walk(root, lambda reason, relative: skipped.append((reason, relative))))
    assert [(file.relative, file.path) for file in files] == [("cat/a.jpg", root / "cat" / "a.jpg"),
                                                              ("cat/in.jpg", root / "cat" / "a.jpg")]
    assert sorted(skipped) == [("hidden", ".hidden.jpg"), ("hidden", "__MACOSX"), ("hidden", "cat/.git"),
                               ("link", "cat/dangling.jpg"), ("link", "cat/out.jpg"), ("link", "loop"),
                               ("special_file", "cat/pipe.jpg")]


def test_entries_give_skipped_entries_in_their_sorted_place_with_exact_names(tmp_path):
    root = tmp_path / "root"
    touch(root / "b" / "photo.jpg")
    touch(root / "a.jpg")
    touch(root / "b" / ".DS_Store")
    touch(root / "__MACOSX" / "b" / "._photo.jpg")
    (root / "b" / "link.jpg").symlink_to(tmp_path)
    touch(root / "b" / "in.jpg")
    (root / "b" / "in_link.jpg").symlink_to(root / "b" / "in.jpg")
    for name in (b"caf\xe9.jpg", b"caf\\xe9.jpg"):  # the same readable text, different names
        touch(root / os.fsdecode(name))
    found = [(entry.relative, entry.relative_bytes, entry.skipped, entry.folder) for entry in source_tree.entries(root)]
    assert found == [("__MACOSX", b"__MACOSX", "hidden", True), ("a.jpg", b"a.jpg", "", False),
                     ("b/.DS_Store", b"b/.DS_Store", "hidden", False), ("b/in.jpg", b"b/in.jpg", "", False),
                     ("b/in_link.jpg", b"b/in_link.jpg", "", False), ("b/link.jpg", b"b/link.jpg", "link", False),
                     ("b/photo.jpg", b"b/photo.jpg", "", False), ("caf\\xe9.jpg", b"caf\\xe9.jpg", "", False),
                     ("caf\\xe9.jpg", b"caf\xe9.jpg", "", False)]
    assert [file.relative for file in source_tree.walk(root)] == [relative for relative, _, skipped, _ in found
                                                                   if not skipped]


def test_a_link_loop_is_skipped_as_a_link_and_the_walk_goes_on(tmp_path):
    """`ln -s self.png self.png` (and a two-link loop) aborted ingest and predict with a RuntimeError (issue 27.10)."""
    touch(tmp_path / "cat" / "a.png")
    os.symlink("self.png", tmp_path / "cat" / "self.png")
    os.symlink("pong.png", tmp_path / "cat" / "ping.png")
    os.symlink("ping.png", tmp_path / "cat" / "pong.png")
    skipped = []
    files = [file.relative for file in source_tree.walk(tmp_path, lambda *reason_path: skipped.append(reason_path),
                                                        follow_file_links=True)]
    assert files == ["cat/a.png"]
    assert skipped == [("link", "cat/ping.png"), ("link", "cat/pong.png"), ("link", "cat/self.png")]
