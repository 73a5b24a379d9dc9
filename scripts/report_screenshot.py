"""README's picture of an ``evaluate --html`` report, taken by a headless Chromium (Playwright).

The page is rendered at 1280 px wide; the header with the metrics, the curves and the start of
the gallery are cut out of the full-page screenshot and stacked into one compressed JPEG.

    python scripts/report_screenshot.py report.html docs/report-example.jpg
    python scripts/report_screenshot.py report.html shot.jpg --chromium /usr/bin/chromium
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# each strip kept: from the first element to the n-th match of the last one (0-based), stacked
STRIPS = (("header", "#metrics", 0), ("#curves", "#curves", 0),
          ("#gallery > h2", "#gallery figure.card", 5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1000, help="width of the picture written")
    p.add_argument("--quality", type=int, default=78, help="JPEG quality")
    args = p.parse_args()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        page.add_style_tag(content="nav { position: static; }")  # not repeated in the strips
        boxes = []
        for first, last, nth in STRIPS:
            top = page.locator(first).first.bounding_box()
            matches = page.locator(last)
            bottom = matches.nth(min(nth, matches.count() - 1)).bounding_box()
            if top is None or bottom is None:
                raise SystemExit(f"{args.report}: no {first} or {last} in the page")
            boxes.append((top["y"], bottom["y"] + bottom["height"] + 8))
        full = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        browser.close()
    strips = [full.crop((0, round(y0), full.width, round(y1))) for y0, y1 in boxes]
    canvas = Image.new("RGB", (full.width, sum(s.height for s in strips)), "white")
    y = 0
    for strip in strips:
        canvas.paste(strip, (0, y))
        y += strip.height
    scale = args.width / canvas.width
    canvas = canvas.resize((args.width, round(canvas.height * scale)), Image.LANCZOS)
    canvas.save(args.out, quality=args.quality, optimize=True, progressive=True)
    print(f"{args.out}: {canvas.width}×{canvas.height}, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
