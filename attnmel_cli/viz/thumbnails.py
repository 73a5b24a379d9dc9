"""One scored image as small pictures for the HTML report: the photo and each map's overlay at
thumbnail size (as ``explain`` draws them, outside the network's view dimmed), with the lesion
mask outlined on every panel."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.decode import DEFAULT_MAX_PIXELS, load_photo
from attnmel_cli.data.transforms import network_box
from attnmel_cli.data.writer import is_prepared_image
from attnmel_cli.viz.overlay import MAP_LABELS, display_map, map_on_photo, overlay

THUMB_SIDE = 192  # px, the longer side of every panel
MASK_COLOUR = (255, 0, 255)  # magenta: in no colour of the JET map, rare in skin


def shrink(
    photo: Image.Image, box: tuple[float, float, float, float], side: int
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The photo with its longer side ``side`` (never enlarged) and ``box`` scaled with it."""
    scale = side / max(photo.size)
    if scale >= 1:
        return photo, box
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    small = photo.resize(size, Image.BILINEAR, reducing_gap=2.0)
    sx, sy = size[0] / photo.width, size[1] / photo.height
    return small, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def outline(img: Image.Image, region: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """``img`` with the border of ``region`` ((H, W) bool, img's frame) drawn in ``colour``."""
    contours, _ = cv2.findContours(
        region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    rgb = np.array(img.convert("RGB"))
    cv2.polylines(rgb, contours, isClosed=True, color=colour, thickness=1, lineType=cv2.LINE_AA)
    return Image.fromarray(rgb, "RGB")


def panels(
    path: str,
    maps: dict[str, np.ndarray],
    pre: PreprocessConfig,
    mask: np.ndarray | None = None,
    *,
    side: int = THUMB_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[tuple[str, Image.Image]]:
    """(label, picture) for the photo at ``path`` and for each of its ``maps`` ((h, w) at
    network resolution) overlaid on it; ``mask``: the lesion mask in the network input's frame
    (S×S bool, as :func:`attnmel_cli.data.masks.load_mask` gives it), outlined on each."""
    photo = load_photo(path, max_pixels=max_pixels, draft_min_side=side, warn_frames=False)
    box = network_box(*photo.size, pre, prepared=is_prepared_image(photo))
    photo, box = shrink(photo, box, side)
    pictures = [("photo", photo)] + [
        (MAP_LABELS.get(name, name),
         overlay(photo, map_on_photo(display_map(name, values), photo.size, box), box))
        for name, values in maps.items()
    ]
    if mask is None:
        return pictures
    region = map_on_photo(mask.astype(np.float32), photo.size, box) >= 0.5  # NaN outside: False
    return [(label, outline(img, region, MASK_COLOUR)) for label, img in pictures]
