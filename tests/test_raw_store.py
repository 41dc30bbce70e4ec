"""The raw store: every read checked against the member's sha256; finished shards read-only (umask respected)."""

import errno
import hashlib
import io
import os
import pickle
import stat
import tarfile
from pathlib import Path

import pytest

from tasks import raw_store, stored_images
from tests.conftest import make_image


def _png(color: tuple[int, int, int], tmp_path, name: str) -> bytes:
    """A small image's file bytes (BMP: uncompressed, so every image of one size has the same length)."""
    buffer = io.BytesIO()
    make_image(color, seed=sum(color)).save(buffer, "BMP")
    return buffer.getvalue()


def _store(folder, payloads: list[bytes]) -> list[raw_store.Location]:
    with raw_store.ShardWriter(folder, 1 << 20) as writer:
        return [writer.add(hashlib.sha256(data).hexdigest(), "png", data) for data in payloads]


def _swap_payloads(shard) -> None:
    """Write the shard anew with the first two members' bytes swapped under their original names (same sizes)."""
    with tarfile.open(shard) as archive:
        members = [(member, archive.extractfile(member).read()) for member in archive]
    (first, first_data), (second, second_data) = members[:2]
    assert len(first_data) == len(second_data)
    swapped = [(first, second_data), (second, first_data), *members[2:]]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for member, data in swapped:
            archive.addfile(member, io.BytesIO(data))
    replacement = shard.with_name("swapped.tmp")
    replacement.write_bytes(buffer.getvalue())
    os.replace(replacement, shard)


def test_a_shard_with_two_members_payloads_swapped_fails_naming_the_shard_and_the_member(tmp_path):
    raw = tmp_path / "raw"
    payloads = [_png((200, 10, 10), tmp_path, "red.png"), _png((10, 10, 200), tmp_path, "blue.png")]
    assert len(payloads[0]) == len(payloads[1])  # same size: the swap keeps every offset
    locations = _store(raw, payloads)
    with raw_store.Reader(raw) as reader:
        assert [reader.read(location) for location in locations] == payloads
    shard = raw / locations[0].shard

    _swap_payloads(shard)

    for location in locations:  # with the manifest's sha256, and from the member's own name alone
        for checked in (location, location._replace(sha256="")):
            with pytest.raises(raw_store.DamagedShard) as caught:
                raw_store.read(raw, checked)
            message = str(caught.value)
            assert str(shard) in message and f"{location.sha256}.png" in message
            assert "run ingest again" in message.lower()


def test_the_decoder_names_the_image_and_its_error_survives_a_worker_process(tmp_path):
    raw = tmp_path / "raw"
    payloads = [_png((200, 10, 10), tmp_path, "red.png"), _png((10, 10, 200), tmp_path, "blue.png")]
    locations = _store(raw, payloads)
    decoder = stored_images.Decoder(raw, 8, "stretch", 10**6)
    assert decoder(("red/a.png", locations[0])).shape == (8, 8, 3)

    _swap_payloads(raw / locations[0].shard)

    with pytest.raises(raw_store.DamagedShard) as caught:
        decoder(("red/a.png", locations[0]))
    copy = pickle.loads(pickle.dumps(caught.value))  # the pool sends it back from a worker process
    assert str(copy) == str(caught.value) and "red/a.png" in str(copy) and locations[0].shard in str(copy)


def test_a_member_moved_where_the_manifest_expects_another_is_refused(tmp_path):
    raw = tmp_path / "raw"
    payloads = [_png((200, 10, 10), tmp_path, "red.png"), _png((10, 10, 200), tmp_path, "blue.png")]
    first, second = _store(raw, payloads)
    wrong = first._replace(sha256=second.sha256)  # a self-consistent member, not the one the manifest names
    with pytest.raises(raw_store.DamagedShard, match=f"member {first.sha256}.png is where the manifest expects"):
        raw_store.read(raw, wrong)


def test_a_short_shard_fails_naming_it(tmp_path):
    raw = tmp_path / "raw"
    location, = _store(raw, [_png((200, 10, 10), tmp_path, "red.png")])
    shard = raw / location.shard
    os.chmod(shard, 0o644)
    os.truncate(shard, location.offset + 10)
    with pytest.raises(raw_store.DamagedShard, match=f"{shard}: shorter than the manifest says"):
        raw_store.read(raw, location)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_finished_shards_are_read_only_and_no_more_readable_than_the_umask_allows(tmp_path, umask):
    before = os.umask(umask)
    try:
        location, = _store(tmp_path / "raw", [_png((200, 10, 10), tmp_path, "red.png")])
    finally:
        os.umask(before)
    mode = stat.S_IMODE(os.stat(tmp_path / "raw" / location.shard).st_mode)
    assert mode == 0o444 & ~umask


def test_the_least_size_of_a_shard_is_where_tarfile_ends_it(tmp_path):
    raw = tmp_path / "raw"
    payloads = [_png((200, 10, 10), tmp_path, "red.png"), b"x" * 20000, _png((10, 10, 200), tmp_path, "blue.png")]
    locations = _store(raw, payloads)
    assert raw_store.end_of(locations) == os.path.getsize(raw / locations[0].shard)
    assert raw_store.end_of(locations[:2]) <= os.path.getsize(raw / locations[0].shard)


class _FullDisk(io.RawIOBase):
    """A file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        self.position += len(data)
        return len(data)


def test_a_full_disk_leaves_no_partial_shard_even_when_closing_fails(tmp_path, monkeypatch):
    real_open = Path.open

    def open_full(self, mode="r", *args, **kwargs):
        if self.name.endswith(".partial"):
            real_open(self, mode).close()  # the temporary file exists, as on a real disk
            # buffered: the bytes fail only when flushed, as the shard is finished, and again when it is closed
            return io.BufferedWriter(_FullDisk(room=0), buffer_size=1 << 20)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_full)
    with pytest.raises(OSError, match="No space left on device"):
        with raw_store.ShardWriter(tmp_path, 1 << 20) as writer:
            writer.add("a" * 64, ".png", b"x" * 4000)
    assert list(tmp_path.iterdir()) == []
