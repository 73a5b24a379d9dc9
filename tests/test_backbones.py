"""timm backbones and the offline EfficientNet-Lite ImageNet weights (issue 12, parts 1–2).

The weights tests skip, naming the pip command, when a weights package is absent; the parity test
skips when the ``efficientnet-lite-pytorch`` reference code is absent (CI installs both).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmel_cli.errors import AttnMelError

timm = pytest.importorskip("timm", reason="timm is not installed (pip install timm)")

from attnmel_cli.io import lite_weights as el  # noqa: E402
from attnmel_cli.models.backbones.timm import (  # noqa: E402
    TimmBackbone,
    data_config,
    resolve_timm_name,
)

LITES = tuple(el.PACKAGES)  # efficientnet_lite0, 1, 2
MAPPED_TENSORS = {"efficientnet_lite0": 247, "efficientnet_lite1": 322, "efficientnet_lite2": 322}
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _need_weights(backbone: str) -> None:
    dist, module, _ = el.PACKAGES[backbone]
    pytest.importorskip(
        module, reason=f"{dist} is not installed (pip install {dist}=={el.PACKAGE_VERSION})"
    )


def _one_line(e: pytest.ExceptionInfo[AttnMelError]) -> str:
    message = str(e.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converted weights go to a per-session cache, never to the user's ~/.cache."""
    root = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))


@pytest.fixture(scope="module")
def classifiers() -> dict[str, torch.nn.Module]:
    """Memo of timm's full ImageNet classifiers with the mapped weights (eval mode)."""
    return {}


def _classifier(classifiers: dict[str, torch.nn.Module], backbone: str) -> torch.nn.Module:
    if backbone not in classifiers:
        model = timm.create_model(resolve_timm_name(backbone), pretrained=False, num_classes=1000)
        model.load_state_dict(el.imagenet_state_dict(backbone), strict=True)
        classifiers[backbone] = model.eval()
    return classifiers[backbone]


# ── the mapping ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("backbone", LITES)
def test_every_packaged_tensor_maps_with_its_shape(backbone: str) -> None:
    _need_weights(backbone)
    path, _ = el.verified_weights_file(backbone)
    source = el.load_source_state_dict(path)
    target = el.timm_reference_state(backbone)
    mapped = el.map_state_dict(source, target, origin=path.name)

    real = [k for k in source if not k.endswith("num_batches_tracked")]
    assert len(real) == MAPPED_TENSORS[backbone]
    assert list(mapped) == list(target)  # every key of the full classifier, in order
    targets = [k for k in target if not k.endswith("num_batches_tracked")]
    for src_key, dst_key in zip(real, targets, strict=True):
        assert mapped[dst_key].shape == target[dst_key].shape == source[src_key].shape
        assert torch.equal(mapped[dst_key], source[src_key])
        assert mapped[dst_key].dtype == torch.float32
    for head in ("conv_head.weight", "bn2.running_var", "classifier.weight", "classifier.bias"):
        assert head in mapped
    assert mapped["classifier.weight"].shape[0] == 1000


def test_mapping_mismatch_names_the_file_and_the_first_bad_tensor() -> None:
    target = {"a.weight": torch.empty(4, 3), "a.bias": torch.empty(4), "b.weight": torch.empty(2)}
    good = {"x.weight": torch.ones(4, 3), "x.bias": torch.ones(4), "y.weight": torch.ones(2)}
    assert set(el.map_state_dict(good, target, origin="w.pth")) == set(target)

    with pytest.raises(AttnMelError) as e:
        el.map_state_dict({**good, "y.weight": torch.ones(3)}, target, origin="w.pth")
    message = _one_line(e)
    assert "w.pth" in message and "y.weight" in message and "b.weight" in message
    with pytest.raises(AttnMelError) as e:
        el.map_state_dict({"x.weight": torch.ones(4, 3)}, target, origin="w.pth")
    assert "w.pth" in _one_line(e) and "1 tensors" in str(e.value)
    swapped = {"x.bias": torch.ones(4), "x.weight": torch.ones(4, 3), "y.weight": torch.ones(2)}
    with pytest.raises(AttnMelError, match=r"x\.bias"):
        el.map_state_dict(swapped, target, origin="w.pth")


# ── the mapped network is the reference network ──────────────────────────────────────────────


@pytest.mark.parametrize("backbone", LITES)
def test_logits_match_the_reference_implementation(
    backbone: str, classifiers: dict[str, torch.nn.Module]
) -> None:
    _need_weights(backbone)
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="the reference code is not installed (pip install efficientnet-lite-pytorch==0.1.0)",
    )
    name = backbone.replace("_", "-")  # efficientnet-lite0
    ref = reference.EfficientNet.from_name(name)
    source = torch.load(el.weights_file(backbone), map_location="cpu", weights_only=True)
    ref.load_state_dict(source, strict=True)
    ref.eval()
    size = reference.EfficientNet.get_image_size(name)  # its 'same' padding is static for this
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = _classifier(classifiers, backbone)(x), ref(x)
    assert ours.shape == theirs.shape == (2, 1000)
    assert theirs.std() > 0.5  # real logits, not a degenerate output
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("backbone", LITES)
@pytest.mark.parametrize(("photo", "classes"), [("chelsea", CAT_CLASSES), ("coffee", [ESPRESSO])])
def test_real_photo_top5_has_the_right_imagenet_class(
    backbone: str, photo: str, classes: range | list[int], classifiers: dict[str, torch.nn.Module]
) -> None:
    _need_weights(backbone)
    skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    from skimage.transform import resize

    config = data_config(resolve_timm_name(backbone))
    size = config["input_size"][1]
    image = resize(getattr(skdata, photo)(), (size, size), order=3, anti_aliasing=True)  # [0, 1]
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = _classifier(classifiers, backbone)((x - mean) / std).topk(5).indices[0].tolist()
    assert set(top5) & set(classes), f"{photo}: top-5 {top5} misses {list(classes)}"


# ── weights: provenance, integrity, missing package, cache ────────────────────────────────────


@pytest.mark.parametrize("backbone", LITES)
def test_provenance(backbone: str) -> None:
    _need_weights(backbone)
    info = el.weights_provenance(backbone)
    file, sha = el.WEIGHT_FILES[backbone]
    assert info == {
        "package": el.PACKAGES[backbone][0],
        "version": el.PACKAGE_VERSION,
        "file": file,
        "sha256": sha,
        "license": "Apache-2.0",
    }
    assert sha.startswith(file.rsplit("-", 1)[1].removesuffix(".pth"))
    json.dumps(info)


class _Payload:
    """Unpickling this would create a file: a stand-in for code hidden in a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_weights_file_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    bad = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.ones(1), "payload": _Payload(marker)}, bad)
    with pytest.raises(AttnMelError) as e:
        el.load_source_state_dict(bad)
    assert "weights.pth" in _one_line(e)
    assert not marker.exists()


def test_altered_weights_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_weights("efficientnet_lite0")
    data = bytearray(el.weights_file("efficientnet_lite0").read_bytes())
    data[-100] ^= 0xFF
    altered = tmp_path / "efficientnet-lite0-57934424.pth"
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(el, "weights_file", lambda backbone: altered)
    with pytest.raises(AttnMelError) as e:
        el.imagenet_state_dict("efficientnet_lite0", cache=False)
    message = _one_line(e)
    assert "sha256" in message and "pip install --force-reinstall" in message


@pytest.mark.parametrize("backbone", LITES)
def test_missing_package_error_gives_the_pip_command(
    backbone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist, module, _ = el.PACKAGES[backbone]
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(AttnMelError) as e:
        el.imagenet_state_dict(backbone)
    message = _one_line(e)
    assert f"pip install {dist}==0.1.0" in message
    assert "pip install '.[pretrained]'" in message
    with pytest.raises(AttnMelError, match="pip install"):
        el.weights_provenance(backbone)


def test_unknown_weights_backbone() -> None:
    with pytest.raises(AttnMelError) as e:
        el.imagenet_state_dict("timm:resnet18")
    assert "efficientnet_lite0" in _one_line(e)


def test_converted_weights_are_cached_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_weights("efficientnet_lite0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh = el.imagenet_state_dict("efficientnet_lite0")
    files = list((tmp_path / "attnmel").iterdir())
    assert [f.suffix for f in files] == [".safetensors"]  # no temp file left behind

    def no_pth(path: Path) -> dict[str, torch.Tensor]:
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(el, "load_source_state_dict", no_pth)
        cached = el.imagenet_state_dict("efficientnet_lite0")
    assert list(cached) == list(fresh)
    assert all(torch.equal(cached[k], fresh[k]) for k in fresh)

    files[0].write_bytes(b"not a safetensors file")  # a damaged cache is rebuilt
    again = el.imagenet_state_dict("efficientnet_lite0")
    assert all(torch.equal(again[k], fresh[k]) for k in fresh)
    assert files[0].stat().st_size > 1_000_000


# ── TimmBackbone ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("backbone", "channels"),
    [("efficientnet_lite0", (40, 112, 320)), ("timm:mobilenetv3_small_050", (16, 24, 288))],
)
def test_backbone_returns_three_maps_at_strides_8_16_32(
    backbone: str, channels: tuple[int, int, int]
) -> None:
    module = TimmBackbone(resolve_timm_name(backbone)).eval()
    assert module.strides == (8, 16, 32)
    assert module.channels == channels
    with torch.no_grad():
        maps = module(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(channels, (8, 16, 32), strict=True)
    ]


def test_backbone_strides_are_configurable() -> None:
    module = TimmBackbone("tf_efficientnet_lite0", strides=(4, 8, 16))
    assert module.strides == (4, 8, 16) and module.channels == (24, 40, 112)
    maps = module(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [16, 8, 4]


def test_backbone_without_the_strides_is_refused() -> None:
    with pytest.raises(AttnMelError) as e:
        TimmBackbone("vit_tiny_patch16_224")  # every stage at stride 16
    message = _one_line(e)
    assert "vit_tiny_patch16_224" in message and "stride 8" in message
    with pytest.raises(AttnMelError, match="increasing"):
        TimmBackbone("tf_efficientnet_lite0", strides=(16, 8, 32))


def test_backbone_without_features_only_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_features(name: str, **kwargs: object) -> None:
        raise RuntimeError(f"features_only not implemented for {name}")

    monkeypatch.setattr(timm, "create_model", no_features)
    with pytest.raises(AttnMelError) as e:
        TimmBackbone("resnet18")
    message = _one_line(e)
    assert "resnet18" in message and "features_only" in message
    with pytest.raises(AttnMelError) as e:
        TimmBackbone("no_such_model")
    assert "unknown timm model 'no_such_model'" in _one_line(e)


def test_load_into_backbone_fills_every_key() -> None:
    _need_weights("efficientnet_lite0")
    module = TimmBackbone("tf_efficientnet_lite0")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    el.load_into_backbone(module, "efficientnet_lite0")
    weights = el.imagenet_state_dict("efficientnet_lite0")
    own = module.body.state_dict()
    assert set(own) <= set(weights)
    assert set(weights) - set(own) == {
        k for k in weights if k.split(".")[0] in ("conv_head", "bn2", "classifier")
    }
    for k, v in own.items():
        assert torch.equal(v, weights[k]), k
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    real = {k for k in before if not k.endswith("num_batches_tracked")}
    assert changed == real  # every weight and statistic came from the file
    assert len(real) == MAPPED_TENSORS["efficientnet_lite0"] - 7  # not conv_head, bn2, classifier


def test_load_into_backbone_reports_missing_and_wrong_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _need_weights("efficientnet_lite0")
    module = TimmBackbone("tf_efficientnet_lite0")
    with pytest.raises(AttnMelError) as e:
        el.load_into_backbone(module, "efficientnet_lite1")
    assert "tf_efficientnet_lite1" in _one_line(e)

    full = el.imagenet_state_dict("efficientnet_lite0")
    partial = {k: v for k, v in full.items() if not k.startswith("blocks.6.")}
    monkeypatch.setattr(el, "imagenet_state_dict", lambda backbone, cache=True: partial)
    with pytest.raises(AttnMelError) as e:
        el.load_into_backbone(module, "efficientnet_lite0")
    assert "blocks.6.0.conv_pw.weight" in _one_line(e)


# ── names and data configs ────────────────────────────────────────────────────────────────────


def test_resolve_timm_name() -> None:
    for i in (0, 1, 2):
        assert resolve_timm_name(f"efficientnet_lite{i}") == f"tf_efficientnet_lite{i}"
    assert resolve_timm_name("timm:resnet18") == "resnet18"
    assert resolve_timm_name("timm:resnet18.a1_in1k") == "resnet18.a1_in1k"
    for bad in ("efficientnet_lite4", "resnet18", ""):
        with pytest.raises(AttnMelError) as e:
            resolve_timm_name(bad)
        assert "efficientnet_lite0" in _one_line(e) and "timm:MODEL" in str(e.value)
    with pytest.raises(AttnMelError) as e:
        resolve_timm_name("timm:")
    _one_line(e)
    with pytest.raises(AttnMelError) as e:
        resolve_timm_name("timm:resnet_18")
    assert "resnet_18" in _one_line(e) and "timm:resnet18" in str(e.value)


def test_data_config_is_timms_as_plain_types() -> None:
    config = data_config("tf_efficientnet_lite0")
    assert config == {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "input_size": [3, 224, 224],
        "interpolation": "bicubic",
        "crop_pct": 0.875,
    }
    assert json.loads(json.dumps(config)) == config
    resnet = data_config("resnet18")
    model = timm.create_model("resnet18", pretrained=False)
    expected = timm.data.resolve_model_data_config(model)
    assert resnet["mean"] == pytest.approx(list(expected["mean"]))
    assert resnet["input_size"] == list(expected["input_size"])


def test_importing_the_backbones_does_not_import_timm() -> None:
    code = (
        "import sys; import attnmel_cli.io.lite_weights, "
        "attnmel_cli.models.backbones.timm; print('timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
