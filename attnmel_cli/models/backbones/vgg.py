"""The VGG-16 / VGG-16-BN convolutional stack (torchvision's layer order and state-dict keys), a
width multiplier (its ImageNet weights are read by :mod:`attnmel_cli.io.pretrained`)."""

from __future__ import annotations

from torch import Tensor, nn

# torchvision's VGG-16 configuration "D": channels per conv, "M" = max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


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
