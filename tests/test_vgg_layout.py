"""Our VGG-16 backbones against torchvision's own: the same state-dict keys and shapes, so that
torchvision's ImageNet weights load as they are, and the same function once they are loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from attnmel_cli.io.pretrained import build_model

BACKBONES = {"vgg16_bn": torchvision.models.vgg16_bn, "vgg16": torchvision.models.vgg16}


def _shapes(state: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_features_have_torchvisions_keys_and_shapes(backbone: str) -> None:
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        theirs = BACKBONES[backbone](weights=None).state_dict()
        ours = {arch: build_model(arch, backbone, 1.0).state_dict()
                for arch in ("attnmel", "mel-cnn", "vgg16-gap", "vgg16")}
    for arch, state in ours.items():
        assert _shapes(state, "features.") == _shapes(theirs, "features."), arch
    # the dense VGG-16 variant keeps torchvision's classifier, with 2 outputs instead of 1,000
    dense, reference = _shapes(ours["vgg16"], "classifier."), _shapes(theirs, "classifier.")
    assert dense.keys() == reference.keys()
    assert {k: v for k, v in dense.items() if not k.startswith("classifier.6.")} == {
        k: v for k, v in reference.items() if not k.startswith("classifier.6.")
    }
    assert dense["classifier.6.weight"] == (2, 4096)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_torchvision_weights_load_and_compute_torchvisions_pool5(
    backbone: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    reference = make_layers(cfgs["D"], batch_norm=backbone == "vgg16_bn").eval()
    for module in reference.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{backbone}.pth"
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, path)
    model = build_model("attnmel", backbone, 1.0, weights_file=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pool3, pool4, pool5 = model.features(x)
        expected = reference(x)
    assert pool5.shape == expected.shape == (1, 512, 2, 2)
    assert torch.allclose(pool5, expected, atol=1e-5)
    assert pool3.shape == (1, 256, 8, 8) and pool4.shape == (1, 512, 4, 4)
