"""Render the phone page's PNG icons from static/icon.svg with headless Chromium (the browser the tests use already):
192 and 512 px as drawn, and a 512 px "maskable" one, whose background fills the square and whose drawing is shrunk
into the central safe circle (80 % of the side) that every launcher mask keeps.

    PYTHONPATH=src python -m mpoxscan.web.make_icons      # rewrites static/icon-*.png; commit them

Run it again after changing icon.svg (tests/test_web.py checks the files' sizes and the maskable icon's full bleed).
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
from pathlib import Path

from PIL import Image

STATIC = Path(__file__).resolve().parent / "static"
#: (file, side in pixels, maskable)
ICONS = (("icon-192.png", 192, False), ("icon-512.png", 512, False), ("icon-maskable-512.png", 512, True))
#: The drawing's scale in the maskable icon: its farthest point (a corner of the dashed frame, 227 of 512 units from
#: the centre) lands at 0.8 x 227 = 182 units, inside the safe circle's radius of 205.
MASKABLE_SCALE = 0.8


def maskable(svg: str) -> str:
    """The same drawing on a square background (launchers cut their own shape) and shrunk into the safe zone."""
    head, background, rest = re.match(r"(?s)(.*?<svg[^>]*>\s*)(<rect[^>]*/>)(.*)</svg>\s*$", svg).groups()
    background = re.sub(r'\s+rx="[^"]*"', "", background)
    return (f'{head}{background}\n  <g transform="translate(256 256) scale({MASKABLE_SCALE}) translate(-256 -256)">'
            f"{rest}</g>\n</svg>\n")


def render(svg: str, side: int, driver) -> Image.Image:
    """The SVG drawn at side x side CSS pixels on a transparent page, as an RGBA image."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": side, "height": side, "deviceScaleFactor": 1, "mobile": False})
    driver.execute_cdp_cmd("Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}})
    sized = re.sub(r"<svg\b", f'<svg width="{side}" height="{side}" style="display:block"', svg, count=1)
    page = f"<!doctype html><html><body style='margin:0;background:transparent'>{sized}</body></html>"
    driver.get("data:text/html;base64," + base64.b64encode(page.encode()).decode())
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGBA")
    return shot.crop((0, 0, side, side))


def main() -> None:
    from mpoxscan.web.testing import headless_chromium

    svg = (STATIC / "icon.svg").read_text()
    with tempfile.TemporaryDirectory() as profile:
        driver = headless_chromium(Path(profile))
        try:
            for name, side, is_maskable in ICONS:
                image = render(maskable(svg) if is_maskable else svg, side, driver)
                image.save(STATIC / name, optimize=True)
                print(f"{name}: {image.size[0]} x {image.size[1]}, {(STATIC / name).stat().st_size} bytes")
                if name == "icon-192.png":  # what browsers ask /favicon.ico for (pages that name no icon)
                    image.save(STATIC / "favicon.ico", sizes=[(16, 16), (32, 32), (48, 48)])
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
