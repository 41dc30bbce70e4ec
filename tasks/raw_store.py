"""The raw store format: writes and reads data/raw/, the original bytes of every image used, in immutable tar shards.

Each shard is a plain tar file in the WebDataset layout: one member `<sha256>.<ext>` per image, in the order added,
with fixed headers (USTAR, mtime 0, owner 0), so the same images added in the same order give the same bytes. A
shard (`shard-NNNNNN.tar`, numbered on from the last) is written once under a temporary name, renamed into place
when it reaches its size bound, made read-only (DVC hard-links it into its cache: a write to it would change the
cache too), and never rewritten. The manifest records each image's shard, the offset of its bytes in it and their
length, so one `pread` returns them, with the member's header just before them: every read checks the bytes against
the sha256 that names the member (and the manifest), so a damaged shard fails naming itself instead of giving one
image's pixels under another's label.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from pathlib import Path
from typing import NamedTuple

SHARD_PATTERN = re.compile(r"shard-(?P<serial>\d{6})\.tar")
BLOCK = tarfile.BLOCKSIZE  # 512: a member's header, and the unit its data is padded to
END_OF_ARCHIVE = tarfile.RECORDSIZE  # at most: the end blocks, and the padding of the last record


class Location(NamedTuple):
    shard: str  # file name in the raw folder
    offset: int  # of the image's first byte
    bytes: int
    sha256: str = ""  # what the manifest expects there; empty: the member's own name is the only check


class DamagedShard(ValueError):
    """A shard that does not hold what its index says (shorter, or a member's bytes not matching its sha256)."""

    def __init__(self, folder: Path, shard: str, problem: str) -> None:
        self.folder, self.shard, self.problem = folder, shard, problem
        super().__init__(f"{folder / shard}: {problem}; the shard was changed or cut short after ingest wrote it (and "
                         "DVC's cache with it: they are hard links). Run ingest again (imgpipe run, or python -m "
                         "tasks.ingest): it rebuilds a damaged shard from the source files")

    def __reduce__(self) -> tuple[type, tuple[Path, str, str]]:  # raised in worker processes, pickled back
        return DamagedShard, (self.folder, self.shard, self.problem)


def shard_names(folder: Path) -> list[str]:
    """The finished shards in `folder`, in the order they were written."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder) if SHARD_PATTERN.fullmatch(entry.name))


_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tif"}


def extension_for(image_format: str) -> str:
    """The member extension for an image format as Pillow names it (JPEG -> jpg)."""
    return _EXTENSIONS.get(image_format, "bin")


def member_name(sha256: str, extension: str) -> str:
    """`<sha256>.<ext>` (the WebDataset key and type); the extension is the format's, lower case, no dot."""
    extension = extension.lower().lstrip(".") or "bin"
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not re.fullmatch(r"[a-z0-9]{1,8}", extension):
        raise ValueError(f"not a content key: {sha256!r}.{extension!r}")
    return f"{sha256}.{extension}"


class ShardWriter:
    """Adds images to new shards of at most about `shard_bytes` each in `folder` (a context manager).

    Shards are numbered on from the highest serial in the folder. A shard is renamed into place when full and on
    a clean exit; on an error its temporary file is removed, and shards already finished stay (the caller records
    what they hold only once all is written, so a shard no manifest names is garbage, found by the next run).
    """

    def __init__(self, folder: Path, shard_bytes: int) -> None:
        if shard_bytes < BLOCK * 4:
            raise ValueError(f"shard size must be at least {BLOCK * 4} bytes, got {shard_bytes}")
        self.folder = folder
        self.shard_bytes = shard_bytes
        self.written: list[str] = []
        names = shard_names(folder)
        self._serial = int(SHARD_PATTERN.fullmatch(names[-1])["serial"]) if names else 0
        self._temporary: Path | None = None
        self._archive: tarfile.TarFile | None = None
        self._handle: io.BufferedWriter | None = None
        self._pending: list[tuple[int, int]] = []  # (offset, bytes) of the members of the open shard

    def __enter__(self) -> ShardWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, error_type: object, *rest: object) -> None:
        if error_type is None:
            self._finish()
        else:
            self._abandon()

    def add(self, sha256: str, extension: str, data: bytes) -> Location:
        """Append one image and return where it will be once its shard is finished."""
        name = member_name(sha256, extension)
        if self._archive is not None and self._handle.tell() + BLOCK + len(data) + END_OF_ARCHIVE > self.shard_bytes:
            self._finish()
        if self._archive is None:
            self._open()
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
        offset = self._archive.offset + BLOCK  # a USTAR header of a short ASCII name is exactly one block
        self._archive.addfile(info, io.BytesIO(data))
        return Location(self._name, offset, len(data), sha256)

    @property
    def _name(self) -> str:
        return f"shard-{self._serial:06d}.tar"

    def _open(self) -> None:
        self._serial += 1
        self._temporary = self.folder / f".{self._name}.partial"
        self._handle = self._temporary.open("wb")
        self._archive = tarfile.open(fileobj=self._handle, mode="w", format=tarfile.USTAR_FORMAT)

    def _finish(self) -> None:
        if self._archive is None:
            return
        try:
            self._archive.close()  # writes the end-of-archive blocks; the file object stays ours
            self._handle.flush()
            os.fsync(self._handle.fileno())
            # read-only from now on: only write bits are removed (the umask decided who may read; never widen it)
            os.fchmod(self._handle.fileno(), os.fstat(self._handle.fileno()).st_mode & 0o7555)
            self._handle.close()
            os.replace(self._temporary, self.folder / self._name)
        except OSError:
            self._abandon()  # ingest says a full disk in plain words (tasks/ingest/stage.py)
            raise
        self.written.append(self._name)
        self._archive = self._handle = self._temporary = None

    def _abandon(self) -> None:
        try:
            if self._handle is not None:
                self._handle.close()  # on a full disk the close itself may fail (buffered bytes)
        except OSError:
            pass
        finally:
            if self._temporary is not None:
                self._temporary.unlink(missing_ok=True)
            self._archive = self._handle = self._temporary = None


def read(folder: Path, location: Location) -> bytes:
    """The bytes of one stored image (opens its shard for this one read; for many reads use Reader)."""
    with Reader(folder) as reader:
        return reader.read(location)


def location_of(row: object) -> Location:
    """The location of a manifest row (anything with shard, offset and bytes attributes, such as an itertuples row,
    and the sha256 expected there when it has one)."""
    return Location(str(row.shard), int(row.offset), int(row.bytes), str(getattr(row, "sha256", "")))


def end_of(locations: list[Location]) -> int:
    """The least size of a shard holding these members: the last one's bytes padded to a block, then the end blocks,
    padded to a whole record (as tarfile writes them; a shard may be longer, holding images no manifest uses)."""
    last = max(location.offset + -(-location.bytes // BLOCK) * BLOCK for location in locations)
    return -(-(last + 2 * BLOCK) // END_OF_ARCHIVE) * END_OF_ARCHIVE


class Reader:
    """Reads many stored images, keeping each shard open once (a context manager)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._descriptors: dict[str, int] = {}

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exception: object) -> None:
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()

    def read(self, location: Location) -> bytes:
        """The bytes of one image, checked against its member's name (and the manifest's sha256, when given)."""
        descriptor = self._descriptors.get(location.shard)
        if descriptor is None:
            descriptor = os.open(self.folder / location.shard, os.O_RDONLY | os.O_CLOEXEC)
            self._descriptors[location.shard] = descriptor
        if location.offset < BLOCK:
            raise ValueError(f"{self.folder / location.shard}: no member starts at offset {location.offset}; the "
                             "manifest is damaged: run ingest again")
        # the member's header block and its bytes, in one read
        block = os.pread(descriptor, BLOCK + location.bytes, location.offset - BLOCK)
        if len(block) != BLOCK + location.bytes:
            raise DamagedShard(self.folder, location.shard, f"shorter than the manifest says (a member at offset "
                                                            f"{location.offset}, {location.bytes} bytes)")
        return _checked(self.folder, location, block[:BLOCK], block[BLOCK:])


def _checked(folder: Path, location: Location, header: bytes, data: bytes) -> bytes:
    """`data` if its member header names it `<sha256>.<ext>` with its size and it hashes to that sha256."""
    try:
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.TarError:
        raise DamagedShard(folder, location.shard, f"no valid member header before offset {location.offset}") from None
    key = info.name.split(".", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{64}", key) or info.size != location.bytes:
        raise DamagedShard(folder, location.shard, f"the member before offset {location.offset} is not the image "
                                                   f"the manifest places there ({location.bytes} bytes)")
    if location.sha256 and key != location.sha256:
        raise DamagedShard(folder, location.shard, f"member {info.name} is where the manifest expects "
                                                   f"{location.sha256}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != key:
        raise DamagedShard(folder, location.shard, f"the bytes of member {info.name} have sha256 {actual}, not the "
                                                   "sha256 of its name")
    return data


def contents(folder: Path, shard: str) -> dict[str, Location]:
    """sha256 -> location of every image in one shard, read from its tar headers (for shards no manifest names)."""
    found = {}
    with tarfile.open(folder / shard, mode="r:", format=tarfile.USTAR_FORMAT) as archive:
        for member in archive:
            key = member.name.split(".", 1)[0]
            if member.isfile() and re.fullmatch(r"[0-9a-f]{64}", key):
                found[key] = Location(shard, member.offset_data, member.size, key)
    return found


def remove(folder: Path, names: list[str]) -> None:
    """Delete finished shards that nothing refers to any more (DVC's cache keeps the versions that named them)."""
    for name in names:
        if not SHARD_PATTERN.fullmatch(name):
            raise ValueError(f"{name}: not a raw shard; refusing to delete it")
        (folder / name).unlink(missing_ok=True)


def remove_temporary(folder: Path) -> None:
    """Delete shards a killed run left unfinished."""
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".shard-") and entry.name.endswith(".tar.partial"):
                os.unlink(entry.path)
