"""The image loader's bad-input matrix and colour-mode conversions, each on a file the test generates."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import encode
from mpoxscan.errors import ImageError, UnsupportedImageError
from mpoxscan.images import load_image, strip_metadata

RED = np.array([255, 0, 0])


def assert_one_line_error(source, match: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        load_image(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    return info.value


def close_to(pixel, colour, tol=25) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tol))


# ---------------------------------------------------------------- bad input


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    err = assert_one_line_error(path, "empty file")
    assert str(path) in str(err)
    assert_one_line_error(b"", "empty file")


def test_truncated_jpeg(tmp_path: Path):
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    data = encode(noise, "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(path, "truncated or corrupt")


def test_truncated_png(tmp_path: Path, photo):
    data = encode(photo, "PNG")
    assert_one_line_error(data[: len(data) - 40], "truncated or corrupt|corrupt image header")


def test_random_bytes_named_jpg(tmp_path: Path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line_error(path, "not an image")


def test_text_file(tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a photo\n" * 20)
    assert_one_line_error(path, "not an image")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_decompression_bomb_png_is_refused_before_decoding(tmp_path: Path):
    # A valid 30000 x 30000 1-bit PNG: ~110 kB on disk, 900 million pixels once decoded.
    side = 30000
    row = b"\x00" + b"\x00" * (side // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    assert_one_line_error(path, "too large")
    assert time.perf_counter() - start < 5  # refused from the header, not after decoding 900 MB


def _strip_png(width: int, height: int, pixels: bool = True) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` (the 50000 x 1 one is 225 bytes); ``pixels=False``: the header
    with garbage for image data (only a loader that decodes would notice)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * height, 9) if pixels else b"\x00" * 16
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, reason", [
    (50000, 1, "too small to be a photo"), (1, 50000, "too small to be a photo"), (5000, 1, "too small to be a photo"),
    (15, 15, r"too small to be a photo \(15x15; short side under 16 px\)"),
    (2000, 20, r"extreme aspect ratio \(2000x20, 100.0:1; limit 8:1\)"), (16, 129, "extreme aspect ratio"),
    (20, 4000, "extreme aspect ratio"),
])
def test_strips_and_slivers_are_refused_from_the_header(width, height, reason):
    """Issue 14: a 225-byte 50000 x 1 PNG cost the server 55 s and 10 GB once screening scaled its short side up to
    224 px. No photo of a lesion is under 16 px high or over 8:1 (panoramas are 4-6:1): refused before decoding."""
    from mpoxscan.errors import ImageShapeError

    data = _strip_png(width, height)
    err = assert_one_line_error(data, reason, name="strip.png")
    assert isinstance(err, ImageShapeError) and err.size == (width, height)
    assert str(err).startswith("strip.png: ")
    # The same header with garbage for pixels: refused for its shape all the same, so nothing was decoded.
    assert_one_line_error(_strip_png(width, height, pixels=False), reason)


def test_photo_shapes_at_the_limits_load():
    for width, height in [(16, 128), (128, 16), (600, 100), (16, 16)]:  # 8:1, a 6:1 panorama, the smallest square
        assert load_image(_strip_png(width, height)).size == (width, height)
    # Callers that know better may move the limits.
    assert load_image(_strip_png(5000, 1), min_short_side=1, max_aspect=5000).size == (5000, 1)
    assert_one_line_error(_strip_png(600, 100), "extreme aspect ratio", max_aspect=4)


def test_configurable_pixel_and_byte_limits(photo):
    data = encode(photo, "PNG")
    assert_one_line_error(data, r"too large \(64x48 = 3,072 pixels; limit 1,000\)", max_pixels=1000)
    assert_one_line_error(data, "file too large", max_bytes=100)
    assert load_image(data, max_pixels=64 * 48).size == (64, 48)


def test_animated_gif_is_refused_but_a_still_gif_loads(photo):
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert_one_line_error(buf.getvalue(), r"animated GIF \(more than one frame\)")
    assert load_image(encode(photo, "GIF")).mode == "RGB"


def test_animated_png_is_refused(photo):
    buf = io.BytesIO()
    photo.save(buf, format="PNG", save_all=True, append_images=[photo.rotate(90)], duration=100)
    assert_one_line_error(buf.getvalue(), "animated PNG")


def test_unsupported_format_is_named(photo):
    assert_one_line_error(encode(photo, "ICO"), "unsupported image format ICO")


def test_unsupported_content_has_its_own_error_class(photo):
    """Callers (the service's 415) tell unsupported content by the class, not by the message's words; a broken photo
    in a supported format is another ImageError."""
    for data in (encode(photo, "ICO"), b"%PDF-1.4 not a photo" * 10):
        with pytest.raises(UnsupportedImageError):
            load_image(data)
    with pytest.raises(ImageError) as broken:
        load_image(encode(photo, "JPEG")[:200])
    assert not isinstance(broken.value, UnsupportedImageError)


def test_missing_file_and_directory(tmp_path: Path):
    assert_one_line_error(tmp_path / "nope.jpg", "no such file")
    assert_one_line_error(tmp_path, "is a directory")


# ---------------------------------------------------------------- colour modes and orientation


def test_cmyk_jpeg_becomes_rgb(photo):
    img = load_image(encode(photo.convert("CMYK"), "JPEG", quality=95))
    assert img.mode == "RGB" and img.size == photo.size
    assert close_to(img.getpixel((3, 3)), RED, tol=40)


def test_16bit_png_is_scaled_not_clipped():
    arr = np.tile(np.array([0, 257 * 64, 32896, 65535], np.uint16), (16, 4))  # 16 x 16: the loader's smallest
    data = encode(Image.fromarray(arr), "PNG")  # uint16 -> mode I;16
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = load_image(data)
    assert img.mode == "RGB"
    assert [img.getpixel((x, 0))[0] for x in range(4)] == [0, 64, 128, 255]


def test_palette_png_with_transparency_is_composited_on_white():
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (8, 0, 16, 16))  # right half blue, left half red ...
    data = encode(pal, "PNG", transparency=0)  # ... and red is the transparent index
    img = load_image(data)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((12, 8)) == (0, 0, 255)


def test_rgba_half_transparent_is_blended_with_white():
    img = load_image(encode(Image.new("RGBA", (16, 16), (0, 0, 0, 128)), "PNG"))
    assert close_to(img.getpixel((0, 0)), (127, 127, 127), tol=2)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I", "F"])
def test_other_modes_become_rgb(mode, photo):
    src = photo.convert("L").convert(mode)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    img = load_image(encode(src, fmt))
    assert img.mode == "RGB" and img.size == photo.size


def test_exif_rotated_jpeg_comes_out_upright(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display after rotating 90 degrees clockwise
    img = load_image(encode(photo, "JPEG", quality=95, exif=exif.tobytes()))
    assert img.size == (48, 64) and img.info == {"source_size": (48, 64), "source_format": "JPEG"}  # and no EXIF carried along
    # The red corner of the stored top-left is at the top-right once upright.
    assert close_to(img.getpixel((img.width - 3, 3)), RED, tol=40)
    assert close_to(img.getpixel((3, 3)), (0, 0, 0), tol=60)


def test_heic_photo_loads(tmp_path: Path, photo):
    import pillow_heif

    path = tmp_path / "iphone.heic"
    pillow_heif.from_pillow(photo.resize((128, 96))).save(path, quality=95)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (128, 96)
    assert close_to(img.getpixel((8, 8)), RED, tol=40)


def test_heic_without_pillow_heif_names_the_missing_package(tmp_path: Path, photo, monkeypatch):
    """Where pillow-heif is missing (the GPU machine), a HEIC photo is refused naming it, not as 'not an image'."""
    import pillow_heif

    from mpoxscan import images

    path = tmp_path / "iphone.heic"
    pillow_heif.from_pillow(photo.resize((128, 96))).save(path, quality=95)
    monkeypatch.setattr(images, "_register_heif", lambda: False)
    with pytest.raises(ImageError, match="pillow-heif .* not installed"):
        load_image(path)
    assert load_image(encode(photo, "JPEG")).mode == "RGB"  # other formats do not need it


def test_large_jpeg_decodes_at_reduced_scale_when_allowed():
    big = Image.new("RGB", (2000, 1600), (10, 120, 200))
    data = encode(big, "JPEG")
    assert load_image(data).size == (2000, 1600)
    small = load_image(data, min_side=224)
    assert min(small.size) >= 224 and small.size[0] < 2000
    assert small.info["source_size"] == (2000, 1600)
    assert close_to(small.getpixel((100, 100)), (10, 120, 200), tol=6)


def test_bytes_and_path_give_the_same_pixels(tmp_path: Path, photo):
    path = tmp_path / "p.png"
    photo.save(path)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(path.read_bytes())))
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(photo))


# ---------------------------------------------------------------- metadata stripping


def _gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down
    exif[0x010F] = "PhoneMaker"  # camera make
    exif[0x0132] = "2026:11:26 10:00:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (45.0, 27.0, 51.6)
    gps[3], gps[4] = "E", (9.0, 11.0, 24.0)
    return exif


def test_strip_metadata_removes_gps_camera_and_time(photo):
    original = encode(photo, "JPEG", quality=95, exif=_gps_exif().tobytes())
    with Image.open(io.BytesIO(original)) as before:
        assert before.getexif().get_ifd(0x8825)  # the fixture really carries GPS
    clean = strip_metadata(original)
    with Image.open(io.BytesIO(clean)) as after:
        assert after.format == "JPEG"
        assert len(after.getexif()) == 0
        assert not after.getexif().get_ifd(0x8825)
        assert "exif" not in after.info and "icc_profile" not in after.info
        assert after.size == photo.size
        # Upside-down source -> the stripped copy is upright: red corner now bottom-right.
        assert close_to(after.convert("RGB").getpixel((photo.width - 3, photo.height - 3)), RED, tol=40)
    assert b"PhoneMaker" not in clean and b"Exif" not in clean


def test_strip_metadata_can_shrink_and_write_png(photo):
    clean = strip_metadata(photo.resize((640, 480)), image_format="PNG", max_side=320)
    with Image.open(io.BytesIO(clean)) as after:
        assert after.format == "PNG" and after.size == (320, 240)


def test_strip_metadata_refuses_bad_input():
    with pytest.raises(ImageError, match="not an image"):
        strip_metadata(b"hello")
