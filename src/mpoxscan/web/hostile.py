"""The attacks of the hostile suite (issue 27), built in one place for `tests/test_hostile.py` (pass / fail, at small
sizes) and `benchmarks/hostile_bench.py` (the figures, at the sizes the issue measured): images that cost a decoder
far more than their bytes suggest, and half-open connections (slowloris)."""

from __future__ import annotations

import io
import socket
import struct

from PIL import Image

from mpoxscan.images import MAX_JPEG_SCANS, jpeg_scans


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def scan_bomb_jpeg(side: int = 7000, repeats: int = 300) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` times: libjpeg decodes every scan over the whole
    picture (issue 27: 214 kB at 7000 x 7000 and 300 repeats cost 13 s of CPU). One flat colour, so that each scan
    is a few bytes."""
    data = _encode(Image.new("RGB", (side, side), (180, 120, 100)), "JPEG", progressive=True, quality=75)
    start, end = jpeg_scans(data)[-1]
    return data[:end] + data[start:end] * repeats + data[end:]


def hidden_scan_bomb_jpeg(side: int = 7000, repeats: int = 300) -> bytes:
    """scan_bomb_jpeg with one stray byte after the segment that follows its first scan: libjpeg skips it (with a
    warning) and decodes every scan; a count that stopped there saw one scan."""
    data = scan_bomb_jpeg(side, repeats)
    first_end = jpeg_scans(data)[0][1]
    after = first_end + 2 + int.from_bytes(data[first_end + 2:first_end + 4], "big")  # the segment after the scan
    return data[:after] + b"\x00" + data[after:]


def _small_jpeg() -> bytes:
    return _encode(Image.new("RGB", (64, 64), (180, 120, 100)), "JPEG", quality=75)


def many_segments_jpeg(count: int = 3_900_000) -> bytes:
    """A 64 x 64 JPEG with ``count`` empty comment segments before its frame (4 bytes each: 15 MB for 3.9 million),
    which Pillow's parser reads one at a time (7.9 s of CPU)."""
    data = _small_jpeg()
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def stray_bytes_jpeg(count: int = 15_000_000) -> bytes:
    """A 64 x 64 JPEG with ``count`` zero bytes after its first segment, which libjpeg skips and Pillow's parser
    reads one at a time (1.2 s of CPU for 15 MB)."""
    data = _small_jpeg()
    after = 4 + int.from_bytes(data[4:6], "big")
    return data[:after] + bytes(count) + data[after:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def many_chunks_png(count: int = 1_300_000) -> bytes:
    """A 64 x 64 PNG with ``count`` empty private chunks before its image data (12 bytes each: 15 MB for 1.3
    million), which Pillow's parser reads one at a time (4.8 s of CPU)."""
    data = _encode(Image.new("RGB", (64, 64), (180, 120, 100)), "PNG")
    header_end = 8 + 25  # the signature and IHDR
    return data[:header_end] + _png_chunk(b"prIv", b"") * count + data[header_end:]


def tiny_sub_blocks_gif(count: int = 7_800_000, side: int = 64) -> bytes:
    """A one-frame GIF whose image data goes on in ``count`` 1-byte sub-blocks (2 bytes each: 15 MB for 7.8
    million), which Pillow walks one at a time in Python to see whether a second frame follows (2.2 s of CPU)."""
    header = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01" + b"\x01\x00" * count
             + b"\x00")
    return header + frame + b"\x3b"


def float_tiff(side: int = 7000) -> bytes:
    """A 32-bit float grey TIFF of zeros, deflated (311 kB at 7000 x 7000)."""
    return _encode(Image.new("F", (side, side)), "TIFF", compression="tiff_adobe_deflate")


def gray16_png(side: int = 7000) -> bytes:
    """A 16-bit grey PNG of zeros (95 kB at 7000 x 7000)."""
    return _encode(Image.new("I;16", (side, side)), "PNG")


def rgba_png(side: int = 7000) -> bytes:
    """A half-transparent RGBA PNG."""
    return _encode(Image.new("RGBA", (side, side), (200, 80, 60, 128)), "PNG")


def cmyk_jpeg(side: int = 7000) -> bytes:
    """A CMYK JPEG (what print software writes; libjpeg decodes it at 4 bytes a pixel)."""
    return _encode(Image.new("CMYK", (side, side), (20, 60, 80, 0)), "JPEG", quality=75)


def many_frames_gif(frames: int = 200_000, side: int = 64) -> bytes:
    """A GIF of ``frames`` 1 x 1 frames (15 bytes each: 3 MB for 200,000) on a ``side`` x ``side`` screen."""
    header = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    # Image descriptor at (0, 0), 1 x 1, no local palette; LZW minimum code size 2; one sub-block holding the codes
    # clear (4), pixel 0, end (5) at 3 bits each; the block terminator.
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b"\x3b"


def many_pages_tiff(pages: int = 5000, side: int = 16) -> bytes:
    """A TIFF of ``pages`` 8-bit grey pages, every page's directory pointing at one shared strip (Pillow takes 36 s
    to write 5,000 pages; this is assembled directly, about 100 bytes a page)."""
    strip = bytes(side * side)
    entries = [(256, 3, 1, side), (257, 3, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, side), (279, 4, 1, len(strip))]
    ifd_size = 2 + 12 * len(entries) + 4
    first = 8 + len(strip)
    out = bytearray(b"II*\x00" + struct.pack("<I", first) + strip)
    for page in range(pages):
        following = first + (page + 1) * ifd_size if page + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            out += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3
                                                             else struct.pack("<I", value))
        out += struct.pack("<I", following)
    return bytes(out)


def hostile_images(side: int = 7000, repeats: int = 300, frames: int = 200_000, pages: int = 5000) -> dict[str, bytes]:
    """The issue's hostile images by name, at its sizes by default (the tests pass smaller ones and lower the loader's
    limits in proportion)."""
    return {f"progressive JPEG {side} x {side}, last scan x{repeats}": scan_bomb_jpeg(side, repeats),
            f"32-bit float TIFF {side} x {side}": float_tiff(side),
            f"16-bit grey PNG {side} x {side}": gray16_png(side),
            f"RGBA PNG {side} x {side}": rgba_png(side),
            f"CMYK JPEG {side} x {side}": cmyk_jpeg(side),
            f"GIF of {frames:,} frames": many_frames_gif(frames),
            f"TIFF of {pages:,} pages": many_pages_tiff(pages),
            f"progressive JPEG {side} x {side}, last scan x{repeats} behind a stray byte":
                hidden_scan_bomb_jpeg(side, repeats),
            f"progressive JPEG {side} x {side} of {MAX_JPEG_SCANS} scans": scan_bomb_jpeg(side, MAX_JPEG_SCANS - 10),
            "JPEG of 3.9 million empty segments (15 MB)": many_segments_jpeg(),
            "JPEG with 15 MB of stray bytes": stray_bytes_jpeg(),
            "PNG of 1.3 million empty chunks (15 MB)": many_chunks_png(),
            "GIF of 7.8 million 1-byte sub-blocks (15 MB)": tiny_sub_blocks_gif()}


def half_open_connections(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send the start of a request and never finish its headers (slowloris)."""
    held = []
    for _ in range(count):
        try:
            conn = socket.create_connection((host, port), timeout=5)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        except OSError:  # refused or reset: the server would not hold it
            continue
        held.append(conn)
    return held
