"""The VGG-16 / VGG-16-BN convolutional stack (torchvision's layer order and state-dict keys), a
width multiplier, and torchvision's ImageNet weights for it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from attnmel_cli.errors import AttnMelError
from attnmel_cli.models.backbones.base import weights_refusal

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# torchvision's VGG-16 configuration "D": channels per conv, "M" = max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def _imagenet_weights(backbone: str) -> WeightsEnum:
    """torchvision's ImageNet weights entry (imported lazily: torchvision.models is slow)."""
    from torchvision.models import VGG16_BN_Weights, VGG16_Weights

    return {"vgg16_bn": VGG16_BN_Weights, "vgg16": VGG16_Weights}[backbone].IMAGENET1K_V1


def vgg_features(cfg: list[int | str], batch_norm: bool) -> list[nn.Module]:
    """The VGG convolutional layers in torchvision's order, so state-dict keys match."""
    layers: list[nn.Module] = []
    in_channels = 3
    for c in cfg:
        if c == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(c, int)
        layers.append(nn.Conv2d(in_channels, c, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU(inplace=True))
        in_channels = c
    return layers


class VGGBackbone(nn.Sequential):
    """VGG-16(-BN) without its dense layers; returns pool-3, pool-4 and pool-5.

    An ``nn.Sequential`` of torchvision's layers, so its state-dict keys are torchvision's
    ``features.*`` once the model stores it as ``features``. ``width`` scales every layer.
    """

    strides = (8, 16, 32)

    def __init__(self, batch_norm: bool = True, width: float = 1.0) -> None:
        cfg = [c if c == "M" else scaled(c, width) for c in VGG16_CFG]
        super().__init__(*vgg_features(cfg, batch_norm))
        self.channels = (scaled(256, width), scaled(512, width), scaled(512, width))
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (N, 3, S, S) → [pool-3 (N, C3, S/8, S/8), pool-4 (…, S/16), pool-5 (…, S/32)]."""
        pools = []
        for layer in self:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pools.append(x)
        return pools[2:]


def scaled(channels: int, width: float) -> int:
    """Channels kept by the width multiplier (at least 1)."""
    return max(1, round(channels * width))


def imagenet_weights_file(backbone: str) -> Path:
    """Where torchvision's weights API caches the ImageNet file for ``backbone``."""
    url = _imagenet_weights(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def imagenet_state_dict(backbone: str, weights_file: Path | None) -> dict[str, Tensor]:
    """ImageNet state dict via torchvision's weights API (hub cache) or a local file."""
    if weights_file is not None:
        if not weights_file.is_file():
            raise AttnMelError(f"{weights_file}: pretrained weights file not found")
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(weights_file)
        try:  # weights_only: tensors only, no pickled code is executed
            with warnings.catch_warnings():  # torch's notes on odd pickles: the refusal says it
                warnings.simplefilter("ignore")
                return torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # any failure means an unusable file
            raise AttnMelError(weights_refusal(weights_file, exc)) from None
    cached = imagenet_weights_file(backbone)
    if not cached.is_file():
        raise AttnMelError(
            f"ImageNet weights for {backbone} are not in the torch hub cache (expected {cached}, "
            f"from {_imagenet_weights(backbone).url}); download that file there, pass its path "
            "with --pretrained-weights FILE, or train from scratch with --no-pretrained"
        )
    return _imagenet_weights(backbone).get_state_dict(progress=False, check_hash=True)
