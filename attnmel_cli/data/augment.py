"""Training-time augmentation: ``paper`` (§3.1, authors' code: random crop, 90° rotations,
flips) or ``strong`` (the paper's, after a random-resized crop and a mild colour jitter).

Every geometric transform acts on all channels of one (C, H, W) uint8 tensor, so an image and its
ROI mask stacked together stay aligned; colour acts on the first 3 channels only. Randomness
comes from an explicit generator: a sample's view is a pure function of its seed, whichever
worker process draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

# --augment strong: share of the image's area a view covers, its aspect-ratio range, and the
# colour jitter (brightness, contrast and saturation factors in 1 ± JITTER, hue shift ± HUE
# of the circle: dermoscopic colours carry diagnosis, so they move little)
AREA = (0.35, 1.0)
ASPECT = (3 / 4, 4 / 3)
JITTER = 0.2
HUE = 0.02


def random_view(planes: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """planes (C, R, R) → (C, size, size): random ``size`` crop, k·90° rotation, h and v flips."""
    r = planes.shape[-1]
    top, left, k, hflip, vflip = (
        torch.randint(0, r - size + 1, (2,), generator=generator).tolist()
        + torch.randint(0, 4, (1,), generator=generator).tolist()
        + torch.randint(0, 2, (2,), generator=generator).tolist()
    )
    view = planes[:, top : top + size, left : left + size]
    if k:
        view = torch.rot90(view, k, dims=(1, 2))
    if hflip:
        view = view.flip(2)
    if vflip:
        view = view.flip(1)
    return view.contiguous()


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def resized_crop(planes: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """planes (C, R, R) → (C, size, size): a random window of AREA of the image's area and
    ASPECT aspect ratio, resized (image bilinear with antialiasing, masks nearest-exact)."""
    r = planes.shape[-1]
    area = _uniform(*AREA, generator) * r * r
    aspect = math.exp(_uniform(math.log(ASPECT[0]), math.log(ASPECT[1]), generator))
    w = min(r, round(math.sqrt(area * aspect)))
    h = min(r, round(math.sqrt(area / aspect)))
    top = int(torch.randint(0, r - h + 1, (), generator=generator))
    left = int(torch.randint(0, r - w + 1, (), generator=generator))
    window = planes[:, top : top + h, left : left + w].float()
    image = F.interpolate(window[None, :3], (size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0].round().clamp(0, 255)
    if planes.shape[0] == 3:
        return image.to(torch.uint8)
    masks = F.interpolate(window[None, 3:], (size, size), mode="nearest-exact")[0]
    return torch.cat([image, masks]).to(torch.uint8)


def colour_jitter(image: Tensor, generator: torch.Generator) -> Tensor:
    """image uint8 (3, H, W) → same: brightness, contrast, saturation, then hue."""
    image = TF.adjust_brightness(image, _uniform(1 - JITTER, 1 + JITTER, generator))
    image = TF.adjust_contrast(image, _uniform(1 - JITTER, 1 + JITTER, generator))
    image = TF.adjust_saturation(image, _uniform(1 - JITTER, 1 + JITTER, generator))
    return TF.adjust_hue(image, _uniform(-HUE, HUE, generator))


def strong_view(planes: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """planes (C, R, R) → (C, size, size): :func:`resized_crop`, the paper's rotations and
    flips, then :func:`colour_jitter` of the image channels."""
    view = random_view(resized_crop(planes, size, generator), size, generator)
    return torch.cat([colour_jitter(view[:3], generator), view[3:]])


AUGMENTS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "paper": random_view, "strong": strong_view,
}
