"""The attacks of the hostile suite (issue 27), built in one place for `tests/test_hostile.py` (pass / fail, at small
sizes) and `benchmarks/hostile_bench.py` (the figures, at the sizes the issue measured): images that cost a decoder
far more than their bytes suggest, and half-open connections (slowloris)."""

from __future__ import annotations

import io
import socket
import struct

from PIL import Image

from mpoxscan.images import jpeg_scans


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
            f"TIFF of {pages:,} pages": many_pages_tiff(pages)}


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
