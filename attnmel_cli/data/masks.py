"""Lesion masks in the network input's frame, for the attention Jaccard of Table 3 (§3.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.decode import DECODE_ERRORS, DEFAULT_MAX_PIXELS, ORIENTATION_TRANSPOSE
from attnmel_cli.data.transforms import centre_crop, paper_crop_box
from attnmel_cli.data.writer import is_prepared_image
from attnmel_cli.errors import InputError


def load_mask(
    path: Path, pre: PreprocessConfig, *, prepared: bool, photo: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A lesion mask in the network input's frame (S×S, bool), with the image's own geometry.

    A prepared mask (256×256, aligned with its image: ``prepared``, or one ``prepare`` wrote, as
    :func:`attnmel_cli.data.writer.is_prepared_image` tells) is resized to R and centre-cropped
    to S as the image is (``data.transforms.prepared_to_array``); a photo-sized mask first gets
    the photo's EXIF orientation (as ``prepare`` does), then the paper crop. Nearest-neighbour
    throughout, so the mask stays binary. With ``photo`` (its image), a mask that is not on the
    image's pixel grid is refused (InputError), before the mask is decoded; so is a mask
    declaring more than ``max_pixels``.
    """
    orientation, stored = 1, None
    if photo is not None:
        try:
            with Image.open(photo) as img:
                stored = img.size
                orientation = 1 if prepared else int(img.getexif().get(0x0112, 1))
        except DECODE_ERRORS as exc:
            raise InputError(f"{photo}: cannot read image header ({exc})") from None
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise InputError(
                    f"{path}: lesion mask declares {img.width}×{img.height} px, over the pixel "
                    "limit (possible decompression bomb); raise it with --max-pixels if genuine"
                )
            if stored is not None and img.size != stored:
                raise InputError(
                    f"{path}: lesion mask is {img.width}×{img.height} px but its image "
                    f"{photo.name} is {stored[0]}×{stored[1]} px"  # type: ignore[union-attr]
                )
            mask = img.convert("L")
    except InputError:
        raise
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read lesion mask ({exc})") from None
    if not (prepared or is_prepared_image(mask)):  # a mask `prepare` wrote is cropped already
        if orientation in ORIENTATION_TRANSPOSE:
            mask = mask.transpose(ORIENTATION_TRANSPOSE[orientation])
        box = paper_crop_box(*mask.size, pre.crop_fraction)
        mask = mask.resize((pre.prepared_size, pre.prepared_size), Image.NEAREST, box=box)
    r = pre.resize
    if mask.size != (r, r):
        mask = mask.resize((r, r), Image.NEAREST)
    return np.asarray(centre_crop(mask, pre.image_size)) > 127
