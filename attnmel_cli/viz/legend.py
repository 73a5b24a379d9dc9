"""The legend drawn into an overlay image, so that it reads on its own: the map's name, its colour
bar from 0 to 1, and the predicted class in words with its probability."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colorize = Callable[[np.ndarray], np.ndarray]  # (H, W) in [0, 1] → (H, W, 3) uint8
WHITE, GREY = (255, 255, 255), (205, 205, 205)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def add_legend(img: Image.Image, title: str, caption: str | None, colorize: Colorize,
               ) -> Image.Image:
    """A copy of ``img`` with a compact legend in its bottom-left corner on a translucent dark
    box: ``title`` (the map's name), the colour bar with ticks 0, 0.5 and 1, then ``caption``
    (the prediction); sized to the image (text about 1/32 of its shorter side)."""
    size = max(11, round(min(img.size) / 32))
    big, small = _font(size), _font(max(9, round(size * 0.8)))
    probe = ImageDraw.Draw(img)

    def extent(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> tuple[int, ...]:
        return tuple(round(v) for v in probe.textbbox((0, 0), text, font=font))

    pad, gap = max(4, size // 2), max(2, size // 4)
    lines = [title] + ([caption] if caption else [])
    bar_w = max(max(extent(t, big)[2] for t in lines), round(img.width * 0.22), 80)
    bar_h = max(6, round(size * 0.55))
    tick_h = extent("0.5", small)[3]
    line_h = extent("Ag", big)[3]
    box_w = bar_w + 2 * pad
    box_h = 2 * pad + line_h + gap + bar_h + gap + tick_h + (gap + line_h if caption else 0)
    margin = pad
    x0, y0 = margin, img.height - margin - box_h
    if x0 + box_w > img.width or y0 < 0:  # an image too small for it: none
        return img.copy()
    out = img.convert("RGBA")
    shade = Image.new("RGBA", out.size, (0, 0, 0, 0))
    ImageDraw.Draw(shade).rounded_rectangle([x0, y0, x0 + box_w, y0 + box_h], radius=pad,
                                            fill=(0, 0, 0, 165))
    out = Image.alpha_composite(out, shade).convert("RGB")
    draw = ImageDraw.Draw(out)
    x, y = x0 + pad, y0 + pad
    draw.text((x, y), title, fill=WHITE, font=big)
    y += line_h + gap
    bar = colorize(np.tile(np.linspace(0.0, 1.0, bar_w, dtype=np.float32), (bar_h, 1)))
    out.paste(Image.fromarray(bar, "RGB"), (x, y))
    draw.rectangle([x, y, x + bar_w - 1, y + bar_h - 1], outline=GREY)
    y += bar_h + gap
    for value, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        w = extent(label, small)[2]
        tx = x + round(value * (bar_w - 1)) - round(value * w)  # 0 left-aligned, 1 right-aligned
        draw.text((tx, y), label, fill=GREY, font=small)
    if caption:
        draw.text((x, y + tick_h + gap), caption, fill=WHITE, font=big)
    return out
