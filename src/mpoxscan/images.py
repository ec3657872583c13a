"""One safe way to open any photo a phone or a dataset can produce, and to strip it of metadata.

Every stage of mpoxscan (curate, train, predict, serve) opens images through :func:`load_image`, so that
limits, orientation, colour handling and error messages are the same everywhere.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from mpoxscan.errors import ImageError, ImageShapeError, UnsupportedImageError

ImageSource = Union[str, Path, bytes, bytearray, memoryview]

#: A 48-megapixel phone photo (8064 x 6048) fits; larger inputs are refused before they are decoded.
DEFAULT_MAX_PIXELS = 50_000_000
#: Larger files are refused before they are read into memory.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# Shapes that no photo of a lesion has, refused from the header before any decoding or resizing: a thin strip costs
# far more than its few pixels suggest, because screening scales its short side up to the network's input (a 50000 x 1
# PNG of 225 bytes became an 11-million-pixel-wide resize and 10 GB of memory). Phone panoramas are about 4-6:1, a 21:9
# screenshot 2.3:1, so 8:1 refuses no real photo; the answer rule already says "cannot tell: too small" below its own
# floor (64 px on the bundled model), so 16 px is only the hard floor under that, for inputs that are no photo at all.
# The curate tool's own quality filter is stricter (64 px, 3:1) and names these as too small / extreme aspect ratio.
#: Images whose short side is under this many pixels are refused (no photo of a lesion is 15 pixels high).
DEFAULT_MIN_SHORT_SIDE = 16
#: Images longer than this many times their short side are refused (panoramas are 4-6:1).
DEFAULT_MAX_ASPECT_RATIO = 8.0
#: A JPEG whose short side is over this many times the caller's ``min_side`` is decoded at a reduced scale.
REDUCED_DECODE = 2
#: JPEG and MPO (a multi-picture JPEG): the formats whose decoder can reduce while it decodes (DCT scaling).
_JPEG_FORMATS = ("JPEG", "MPO")
# A progressive JPEG is decoded once per scan, over the whole picture: a 214 kB 7000 x 7000 file whose last scan was
# repeated 300 times cost 13 s of CPU (issue 27). Encoders write about 10 scans (libjpeg's default script for colour
# photos; mozjpeg's searched scripts stay under about 30), so 100 refuses no real photo.
#: Progressive (or multi-scan) JPEGs with more scans than this are refused before decoding.
MAX_JPEG_SCANS = 100
# Each scan costs a pass over the whole picture (about 40 ms at 49 megapixels here), so the count alone let a 295 kB
# 7000 x 7000 file of 100 scans cost 3.9 s of CPU, ten times a real photo of that size. Scans are also held to what
# this many scans of a photo at the pixel limit would cost (a large photo keeps room for mozjpeg's scripts; a
# small one keeps MAX_JPEG_SCANS).
#: Scans times pixels of a JPEG, in scans of a photo at the pixel limit.
MAX_JPEG_SCANS_AT_LIMIT = 32
# Pillow reads the structure of JPEG (up to the first scan), PNG and GIF files in Python, one marker segment, chunk
# or block at a time: 15 MB of empty segments cost 7.9 s of CPU before one pixel is decoded, 15 MB of empty PNG
# chunks 4.8 s, a GIF's image data in 1-byte sub-blocks 2.2 s (and bytes that are no segment between a JPEG's
# segments, which libjpeg skips, 1.2 s). Those parts are counted first, from their lengths, and refused beyond what
# a real photo holds: a few dozen JPEG segments (a colour profile or XMP split into 64 kB parts among them), PNG
# image data in parts of 8 kB or more (libpng's), GIF data in sub-blocks of 255 bytes.
#: JPEG marker segments (scans included) of a file, and bytes between them before its first scan.
MAX_JPEG_SEGMENTS = 1_000
MAX_JPEG_STRAY_BYTES = 64 * 1024
#: PNG chunks: this many, and one more per PNG_CHUNK_BYTES of the file.
MAX_PNG_CHUNKS = 1_000
PNG_CHUNK_BYTES = 2_048
#: GIF blocks and sub-blocks up to its second image: this many, and one more per GIF_BLOCK_BYTES of the file.
MAX_GIF_BLOCKS = 10_000
GIF_BLOCK_BYTES = 200
# Images at most this many at a time are decoded in one process (the rest wait their turn): the three photos of a
# case and a burst of uploads each decode within the limits below, but not all at once (issue 27: four 32-bit TIFFs
# decoding together took 6.4 GB).
#: Decodes (and their conversions to RGB) in flight at once in one process.
DECODES_IN_FLIGHT = 2
_decode_slots = threading.BoundedSemaphore(DECODES_IN_FLIGHT)

# Formats that phones, cameras and public datasets produce. Restricting Image.open to these also keeps
# Pillow's rarer (and less hardened) parsers away from untrusted uploads.
# (Phone JPEGs with a depth map open through the JPEG parser and come back as format MPO.)
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF", "BMP", "TIFF")
# Formats where several frames mean an animation or a multi-page document rather than one photo.
# MPO (phone JPEGs with a depth map) and HEIF (bursts, live photos) hold one primary photo: we take it.
#: File name suffixes looked at when a folder of photos is given (the content decides, not the name). JPEGs also come
#: as .jfif (Windows saves web photos so), .jpe, .jif, .jfi, .pjpeg / .pjp (progressive); HEIF as .hif (cameras).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".jfi", ".jif", ".pjpeg", ".pjp", ".png", ".webp", ".heic", ".heif",
                  ".hif", ".avif", ".bmp", ".tif", ".tiff", ".gif"}
_MULTI_FRAME_REFUSED = ("GIF", "PNG", "WEBP", "TIFF", "AVIF")
# Errors Pillow's decoders raise on broken data (it has no single exception type for them).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError)


# The major brands of HEIF files (ISO/IEC 23008-12): iPhones write "heic"; "mif1"/"msf1" are the generic ones.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


@lru_cache(maxsize=1)
def _register_heif() -> bool:
    """Teach Pillow to open HEIC/HEIF, the default photo format of iPhones (done once, on first use); False when
    pillow-heif is missing (a declared dependency: only the GPU machine's bare training environment lacks it)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _read_bytes(source: ImageSource, max_bytes: int, name: str | None = None) -> tuple[bytes, str]:
    """Return the raw bytes of ``source`` and a name to put in error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "image"
        if len(data) > max_bytes:
            raise ImageError(f"{name}: file too large ({len(data):,} bytes; limit {max_bytes:,})")
    else:
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise ImageError(f"{name}: is a directory, not an image file")
            if size > max_bytes:
                raise ImageError(f"{name}: file too large ({size:,} bytes; limit {max_bytes:,})")
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except PermissionError:
            raise ImageError(f"{name}: permission denied") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    return data, name


def _open(data: bytes, name: str, max_pixels: int, min_short_side: int = DEFAULT_MIN_SHORT_SIDE,
          max_aspect: float = DEFAULT_MAX_ASPECT_RATIO) -> Image.Image:
    """Identify the format and check the declared size and shape, without decoding the pixels."""
    if not _register_heif() and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        raise ImageError(f"{name}: a HEIC/HEIF photo, and pillow-heif (which reads them) is not installed")
    segments = _check_structure(data, name)  # before Pillow walks it
    with warnings.catch_warnings():
        # We enforce our own pixel limit below; Pillow's warning band would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        except Image.DecompressionBombError:
            raise ImageError(
                f"{name}: image too large (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; possible decompression bomb)"
            ) from None
        except UnidentifiedImageError:
            raise UnsupportedImageError(f"{name}: {_unsupported_reason(data)}") from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: corrupt image header ({_one_line(exc)})") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image too large ({width}x{height} = {width * height:,} pixels; limit {max_pixels:,})"
        )
    short, long = sorted((width, height))
    if short < min_short_side:
        raise ImageShapeError(f"{name}: image too small to be a photo ({width}x{height}; short side under "
                              f"{min_short_side} px)", (width, height))
    if long > max_aspect * short:
        raise ImageShapeError(f"{name}: extreme aspect ratio ({width}x{height}, {long / short:.1f}:1; limit "
                              f"{max_aspect:g}:1): not a photo of a lesion", (width, height))
    # is_animated looks for a second frame only; n_frames walks them all (a 200,000-frame GIF took 444 ms, a
    # 5,000-page TIFF 584 ms, before being refused anyway).
    if img.format in _MULTI_FRAME_REFUSED and getattr(img, "is_animated", False):
        kind = "multi-page" if img.format == "TIFF" else "animated"
        raise ImageError(f"{name}: {kind} {img.format} (more than one frame); send a single still photo")
    if img.format in _JPEG_FORMATS:
        scans = sum(marker == _SOS for marker, _start, _end in segments or ())
        if scans > MAX_JPEG_SCANS:
            raise ImageError(f"{name}: a JPEG of {scans} scans (limit {MAX_JPEG_SCANS}; a photo has about 10): "
                             f"possible decompression bomb")
        if scans * width * height > MAX_JPEG_SCANS_AT_LIMIT * max_pixels:
            limit = MAX_JPEG_SCANS_AT_LIMIT * max_pixels // (width * height)
            raise ImageError(f"{name}: a JPEG of {scans} scans at {width}x{height} (limit {limit} at this size; a "
                             f"photo has about 10): possible decompression bomb")
    # From the declared size, even where screening would decode a JPEG at a reduced scale: the photo that screens
    # must be one that can be sent (a case keeps its photos whole).
    _check_deep_budget(img, name, max_pixels)
    return img


# A scan's entropy-coded data ends at the first 0xFF byte that is neither a stuffed 0x00 nor a restart marker.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# The next marker as libjpeg finds it (jdmarker.c, next_marker): any bytes that are not 0xFF skipped, then fill
# bytes (0xFF), and a stuffed 0xFF 0x00 skipped too. (Written without "\xff+": a literal first byte lets the search
# skip to each 0xFF at once, 20 times faster over 15 MB of stray bytes.)
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")
_SOS, _EOI = 0xDA, 0xD9


def jpeg_segments(data: bytes, limit: int | None = None) -> list[tuple[int, int, int]]:
    """The marker segments of the first image in a JPEG file, as (marker, start, end) offsets, read from the markers
    without decoding: a scan (marker 0xDA) spans its SOS segment and its entropy-coded data. At most ``limit`` + 1
    of them (enough to know the file holds too many).

    Written by hand because neither Pillow nor its libjpeg expose them (libjpeg-turbo's own scan limit is not
    reachable through Pillow). Walks the segments by their lengths (so that bytes inside EXIF or ICC data are never
    mistaken for markers), skips each scan's entropy-coded data with one regular-expression search, and finds each
    next marker as libjpeg does: bytes between segments are skipped, not an end (libjpeg warns and decodes on, so a
    stray byte once hid every later scan from the count). Stops at the first EOI (a phone's MPO file holds a second
    JPEG after it). Reads what it can of a broken file: the decoder then says what is wrong."""
    segments: list[tuple[int, int, int]] = []
    i, end = 2, len(data)
    while limit is None or len(segments) <= limit:
        found = _NEXT_MARKER.search(data, i)
        if found is None or found.end() + 2 > end:
            break
        start, marker = found.start(), data[found.start() + 1]
        if marker == _EOI:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i = found.end()
            continue
        i = found.end() + int.from_bytes(data[found.end():found.end() + 2], "big")
        if marker == _SOS:  # its header, then entropy-coded data up to the next marker
            scan_end = _SCAN_END.search(data, i)
            i = scan_end.start() if scan_end else end
        segments.append((marker, start, min(i, end)))
    return segments


def jpeg_scans(data: bytes) -> list[tuple[int, int]]:
    """Where each scan (its SOS segment and entropy-coded data) of the first image in a JPEG file lies, as (start,
    end) offsets (see jpeg_segments)."""
    return [(start, end) for marker, start, end in jpeg_segments(data) if marker == _SOS]


def _stray_bytes(segments: list[tuple[int, int, int]]) -> int:
    """Bytes between the segments up to the first scan (Pillow's parser skips them one at a time)."""
    stray, previous = 0, 2
    for marker, start, end in segments:
        stray += start - previous
        if marker == _SOS:
            break
        previous = end
    return stray


def _png_chunks(data: bytes, limit: int) -> int:
    """The chunks of a PNG file up to IEND, counted from their lengths (at most ``limit`` + 1)."""
    count, i, end = 0, 8, len(data)
    while i + 8 <= end and count <= limit:
        count += 1
        if data[i + 4:i + 8] == b"IEND":
            break
        i += 12 + int.from_bytes(data[i:i + 4], "big")
    return count


def _gif_blocks(data: bytes, limit: int) -> int:
    """The blocks (extensions, image descriptors) and sub-blocks of a GIF file up to its second image (which makes
    it animated: refused), counted from their lengths (at most ``limit`` + 1)."""
    def table(flags: int) -> int:  # a colour table's bytes, from a descriptor's flags
        return 3 << ((flags & 7) + 1) if flags & 0x80 else 0

    if len(data) < 13:
        return 0
    count, images, i, end = 0, 0, 13 + table(data[10]), len(data)
    while i < end and count <= limit:
        kind = data[i]
        if kind == 0x21:  # an extension: its introducer and label
            i += 2
        elif kind == 0x2C and images == 0 and i + 10 <= end:  # the image: its descriptor, colour table, code size
            images += 1
            i += 10 + table(data[i + 9]) + 1
        else:  # the trailer, a second image, or no block at all: Pillow takes it from here
            break
        count += 1
        while i < end and count <= limit:  # its sub-blocks, up to the empty one
            size = data[i]
            i += 1 + size
            count += 1
            if size == 0:
                break
    return count


def _check_structure(data: bytes, name: str) -> list[tuple[int, int, int]] | None:
    """Refuse a JPEG, PNG or GIF file of more parts than a photo has (see MAX_JPEG_SEGMENTS), before Pillow reads
    them one at a time; a JPEG's segments (for its scan count), None for other formats."""
    if data[:3] == b"\xff\xd8\xff":
        segments = jpeg_segments(data, MAX_JPEG_SEGMENTS)
        if len(segments) > MAX_JPEG_SEGMENTS:
            raise ImageError(f"{name}: a JPEG of more than {MAX_JPEG_SEGMENTS:,} marker segments (a photo has a few "
                             f"dozen): possible decompression bomb")
        stray = _stray_bytes(segments)
        if stray > MAX_JPEG_STRAY_BYTES:
            raise ImageError(f"{name}: a JPEG with {stray:,} bytes outside its segments (limit "
                             f"{MAX_JPEG_STRAY_BYTES:,}): possible decompression bomb")
        return segments
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        kind, limit = "PNG chunks", MAX_PNG_CHUNKS + len(data) // PNG_CHUNK_BYTES
        count = _png_chunks(data, limit)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        kind, limit = "GIF blocks", MAX_GIF_BLOCKS + len(data) // GIF_BLOCK_BYTES
        count = _gif_blocks(data, limit)
    else:
        return None
    if count > limit:
        raise ImageError(f"{name}: more than {limit:,} {kind} in {len(data):,} bytes (a photo has far fewer): "
                         f"possible decompression bomb")
    return None


def _unsupported_reason(data: bytes) -> str:
    """Tell an image in a format we refuse apart from data that is no image at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as other:
                return f"unsupported image format {other.format} (supported: {', '.join(SUPPORTED_FORMATS)})"
        except Exception:  # any failure here just means: not an image we can name
            return "not an image (unrecognised file content)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _working_bytes(img: Image.Image) -> int | None:
    """Bytes per pixel of the raster that turning ``img`` into 8-bit RGB works on, for images that need more than
    Pillow's plain conversion (more than 8 bits per channel, alpha, transparency, CMYK); None for the rest (8-bit
    grey, RGB, palette), which convert as an ordinary photo does. Pillow keeps every image of 2 to 4 bands, and
    32-bit ones, at 4 bytes a pixel."""
    if img.mode.startswith("I;16"):
        return 2
    if img.mode in ("1", "L", "P", "RGB") and "transparency" not in img.info:
        return None
    return 4 if img.mode != "1" else None


def _check_deep_budget(img: Image.Image, name: str, max_pixels: int) -> None:
    """A deep image (see _working_bytes) may decode to at most ``max_pixels`` bytes: a quarter of what an 8-bit
    photo at the pixel limit takes (4 bytes a pixel), so that with the copies its conversion needs it never costs
    more than such a photo. Within the 50-megapixel limit a 32-bit float TIFF once took +1.5 GB, a 16-bit grey PNG
    +1.1 GB, an RGBA PNG +0.9 GB, a CMYK JPEG +0.6 GB (issue 27). Phones send none of these."""
    per_pixel = _working_bytes(img)
    pixels = img.width * img.height
    if per_pixel is not None and pixels * per_pixel > max_pixels:
        limit = max_pixels // per_pixel
        raise ImageError(f"{name}: image too large for its kind ({img.width}x{img.height} {img.mode}"
                         f"{' with transparency' if 'transparency' in img.info else ''} = {pixels:,} pixels; limit "
                         f"{limit:,} for {per_pixel}-byte pixels, {max_pixels:,} for 8-bit photos)")


def _reduce_for(img: Image.Image, min_side: int | None) -> Image.Image:
    """``img`` box-reduced by a whole factor while its short side stays at least ``min_side`` (the JPEG draft's
    rule: only when it is over twice that), so that a deep image is converted at the size screening needs."""
    short = min(img.size)
    if not min_side or short <= 2 * min_side:
        return img
    return img.reduce(short // min_side)


#: Rows converted at a time from 16/32-bit grey to 8 bits: a float32 copy of 256 rows, never of the whole image.
_GRAY_ROWS = 256


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """Scale 16-bit and 32-bit grayscale to 8 bits (Pillow's convert would clip instead of scale), a band of rows at a
    time in float32 (a float64 copy of a whole 50-megapixel image was 400 MB, and each step made another)."""
    width, height = img.size
    bands = [(top, min(height, top + _GRAY_ROWS)) for top in range(0, height, _GRAY_ROWS)]
    if img.mode == "F":  # values in [0, 1] are scaled up; NaN (which Pillow's getextrema reports) is ignored
        high = max(float(np.nanmax(np.asarray(img.crop((0, a, width, b))), initial=0.0)) for a, b in bands)
        scale = 255.0 if high <= 1.0 else 1.0
    elif img.mode.startswith("I;16") or img.getextrema()[1] > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    out = np.empty((height, width), np.uint8)
    for top, bottom in bands:
        rows = np.array(img.crop((0, top, width, bottom)), dtype=np.float32)
        rows *= np.float32(scale)
        np.nan_to_num(rows, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(rows, 0, 255, out=rows)
        np.rint(rows, out=rows)
        out[top:top + rows.shape[0]] = rows
    return Image.fromarray(out, mode="L")


def _composite_on_white(img: Image.Image) -> Image.Image:
    """The picture over a white page: its colour pasted through its alpha onto white (one RGB copy and the alpha
    band, where alpha_composite made three RGBA ones)."""
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return white


def _apply_icc(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert from the embedded colour profile (Display P3 on many phones, CMYK press profiles) to sRGB."""
    if not icc or img.mode not in ("RGB", "CMYK", "L"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if img.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(src).lower():
            return img
        return ImageCms.profileToProfile(img, src, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img  # a broken profile is not worth refusing a photo over: fall back to the plain conversion


def _to_rgb(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """8-bit RGB. ``min_side``: a deep image (16/32-bit, alpha, CMYK) is first reduced to what screening needs, so
    that its conversion works on a small copy."""
    icc = img.info.get("icc_profile")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if ("transparency" in img.info or img.mode == "PA") else "RGB")
    elif img.mode in ("L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode.startswith("I;16"):  # Pillow cannot reduce 16-bit: to 8 bits first (one byte a pixel)
        img = _reduce_for(_to_8bit_gray(img), min_side)
    elif img.mode not in ("1", "L", "RGB"):
        img = _reduce_for(img, min_side)
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit_gray(img)
    if "A" in img.getbands() or img.mode in ("RGBa", "La"):
        img = _composite_on_white(img)
    img = _apply_icc(img, icc)
    return img if img.mode == "RGB" else img.convert("RGB")


def decoded_reduced(size: tuple[int, int], image_format: str | None, min_side: int) -> bool:
    """Whether :func:`load_image` with this ``min_side`` decodes a stored picture of this size and format at a
    reduced scale (callers that skip what such a decode loses ask the same question: deploy/compression.py)."""
    return image_format in _JPEG_FORMATS and min(size) > REDUCED_DECODE * min_side


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    min_side: int | None = None,
    name: str | None = None,
    min_short_side: int = DEFAULT_MIN_SHORT_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT_RATIO,
) -> Image.Image:
    """Open a path or bytes and return an upright 8-bit sRGB ``RGB`` image, fully decoded.

    ``min_side``: the caller needs at least this many pixels on the short side, so a JPEG may be decoded at a
    reduced scale (1/2, 1/4, 1/8), which is several times faster and lighter for large phone photos.
    ``image.info["source_size"]`` keeps the upright size of the stored picture before any such reduction, and
    ``image.info["source_format"]`` its format (``"JPEG"``, ``"PNG"``, ...).
    ``name`` labels error messages when ``source`` is bytes.
    ``min_short_side`` and ``max_aspect``: shapes no photo has are refused from the header (:class:`ImageShapeError`),
    so that no caller ever resizes a thin strip up to a network's input.
    Raises :class:`~mpoxscan.errors.ImageError` with a one-line reason for anything that is not one usable photo.
    """
    data, name = _read_bytes(source, max_bytes, name)
    img = _open(data, name, max_pixels, min_short_side, max_aspect)
    source_size = img.size
    if min_side and decoded_reduced(img.size, img.format, min_side):
        scale = min_side / min(img.size)
        img.draft(img.mode, (max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    with _decode_slots:  # waits for one of DECODES_IN_FLIGHT
        try:
            img.load()
        except Image.DecompressionBombError:
            raise ImageError(f"{name}: image too large (possible decompression bomb)") from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: truncated or corrupt image data: {_one_line(exc)}") from None
        decoded_size = img.size
        try:  # in place: without an orientation tag the copy it returned was a second whole raster
            ImageOps.exif_transpose(img, in_place=True)
        except _DECODE_ERRORS:
            pass  # unreadable EXIF: keep the stored orientation rather than refuse the photo
        if img.size != decoded_size:  # turned by 90 degrees
            source_size = source_size[::-1]
        try:
            rgb = _to_rgb(img, min_side)
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: cannot convert {img.mode} image to RGB ({_one_line(exc)})") from None
    rgb.info = {"source_size": source_size, "source_format": img.format}
    return rgb


def strip_metadata(
    source: ImageSource | Image.Image,
    *,
    image_format: str = "JPEG",
    quality: int = 90,
    max_side: int | None = None,
) -> bytes:
    """Re-encode a photo with no metadata at all (no EXIF, GPS, camera, time, XMP or ICC): for anything that
    leaves the phone. The pixels are first made upright, so dropping the orientation tag changes nothing visible.
    """
    img = source if isinstance(source, Image.Image) else load_image(source)
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # A brand-new image carries no info dict, so nothing from the source can leak into the encoder.
    clean = Image.frombytes("RGB", img.size, img.tobytes())
    buf = io.BytesIO()
    fmt = image_format.upper()
    if fmt == "JPEG":
        clean.save(buf, format="JPEG", quality=quality, optimize=True)
    elif fmt in ("PNG", "WEBP"):
        clean.save(buf, format=fmt)
    else:
        raise ValueError(f"strip_metadata writes JPEG, PNG or WEBP, not {image_format}")
    return buf.getvalue()
