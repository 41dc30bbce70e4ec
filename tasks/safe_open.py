"""Opens the folders below one root, and the files in them, without following a link anywhere below the root;
makes missing folders on request. Reads (and on request creates) folders; reads files with images.read_file.

Each step is an `openat` of one name relative to the folder above (O_NOFOLLOW | O_DIRECTORY), so a folder swapped
for a link (to /elsewhere, say) after it was walked, or a link already sitting in a target folder, is refused with
its name, never followed. The root itself is the user's choice and may be a link. Ingest's reads and prediction's
reads and copies all go through here.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tasks import images

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderError(Exception):
    """A folder below the root that cannot be used: `reason` link, not_a_folder, name_too_long or unreadable."""

    def __init__(self, folder: Path, reason: str, detail: str) -> None:
        super().__init__(f"{folder}: {detail}")
        self.folder = folder
        self.reason = reason
        self.detail = detail


def split(relative: bytes) -> tuple[str, ...]:
    """The names of a relative path given as bytes (as os functions take them: surrogate escapes for non-UTF-8)."""
    names = tuple(os.fsdecode(name) for name in relative.split(b"/"))
    if any(name in ("", ".", "..") for name in names):
        raise ValueError(f"{relative!r} is not a plain relative path")
    return names


class Folders:
    """Open folders of `root` by their names below it, keeping the last chain open (sorted paths share most of it).

    Use as a context manager; `open(names)` returns a descriptor that stays valid until the next call.
    """

    def __init__(self, root: Path, create: bool = False) -> None:
        self.root = root
        self.create = create  # make missing folders (mode 0o777 less the umask)
        self._chain: list[tuple[str, int]] = []  # (name, descriptor) below the root, in order
        self._root_descriptor = -1

    def __enter__(self) -> Folders:
        try:
            if self.create:
                self.root.mkdir(parents=True, exist_ok=True)
            self._root_descriptor = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise _folder_error(self.root, error) from None
        return self

    def __exit__(self, *exception: object) -> None:
        self._close_from(0)
        os.close(self._root_descriptor)

    def _close_from(self, depth: int) -> None:
        while len(self._chain) > depth:
            os.close(self._chain.pop()[1])

    def open(self, names: tuple[str, ...]) -> int:
        """The descriptor of root/names[0]/names[1]/...; FolderError names the first step that is not a folder."""
        depth = 0
        while depth < min(len(names), len(self._chain)) and self._chain[depth][0] == names[depth]:
            depth += 1
        self._close_from(depth)
        for name in names[depth:]:
            parent = self._chain[-1][1] if self._chain else self._root_descriptor
            self._chain.append((name, self._open_step(parent, name)))
        return self._chain[-1][1] if self._chain else self._root_descriptor

    def _open_step(self, parent: int, name: str) -> int:
        folder = self.root.joinpath(*[step for step, _ in self._chain], name)
        for _ in range(2):  # a second try after making it (or after another process made it meanwhile)
            try:
                return os.open(name, _OPEN_FOLDER, dir_fd=parent)
            except FileNotFoundError:
                if not self.create:
                    raise FolderError(folder, "unreadable", "folder gone") from None
                try:
                    os.mkdir(name, dir_fd=parent)
                except FileExistsError:
                    pass
                except OSError as error:
                    raise _folder_error(folder, error) from None
            except OSError as error:
                if error.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise _not_a_folder(folder, parent, name) from None
                raise _folder_error(folder, error) from None
        raise FolderError(folder, "unreadable", "folder keeps disappearing")


def read_file(root: Path, relative: bytes, max_bytes: int | None = None) -> bytes:
    """images.read_file of root/relative, every folder below `root` opened without following a link.

    A folder on the way that is a link, a file or gone raises ImageError with the folder's reason (link,
    not_a_folder, unreadable, name_too_long) and names the folder; the machine's trouble raises the OSError.
    """
    *parents, name = split(relative)
    try:
        with Folders(root) as tree:
            return images.read_file(name, dir_fd=tree.open(tuple(parents)), max_bytes=max_bytes)
    except FolderError as error:
        raise images.ImageError(error.folder, error.reason, f"its folder {error.folder}: {error.detail}") from None


def _not_a_folder(folder: Path, parent: int, name: str) -> FolderError:
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return FolderError(folder, "link", "is a symbolic link; links are not followed")
    return FolderError(folder, "not_a_folder", "is a file, not a folder")


def _folder_error(folder: Path, error: OSError) -> Exception:
    """The machine's trouble (disk full, I/O error) as the OSError, for the caller to stop on; else a FolderError."""
    if error.errno in images.MACHINE_ERRORS:
        return OSError(error.errno, error.strerror, str(folder))
    if error.errno == errno.ENAMETOOLONG:
        return FolderError(folder, "name_too_long", "name too long for the file system")
    return FolderError(folder, "unreadable", f"cannot open folder: {error.strerror or error}")
