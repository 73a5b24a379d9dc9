"""Checkpoints: safetensors + JSON metadata; anything else is refused, nothing is unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attnmel_cli.errors import AttnMelError, CheckpointError
from attnmel_cli.io.checkpoint import (
    FORMAT,
    CheckpointMeta,
    read_metadata,
    read_tensors,
    write_tensors,
)
from attnmel_cli.io.default_model import DEFAULT_CHECKPOINT_ENV, resolve_checkpoint
from attnmel_cli.io.model_checkpoint import load_checkpoint, save_checkpoint
from attnmel_cli.models.attnmel import ARCHS
from attnmel_cli.models.registry import build_model

WIDTH = 0.0625
SIZE = 64


def _meta(arch: str = "attnmel", backbone: str = "vgg16_bn", **kw) -> CheckpointMeta:
    return CheckpointMeta(arch=arch, backbone=backbone, width=WIDTH, image_size=SIZE, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "model.safetensors"
    return save_checkpoint(path, build_model("attnmel", "vgg16_bn", WIDTH), _meta())


@pytest.mark.parametrize("backbone", ["vgg16_bn", "vgg16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_identical_outputs_and_metadata(tmp_path, arch, backbone) -> None:
    torch.manual_seed(1)
    model = build_model(arch, backbone, WIDTH)
    if backbone == "vgg16_bn":  # non-trivial running statistics must survive too
        model.train()
        with torch.no_grad():
            model(torch.randn(4, 3, SIZE, SIZE) * 2 + 0.5)
    model.eval()
    meta = _meta(
        arch,
        backbone,
        train_config={"lr": 1e-4, "seed": 3, "loss": "focal"},
        metrics={"val_auc": 0.81},
        data_fingerprint="sha256:abc",
    )
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    assert read_metadata(path) == meta
    assert not loaded.training
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        (a, maps_a), (b, maps_b) = model(x), loaded(x)
    assert torch.equal(a, b)
    assert maps_a.keys() == maps_b.keys()
    for key in maps_a:
        assert torch.equal(maps_a[key], maps_b[key])


def test_header_holds_the_documented_metadata(saved) -> None:
    _, header = read_tensors(saved)
    for key in (
        "format",
        "format_version",
        "arch",
        "backbone",
        "width",
        "image_size",
        "classes",
        "mean",
        "std",
        "preprocessing",
        "train_config",
        "metrics",
        "data_fingerprint",
        "attnmel_version",
    ):
        assert key in header, key
    assert header["format"] == FORMAT
    assert json.loads(header["preprocessing"])["crop_fraction"] == 0.8


def test_save_refuses_to_overwrite_when_asked(saved, tmp_path) -> None:
    target = tmp_path / "x.safetensors"
    target.write_bytes(b"keep")
    with pytest.raises(AttnMelError, match="already exists"):
        save_checkpoint(target, build_model("attnmel", "vgg16_bn", WIDTH), _meta(), overwrite=False)
    assert target.read_bytes() == b"keep"


class _Payload:
    """Unpickling this creates ``marker``: proof that pickled code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors", ".ckpt"])
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_pickle_is_refused_without_being_executed(tmp_path, suffix, how) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    payload = {"state_dict": {"w": torch.zeros(1)}, "x": _Payload(str(marker))}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a safetensors file" in message and "never unpickles" in message
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_metadata(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 4, 8, 100, 0.5])
def test_truncated_file_refused(saved, tmp_path, keep) -> None:
    data = saved.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=r"not a safetensors file \(truncated"):
        load_checkpoint(path)


def _tamper(saved: Path, tmp_path: Path, **changes: str | None) -> Path:
    tensors, header = read_tensors(saved)
    for key, value in changes.items():
        if value is None:
            header.pop(key)
        else:
            header[key] = value
    return write_tensors(tmp_path / "tampered.safetensors", tensors, header)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"width": "0.125"}, "do not match"),
        ({"arch": "vgg16-gap"}, "do not match"),
        ({"arch": "mel-cnn"}, "do not match"),
        ({"backbone": "vgg16"}, "do not match"),
        ({"format": None}, "not an attnmel checkpoint"),
        ({"format": "something-else"}, "not an attnmel checkpoint"),
        ({"arch": "resnet50"}, "unknown arch"),
        ({"width": "2"}, "width"),
        ({"image_size": "100"}, "multiple of 32"),
        ({"image_size": "big"}, "invalid attnmel checkpoint metadata"),
        ({"classes": "not json"}, "invalid attnmel checkpoint metadata"),
        ({"mean": "[0.5]"}, "wrong length"),
        ({"arch": None}, "invalid attnmel checkpoint metadata"),
        ({"format_version": "99"}, "newer"),
    ],
)
def test_tampered_metadata_refused(saved, tmp_path, changes, expected) -> None:
    path = _tamper(saved, tmp_path, **changes)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_tensors_removed_or_reshaped_refused(saved, tmp_path) -> None:
    tensors, header = read_tensors(saved)
    tensors.pop("classifier.bias")
    tensors["attn3.W.weight"] = torch.zeros(1, 1, 1, 1)
    tensors["extra"] = torch.zeros(1)
    path = write_tensors(tmp_path / "t.safetensors", tensors, header)
    with pytest.raises(CheckpointError, match="do not match") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "missing classifier.bias" in message and "unexpected extra" in message
    assert "wrong shape attn3.W.weight" in message


def test_plain_safetensors_without_attnmel_metadata_refused(tmp_path) -> None:
    state = build_model("attnmel", "vgg16_bn", WIDTH).state_dict()
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(plain))
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    for path in (plain, other):
        with pytest.raises(
            CheckpointError, match="a safetensors file but not an attnmel checkpoint"
        ):
            load_checkpoint(path)


def test_missing_file_and_directory_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_no_default_model_is_said_clearly(tmp_path, monkeypatch, saved) -> None:
    monkeypatch.setenv(DEFAULT_CHECKPOINT_ENV, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="no default model is installed"):
        resolve_checkpoint(None)
    monkeypatch.setenv(DEFAULT_CHECKPOINT_ENV, str(saved))
    assert resolve_checkpoint(None) == saved
    assert resolve_checkpoint(tmp_path / "given.safetensors") == tmp_path / "given.safetensors"
