"""The hostile suite of issue 27, pass / fail at sizes that keep CI quick (benchmarks/hostile_bench.py measures the
figures at the issue's sizes): decoder bombs (progressive scans, deep images, many frames), the PIN and sign-in limits
under real concurrency (threads against the app, two `serve` workers, SQLite and PostgreSQL), no database connection
held across argon2, cross-site posts on every state-changing route, slowloris against `mpoxscan serve`, and the inputs
that once answered 500."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import GifImagePlugin, Image, ImageFile, TiffImagePlugin

from conftest import encode

from mpoxscan import images
from mpoxscan.errors import ImageError
from mpoxscan.images import load_image
from mpoxscan.web import hostile

pytestmark = pytest.mark.faults


# The image decoder (mpoxscan.images.load_image, the one loader).

def test_a_progressive_jpeg_with_its_last_scan_repeated_is_refused_before_decoding(monkeypatch):
    bomb = hostile.scan_bomb_jpeg(256, 300)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageError, match=r"a JPEG of 310 scans \(limit 100"):
        load_image(bomb)
    assert decoded == []  # refused from its markers: not one scan decoded
    monkeypatch.undo()
    ordinary = encode(Image.new("RGB", (256, 256), (90, 140, 200)), "JPEG", progressive=True)
    assert len(images.jpeg_scans(ordinary)) == 10 and load_image(ordinary).size == (256, 256)
    # A phone's MPO (a second JPEG after the first's end) counts the first image's scans only.
    assert len(images.jpeg_scans(ordinary + ordinary)) == 10


@pytest.mark.parametrize("make, mode", [(hostile.float_tiff, "F"), (hostile.gray16_png, "I;16"),
                                        (hostile.rgba_png, "RGBA"), (hostile.cmyk_jpeg, "CMYK")])
def test_deep_images_are_held_to_a_byte_budget_from_their_header(make, mode, monkeypatch):
    """Within the pixel limit a deep image once took 0.6 to 1.5 GB; its pixels now count by their bytes (a 1,000,000
    pixel limit stands for the 50-megapixel one): refused from the header, before any decoding, and the screening
    path refuses what a case would."""
    per_pixel = 2 if mode == "I;16" else 4
    data = make(800)  # 640,000 pixels: within a 1,000,000-pixel limit, over its 1,000,000-byte budget
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    for min_side in (None, 224):
        with pytest.raises(ImageError, match=f"image too large for its kind .*{mode} .* limit "
                                             f"{1_000_000 // per_pixel:,} for {per_pixel}-byte pixels"):
            load_image(data, max_pixels=1_000_000, min_side=min_side)
    assert decoded == []
    monkeypatch.undo()
    fits = make(400)  # 160,000 pixels: within the budget at either width
    image = load_image(fits, max_pixels=1_000_000)
    assert image.mode == "RGB" and image.size == (400, 400)
    assert load_image(fits, max_pixels=1_000_000, min_side=100).size == (100, 100)  # reduced before converting


def test_a_plain_8_bit_photo_keeps_the_whole_pixel_limit():
    data = encode(Image.new("RGB", (1000, 1000), (90, 140, 200)), "PNG")
    assert load_image(data, max_pixels=1_000_000).size == (1000, 1000)


@pytest.mark.parametrize("make, plugin", [(lambda: hostile.many_frames_gif(20_000), GifImagePlugin.GifImageFile),
                                          (lambda: hostile.many_pages_tiff(2_000), TiffImagePlugin.TiffImageFile)])
def test_many_frames_are_refused_without_walking_them(make, plugin, monkeypatch):
    """n_frames read every frame (a 200,000-frame GIF: 444 ms, a 5,000-page TIFF: 584 ms) before refusing."""
    seeks = []
    real = plugin._seek
    monkeypatch.setattr(plugin, "_seek", lambda self, *args, **kwargs: seeks.append(1) or real(self, *args, **kwargs))
    with pytest.raises(ImageError, match=r"(animated GIF|multi-page TIFF) \(more than one frame\)"):
        load_image(make())
    assert len(seeks) <= 3


def test_at_most_two_images_decode_at_once(monkeypatch):
    """The three photos of a case, and a burst of uploads, queue for DECODES_IN_FLIGHT decodes."""
    busy, peak, lock = [0], [0], threading.Lock()
    real = ImageFile.ImageFile.load

    def slow_load(self):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(0.05)
        try:
            return real(self)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    data = encode(Image.new("RGB", (64, 64), (90, 140, 200)), "PNG")
    threads = [threading.Thread(target=load_image, args=(data,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == images.DECODES_IN_FLIGHT == 2


def test_the_attacks_of_the_issue_are_what_they_claim():
    """The generators build what the bench sends: so many scans, frames and pages, such modes and sizes."""
    assert len(images.jpeg_scans(hostile.scan_bomb_jpeg(64, 300))) == 310
    gif = Image.open(io.BytesIO(hostile.many_frames_gif(500)))
    assert gif.n_frames == 500 and gif.size == (64, 64)
    tiff = Image.open(io.BytesIO(hostile.many_pages_tiff(50)))
    assert tiff.n_frames == 50 and tiff.size == (16, 16)
    for make, mode in ((hostile.float_tiff, "F"), (hostile.gray16_png, "I;16"), (hostile.rgba_png, "RGBA"),
                       (hostile.cmyk_jpeg, "CMYK")):
        opened = Image.open(io.BytesIO(make(70)))
        assert (opened.mode, opened.size) == (mode, (70, 70))
