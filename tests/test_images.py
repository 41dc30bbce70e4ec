"""tasks/images.py: every normalisation case, the format restriction, the pixel limit and broken data."""

import errno
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tasks import images

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
LIMIT = 40_000_000


def rgb_of(path: Path, **keywords) -> np.ndarray:
    info, rgb = images.inspect(path, LIMIT, 1, **keywords)
    return np.asarray(rgb)


def refused(path: Path, max_pixels: int = LIMIT, min_side: int = 1) -> images.ImageError:
    with pytest.raises(images.ImageError) as caught:
        images.inspect(path, max_pixels, min_side)
    assert str(path) in str(caught.value)  # the message names the file
    return caught.value


def marked_image(width: int = 40, height: int = 20) -> Image.Image:
    """Black, with a red block in the top-left corner: where it ends up shows how the image was turned."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:6, :6] = RED
    return Image.fromarray(pixels)


def corner_colours(rgb: np.ndarray) -> dict[str, np.ndarray]:
    return {"top_left": rgb[2, 2], "top_right": rgb[2, -3], "bottom_left": rgb[-3, 2], "bottom_right": rgb[-3, -3]}


# EXIF orientation -> (where the top-left corner lands, whether width and height swap)
ORIENTATIONS = {1: ("top_left", False), 2: ("top_right", False), 3: ("bottom_right", False),
                4: ("bottom_left", False), 5: ("top_left", True), 6: ("top_right", True),
                7: ("bottom_right", True), 8: ("bottom_left", True)}
FORMATS = {"png": ("PNG", {}), "jpg": ("JPEG", {"quality": 95}), "webp": ("WEBP", {"lossless": True}),
           "tif": ("TIFF", {})}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_exif_orientation_is_applied_once(tmp_path, suffix, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    name, options = FORMATS[suffix]
    path = tmp_path / f"turned.{suffix}"
    marked_image().save(path, format=name, exif=exif, **options)

    info, rgb = images.inspect(path, LIMIT, 1)
    pixels = np.asarray(rgb)
    corner, swaps = ORIENTATIONS[orientation]
    assert pixels.shape == ((40, 20, 3) if swaps else (20, 40, 3))
    assert (info.width, info.height, info.orientation) == (pixels.shape[1], pixels.shape[0], orientation)
    for place, colour in corner_colours(pixels).items():
        expected = RED if place == corner else (0, 0, 0)
        np.testing.assert_allclose(colour, expected, atol=12, err_msg=place)


def test_orientation_is_the_same_when_a_jpeg_is_decoded_at_draft_scale(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    marked_image(400, 200).resize((400, 200)).save(path, exif=exif, quality=95)
    info, rgb = images.inspect(path, LIMIT, 1, draft_size=64)
    assert (info.width, info.height) == (200, 400)  # the full image's sides, not the draft's
    assert rgb.size[0] < rgb.size[1] and rgb.size[0] < 200
    pixels = np.asarray(rgb)
    np.testing.assert_allclose(pixels[1, -2], RED, atol=40)
    np.testing.assert_allclose(pixels[1, 1], (0, 0, 0), atol=40)


def test_palette_image_gives_its_palette_colours(tmp_path):
    palette_image = Image.new("P", (10, 10))
    palette_image.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 - 3) * 3)
    palette_image.paste(1, (0, 0, 5, 10))
    palette_image.paste(2, (5, 0, 10, 10))
    palette_image.save(tmp_path / "palette.png")
    for name in ("palette.png", "palette.gif", "palette.bmp"):
        if name != "palette.png":
            palette_image.save(tmp_path / name)
        pixels = rgb_of(tmp_path / name)
        assert tuple(pixels[0, 0]) == GREEN and tuple(pixels[0, 9]) == BLUE, name


def test_palette_transparency_is_composited_on_the_background(tmp_path):
    palette_image = Image.new("P", (10, 10))
    palette_image.putpalette([*RED, *GREEN] + [0] * 254 * 3)
    palette_image.paste(1, (5, 0, 10, 10))
    palette_image.save(tmp_path / "transparent.png", transparency=0)  # index 0 (red) is see-through
    palette_image.save(tmp_path / "transparent.gif", transparency=0)
    for name in ("transparent.png", "transparent.gif"):
        pixels = rgb_of(tmp_path / name)
        assert tuple(pixels[0, 0]) == images.ALPHA_BACKGROUND, name
        assert tuple(pixels[0, 9]) == GREEN, name


def test_grayscale_becomes_equal_rgb_channels(tmp_path):
    ramp = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (10, 1))
    Image.fromarray(ramp, "L").save(tmp_path / "gray.png")
    Image.fromarray(ramp > 100).save(tmp_path / "bilevel.tif")
    pixels = rgb_of(tmp_path / "gray.png")
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 10, 3)
    np.testing.assert_array_equal(pixels, np.stack([ramp] * 3, axis=-1))
    bilevel = rgb_of(tmp_path / "bilevel.tif")
    assert tuple(bilevel[0, 0]) == (0, 0, 0) and tuple(bilevel[0, 9]) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_the_white_background(tmp_path, mode):
    assert images.ALPHA_BACKGROUND == (255, 255, 255)
    pixels = np.zeros((10, 30, 4), np.uint8)
    pixels[:, :10] = (200, 0, 0, 0)  # fully transparent: the background shows
    pixels[:, 10:20] = (200, 0, 0, 128)  # half transparent: half way to the background
    pixels[:, 20:] = (200, 0, 0, 255)  # opaque: the colour itself
    image = Image.fromarray(pixels, "RGBA")
    if mode == "LA":
        image = Image.merge("LA", (Image.new("L", image.size, 200), image.getchannel("A")))
    image.save(tmp_path / "alpha.png")
    rgb = rgb_of(tmp_path / "alpha.png")
    opaque = (200, 0, 0) if mode == "RGBA" else (200, 200, 200)
    half = tuple(round((value * 128 + background * 127) / 255)
                 for value, background in zip(opaque, images.ALPHA_BACKGROUND))
    assert tuple(rgb[5, 5]) == images.ALPHA_BACKGROUND
    np.testing.assert_allclose(rgb[5, 15], half, atol=1)
    assert tuple(rgb[5, 25]) == opaque


@pytest.mark.parametrize("suffix", ["jpg", "tif"])
def test_cmyk_is_converted(tmp_path, suffix):
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 16))  # pure black
    cmyk.save(tmp_path / f"cmyk.{suffix}")
    info, rgb = images.inspect(tmp_path / f"cmyk.{suffix}", LIMIT, 1)
    pixels = np.asarray(rgb)
    assert info.mode == "CMYK" and rgb.mode == "RGB"
    np.testing.assert_allclose(pixels[8, 2], (0, 255, 255), atol=8)
    np.testing.assert_allclose(pixels[8, 13], (0, 0, 0), atol=8)


@pytest.mark.parametrize("suffix, dtype", [("png", "<u2"), ("tif", "<u2"), ("tif", ">u2")])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, suffix, dtype):
    values = np.array([[0, 257, 32768, 65535]], dtype=dtype).repeat(4, axis=0)
    path = tmp_path / f"deep.{suffix}"
    Image.fromarray(values).save(path)
    info, rgb = images.inspect(path, LIMIT, 1)
    assert info.mode.startswith("I")
    assert [tuple(pixel) for pixel in np.asarray(rgb)[0]] == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("suffix", ["gif", "webp", "png"])
def test_an_animation_gives_its_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (12, 12), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / f"animated.{suffix}"
    options = {"lossless": True} if suffix == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    with Image.open(path) as opened:
        assert opened.n_frames == 3
    pixels = rgb_of(path)
    np.testing.assert_allclose(pixels[6, 6], RED, atol=3)
    np.testing.assert_allclose(
        images.load_rgb_array(path, 8, "stretch", LIMIT)[4, 4], RED, atol=3)


@pytest.mark.parametrize("mode, expected_middle", [("stretch", None), ("crop", None), ("pad", images.PAD_COLOR)])
def test_resize_gives_a_square_of_the_requested_side(tmp_path, mode, expected_middle):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = RED  # left quarter red, right quarter blue: crop cuts both off, stretch and pad keep them
    pixels[:, 30:] = BLUE
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    square = images.load_rgb_array(path, 16, mode, LIMIT)
    assert square.shape == (16, 16, 3) and square.dtype == np.uint8
    if mode == "crop":
        assert not (square == RED).all(axis=-1).any() and not (square == BLUE).all(axis=-1).any()
    else:
        np.testing.assert_allclose(square[8, 0], RED, atol=2)
        np.testing.assert_allclose(square[8, -1], BLUE, atol=2)
    if mode == "pad":  # 40x20 -> 16x8 image, 4 rows of margin above and below
        assert tuple(square[0, 8]) == expected_middle and tuple(square[-1, 8]) == expected_middle
        np.testing.assert_allclose(square[8, 1], RED, atol=2)
    with pytest.raises(ValueError, match="resize mode"):
        images.resize(Image.new("RGB", (4, 4)), 2, "squash")


def test_a_png_named_jpg_is_used_as_what_it_is(tmp_path):
    Image.new("RGB", (10, 10), GREEN).save(tmp_path / "really_a_png.jpg", format="PNG")
    info, rgb = images.inspect(tmp_path / "really_a_png.jpg", LIMIT, 1)
    assert info.format == "PNG"
    assert tuple(np.asarray(rgb)[5, 5]) == GREEN


@pytest.mark.parametrize("pillow_format", ["PCX", "ICO", "TGA", "PPM"])
def test_a_format_outside_the_list_is_refused_whatever_its_name(tmp_path, pillow_format):
    path = tmp_path / "disguised.png"
    Image.new("RGB", (16, 16), RED).save(path, format=pillow_format)
    with Image.open(path) as opened:  # Pillow itself would open it
        assert opened.format == pillow_format
    error = refused(path)
    assert error.reason == "not_an_image"


def patched_png_header(path: Path, width: int, height: int) -> None:
    """Rewrite a PNG's IHDR to claim another size (with a valid CRC), keeping its tiny pixel data."""
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_a_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    patched_png_header(path, 100_000, 100_000)  # 10^10 pixels: 30 GB as RGB

    def no_decoding(*arguments, **keywords):
        raise AssertionError("the pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    error = refused(path)
    assert error.reason == "too_many_pixels"
    assert "100000x100000 is over the pixel limit" in error.detail
    with pytest.raises(images.ImageError, match="pixel limit|decompression bomb"):
        images.load_rgb_array(path, 32, "stretch", LIMIT)


def test_a_real_image_over_a_lowered_limit_is_refused_and_one_under_it_is_not(tmp_path):
    path = tmp_path / "large.png"
    Image.new("RGB", (1000, 1000), RED).save(path)
    error = refused(path, max_pixels=700_000)
    assert error.reason == "too_many_pixels"
    assert error.detail == "1000x1000 is over the pixel limit 700000"  # the caller adds which setting to change
    assert (images.advice(error, {"too_many_pixels": "raise ingest.max_pixels"})
            == "1000x1000 is over the pixel limit 700000; raise ingest.max_pixels to accept it")
    info, _ = images.inspect(path, 1_000_000, 1)
    assert (info.width, info.height) == (1000, 1000)


def test_pillows_bomb_warning_is_an_error_and_the_global_limit_is_restored(tmp_path):
    default_limit, default_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail the test
        with pytest.raises(images.ImageError) as caught, images._strict_pillow(tmp_path / "x.gif", 100):
            # 144 pixels: over the limit, under twice it, where Pillow only warns (here: cropping; in a
            # real file: a GIF frame that grows the canvas)
            Image.new("L", (20, 20)).crop((0, 0, 12, 12))
    assert caught.value.reason == "too_many_pixels"
    assert "decompression bomb" in caught.value.detail  # the message of Pillow's DecompressionBombWarning
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (default_limit, default_truncated)
    path = tmp_path / "large.png"
    Image.new("RGB", (1000, 1000), RED).save(path)
    refused(path, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == default_limit  # restored after a refusal too
    with Image.open(path) as opened:  # so other code in the process keeps Pillow's default limit
        opened.load()


def test_too_small_and_empty_files_are_refused(tmp_path):
    Image.new("RGB", (40, 5), RED).save(tmp_path / "strip.png")
    error = refused(tmp_path / "strip.png", min_side=8)
    assert error.reason == "too_small" and "40x5" in error.detail
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert refused(tmp_path / "empty.jpg").reason == "empty_file"
    assert refused(tmp_path / "missing.jpg").reason == "unreadable"


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "gif", "tif", "bmp"])
def test_truncated_data_is_caught_by_the_full_decode(tmp_path, suffix):
    generator = np.random.default_rng(0)
    noise = Image.fromarray(generator.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    whole = tmp_path / f"whole.{suffix}"
    noise.save(whole)
    cut = tmp_path / f"cut.{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    images.inspect(whole, LIMIT, 1)
    assert refused(cut).reason == "corrupt"
    with pytest.raises(images.ImageError) as caught:
        images.inspect(cut, LIMIT, 1, draft_size=16)  # the draft-scale decode reads all the data too
    assert caught.value.reason == "corrupt"


def test_a_truncated_jpeg_that_image_verify_passes_is_still_refused(tmp_path):
    generator = np.random.default_rng(1)
    Image.fromarray(generator.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with Image.open(tmp_path / "cut.jpg") as opened:
        opened.verify()  # no complaint
    assert refused(tmp_path / "cut.jpg").reason == "corrupt"


def test_corrupt_png_data_is_refused(tmp_path):
    generator = np.random.default_rng(2)
    Image.fromarray(generator.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.png")
    data = bytearray((tmp_path / "whole.png").read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # zeroes inside the IDAT stream (CRC now wrong)
    (tmp_path / "zeroed.png").write_bytes(bytes(data))
    assert refused(tmp_path / "zeroed.png").reason == "corrupt"


def test_truncated_images_are_refused_even_when_pillow_was_told_to_accept_them(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64), RED).save(tmp_path / "whole.png", compress_level=0)
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might
    assert refused(tmp_path / "cut.png").reason == "corrupt"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


@pytest.mark.parametrize("content", [b"hello, I am text\n", bytes(range(256)) * 4])
def test_non_images_with_image_names_are_refused(tmp_path, content):
    (tmp_path / "fake.jpg").write_bytes(content)
    assert refused(tmp_path / "fake.jpg").reason == "not_an_image"


def test_training_and_prediction_see_the_same_pixels_for_every_format(tmp_path):
    """load_rgb_array is the one decode; it is deterministic, and draft scale keeps JPEG close to a full decode."""
    generator = np.random.default_rng(3)
    photo = Image.fromarray(np.kron(generator.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.ones((32, 32, 1),
                                                                                                    np.uint8)))
    for suffix in ("jpg", "png", "webp", "bmp", "gif", "tif"):
        photo.save(tmp_path / f"photo.{suffix}")
        first = images.load_rgb_array(tmp_path / f"photo.{suffix}", 32, "stretch", LIMIT)
        second = images.load_rgb_array(tmp_path / f"photo.{suffix}", 32, "stretch", LIMIT)
        np.testing.assert_array_equal(first, second)
        full = np.asarray(images.resize(images.inspect(tmp_path / f"photo.{suffix}", LIMIT, 1)[1], 32, "stretch"))
        assert np.abs(first.astype(int) - full.astype(int)).mean() < 12, suffix


def test_read_file_refuses_a_link_or_a_fifo_at_the_name_without_following_or_waiting(tmp_path):
    real = tmp_path / "real.png"
    Image.new("RGB", (4, 4), RED).save(real)
    assert images.read_file(real) == real.read_bytes()
    (tmp_path / "link.png").symlink_to(real)
    with pytest.raises(images.ImageError) as link:
        images.read_file(tmp_path / "link.png")
    assert link.value.reason == "link"
    os.mkfifo(tmp_path / "pipe.png")  # nobody writes to it: a blocking open would hang here
    with pytest.raises(images.ImageError) as fifo:
        images.read_file(tmp_path / "pipe.png")
    assert fifo.value.reason == "special_file"
    with pytest.raises(images.ImageError) as gone:
        images.read_file(tmp_path / "gone.png")
    assert gone.value.reason == "unreadable" and "No such file" in gone.value.detail


def test_read_file_lets_errors_of_the_machine_through(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4), RED).save(path)

    def out_of_handles(*arguments, **keywords):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(images.os, "open", out_of_handles)
    with pytest.raises(OSError) as error:
        images.load_rgb_array(path, 4, "stretch", 10_000)
    assert error.value.errno == errno.EMFILE and not isinstance(error.value, images.ImageError)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A 12 GB sparse file was read whole into memory (MemoryError); fstat of the open file decides first (27.10)."""
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as handle:
        handle.truncate(50_000)  # sparse: no data written
    reads = []
    real_open = open

    def watched_open(file, *arguments, **keywords):
        handle = real_open(file, *arguments, **keywords)
        reads.append(file)
        return handle

    monkeypatch.setattr("builtins.open", watched_open)
    with pytest.raises(images.ImageError) as refused:
        images.read_file(sparse, max_bytes=10_000)
    monkeypatch.undo()
    assert refused.value.reason == "too_large" and "50000 bytes" in refused.value.detail
    assert reads == []  # refused on the descriptor's size, never opened for reading
    assert images.read_file(sparse, max_bytes=50_000) == bytes(50_000)  # at the limit: read
    assert len(images.read_file(sparse)) == 50_000  # the default limit, images.MAX_FILE_BYTES, is generous
