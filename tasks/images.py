"""The one place that opens and normalises an image: reads an image file, returns RGB pixels or a description."""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Formats Pillow may open, whatever a file's extension claims. A camera JPEG that carries extra preview
# frames opens through the JPEG plugin as format "MPO".
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Transparent pixels are composited on white, the background most viewers show them on.
ALPHA_BACKGROUND = (255, 255, 255)
# `pad` fills the margins with black.
PAD_COLOR = (0, 0, 0)

# What the pixels of decode_array depend on besides its arguments: raise it with any change that alters the pixels
# of some image (orientation, conversion, resize), so that results made with the old pixels are not reused (the
# processed store's decoded shards and prediction's earlier rows are keyed by it).
DECODE_VERSION = 1

ResizeMode = Literal["stretch", "crop", "pad"]  # the one list of resize policies; params and model cards use it
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)

_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


class ImageError(ValueError):
    """A file that cannot be used as an image; `reason` is a short code for reports.

    `detail` says what is wrong, not which setting to change: each caller knows its own setting (see `advice`).
    """

    def __init__(self, path: Path | str, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mode: str
    width: int  # after EXIF orientation
    height: int
    orientation: int


def has_image_extension(path: Path | str) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


@contextmanager
def _strict_pillow(path: Path | str, max_pixels: int) -> Iterator[None]:
    """While one file is opened and decoded: Pillow's bomb check at `max_pixels` with its warning raised as an
    error, and truncated data refused; the process-wide settings are restored afterwards (so decode in parallel
    with processes, as every caller does, not threads)."""
    previous = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except _BOMB_ERRORS as error:  # e.g. a GIF frame that grows the canvas while decoding
        raise ImageError(path, "too_many_pixels", str(error)) from None
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = previous


# The default limit on the size of an input file (ingest.max_file_bytes; prediction's limit): larger files are
# refused before they are read, so that one huge or sparse file cannot fill the memory.
MAX_FILE_BYTES = 1_000_000_000

# Errors of the machine rather than of one file: they stop a stage (nothing is quarantined for them).
MACHINE_ERRORS = frozenset({errno.ENOSPC, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EDQUOT,
                            errno.EROFS})


def read_file(path: Path | str, dir_fd: int | None = None, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """The bytes of one regular file: the one way imgpipe reads an input file (`path` relative to the open folder
    `dir_fd` when given, as os.open takes it).

    The file is opened without following a link at its name (O_NOFOLLOW) and without blocking on a FIFO
    (O_NONBLOCK), and read only after fstat says the open descriptor is a regular file of at most `max_bytes`
    (None: any size): a name swapped for a link or a FIFO after the tree was walked is refused, never followed or
    waited on, and a huge (or sparse) file is refused before it fills the memory. A file's own trouble (gone, not
    permitted, a link, a FIFO, too large) raises ImageError; trouble of the machine (disk full, I/O error, out of
    file handles: MACHINE_ERRORS) raises the OSError itself, for the caller to stop on.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in MACHINE_ERRORS:
            raise
        if error.errno == errno.ELOOP:
            raise ImageError(path, "link", "is a symbolic link; links are not followed") from None
        raise ImageError(path, "unreadable", f"cannot read file: {error.strerror or error}") from None
    try:
        facts = os.fstat(descriptor)
        if not stat.S_ISREG(facts.st_mode):
            raise ImageError(path, "special_file", "not a regular file (a FIFO, socket or device)")
        if max_bytes is not None and facts.st_size > max_bytes:
            raise too_large(path, facts.st_size, max_bytes)
        with open(descriptor, "rb", closefd=False) as handle:
            data = handle.read(facts.st_size + 1)  # one byte more than the size, to see whether it grew
            if len(data) > facts.st_size:  # it grew after the fstat: the rest, up to just over the limit
                data += handle.read(None if max_bytes is None else max(0, max_bytes + 1 - len(data)))
        if max_bytes is not None and len(data) > max_bytes:
            raise too_large(path, len(data), max_bytes)
        return data
    except OSError as error:
        if error.errno in MACHINE_ERRORS:
            raise
        raise ImageError(path, "unreadable", f"cannot read file: {error.strerror or error}") from None
    finally:
        os.close(descriptor)


def too_large(path: Path | str, size: int, max_bytes: int) -> ImageError:
    """The ImageError of a file over the size limit (reason too_large); callers add their setting with `advice`."""
    return ImageError(path, "too_large", f"{size} bytes, over the file size limit of {max_bytes} bytes")


def open_image(data: bytes, name: Path | str, max_pixels: int) -> Image.Image:
    """Open an image from its bytes lazily (header only), refusing empty data, other formats and images over the
    pixel limit. `name` is only for messages.

    Call it inside `_strict_pillow`, as `inspect_bytes` and `decode_array` do.
    """
    if not data:
        raise ImageError(name, "empty_file", "file is empty (0 bytes)")
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # checked below, with a clearer message
    try:
        image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except Image.UnidentifiedImageError:
        raise ImageError(name, "not_an_image", f"not a {', '.join(PILLOW_FORMATS)} image") from None
    except Exception as error:  # Pillow raises many types for a broken header
        raise ImageError(name, "corrupt", f"unreadable image header: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    width, height = image.size
    if width * height > max_pixels:  # from the header: nothing has been decoded yet
        image.close()
        raise ImageError(name, "too_many_pixels", f"{width}x{height} is over the pixel limit {max_pixels}")
    return image


def orientation_of(image: Image.Image) -> int:
    try:
        orientation = int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block is ignored, as viewers do
        return 1
    return orientation if orientation in range(1, 9) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: 16-bit and 32-bit scaled, alpha composited, palette resolved."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples scale down to 8 bits (65535 -> 255) rather than being clipped at 255.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0  # floats in [0, 1] are the usual convention
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha or (mode == "L" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _orient(image: Image.Image, orientation: int) -> Image.Image:
    for method in _TRANSPOSE_FOR_ORIENTATION.get(orientation, ()):
        image = image.transpose(method)
    return image


def _decode(image: Image.Image, path: Path | str, draft_size: int | None) -> tuple[Image.Image, int, tuple[int, int]]:
    """Fully decode an opened image into upright RGB; return it, the EXIF orientation and the full upright size."""
    try:
        image.seek(0)
        width, height = image.size  # before any draft scaling
        # Pillow's TIFF loader applies the EXIF orientation itself (and drops the tag): note it before loading.
        declared = orientation_of(image) if image.format == "TIFF" else None
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            image.draft(image.mode, (draft_size, draft_size))
        # Load before reading other formats' EXIF: a PNG's getexif() loads the pixels itself, and a failed load
        # that orientation_of() swallowed would leave a half-decoded image looking loaded.
        image.load()
        pending = orientation_of(image)
        upright = (height, width) if pending in _SWAPS_SIDES else (width, height)
        return _orient(_to_rgb(image), pending), declared or pending, upright
    except (ImageError, *_BOMB_ERRORS):
        raise
    except Exception as error:  # truncated or corrupt data only shows on a full decode
        raise ImageError(path, "corrupt", f"cannot decode image data: {error}") from None


def decode_rgb(image: Image.Image, path: Path | str, draft_size: int | None = None) -> Image.Image:
    """Fully decode an opened image into upright RGB (first frame of an animation).

    With `draft_size`, a JPEG is decoded at the smallest DCT scale whose sides are still >= draft_size,
    which is several times faster; every path that must agree pixel for pixel passes the same value.
    """
    return _decode(image, path, draft_size)[0]


def resize(image: Image.Image, image_size: int, mode: ResizeMode) -> Image.Image:
    """Resize to a square: `stretch` ignores the aspect ratio, `crop` cuts the centre, `pad` adds black margins."""
    size = (image_size, image_size)
    if mode == "stretch":
        return image.resize(size, Image.Resampling.BILINEAR)
    if mode == "crop":
        return ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    if mode == "pad":
        return ImageOps.pad(image, size, Image.Resampling.BILINEAR, color=PAD_COLOR)
    raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


def decode_array(data: bytes, name: Path | str, image_size: int, resize_mode: ResizeMode,
                 max_pixels: int) -> np.ndarray:
    """Decode, orient, convert and resize one image's bytes: the pixels training and prediction both see (uint8)."""
    with _strict_pillow(name, max_pixels), open_image(data, name, max_pixels) as image:
        rgb = decode_rgb(image, name, draft_size=image_size)
        return np.asarray(resize(rgb, image_size, resize_mode), dtype=np.uint8)


def load_rgb_array(path: Path, image_size: int, resize_mode: ResizeMode, max_pixels: int) -> np.ndarray:
    """decode_array of a file's bytes (read with read_file)."""
    return decode_array(read_file(path), path, image_size, resize_mode, max_pixels)


def inspect_bytes(data: bytes, name: Path | str, max_pixels: int, min_side: int,
                  draft_size: int | None = None) -> tuple[ImageInfo, Image.Image]:
    """Check one image by decoding all of its data; return its description and upright RGB pixels, or raise ImageError.

    With `draft_size` a JPEG's pixels come back DCT-scaled (see decode_rgb): every byte of the compressed data is
    still entropy-decoded, so truncation and corruption show just the same, only the inverse DCT is smaller (2x
    faster on 400x500 photos, more on larger ones). The width and height described are always the full image's.
    """
    with _strict_pillow(name, max_pixels), open_image(data, name, max_pixels) as image:
        source_format, source_mode = image.format or "", image.mode
        rgb, orientation, (width, height) = _decode(image, name, draft_size)
    if min(width, height) < min_side:
        raise ImageError(name, "too_small", f"{width}x{height} is under the minimum side {min_side}")
    return ImageInfo(source_format, source_mode, width, height, orientation), rgb


def inspect(path: Path, max_pixels: int, min_side: int,
            draft_size: int | None = None) -> tuple[ImageInfo, Image.Image]:
    """inspect_bytes of a file's bytes (read with read_file)."""
    return inspect_bytes(read_file(path), path, max_pixels, min_side, draft_size)


def advice(error: ImageError, settings: dict[str, str]) -> str:
    """The error's detail with what to change, for reasons that a setting decides (too_many_pixels, too_small).

    `settings` names the caller's setting per reason, e.g. {"too_many_pixels": "raise ingest.max_pixels"}.
    """
    action = settings.get(error.reason)
    return f"{error.detail}; {action} to accept it" if action else error.detail
