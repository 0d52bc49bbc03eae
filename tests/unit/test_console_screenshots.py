"""The README's console screenshots exist, and stay small: palette PNGs (docs/console/screenshots.py) of at most
150 KiB each, so that taking them again does not grow the repository by megabytes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PALETTE = 3  # the colour type in the IHDR chunk


def test_every_console_screenshot_the_readme_shows_exists_and_is_a_small_palette_png():
    shown = sorted(set(re.findall(r'src="(docs/console/[^"]+\.png)"', (ROOT / "README.md").read_text())))
    assert shown, "the README shows no console screenshot"
    for name in shown:
        png = (ROOT / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE), f"{name} is not a PNG"
        assert png[25] == PALETTE, f"{name} is not a palette PNG: take it with `make screenshots`"
        assert len(png) <= 150 * 1024, f"{name} is {len(png) // 1024} KiB"
