"""Training options beyond the paper's defaults, through the real loop on a real ISIC 2017
subset: the learning-rate schedules and passes per epoch, AdamW, cross-validation folds,
training on train + val, --init, --normalize, an EfficientNet-Lite backbone, and the flags that
TrainConfig generates."""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnmel_cli.cli.train import train_command
from attnmel_cli.config import TrainConfig
from attnmel_cli.data.folds import fold_split
from attnmel_cli.data.manifest import read_manifest
from attnmel_cli.data.sampler import OversamplingSampler
from attnmel_cli.engine.trainer import train
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.checkpoint import read_metadata, read_tensors
from attnmel_cli.io.model_checkpoint import load_checkpoint
from attnmel_cli.io.run_dir import BEST, LAST


@pytest.fixture(scope="module")
def config(tiny_config):
    """This module's tiny runs: ``tiny_config`` with 3 epochs of batch 8, nondeterministic."""
    return partial(tiny_config, epochs=3, batch_size=8, deterministic=False)


def test_every_trainconfig_field_is_a_train_flag() -> None:
    import inspect

    params = inspect.signature(train_command).parameters
    assert list(params) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert params["data"].default is inspect.Parameter.empty  # required
    assert params["lr"].default == TrainConfig.lr


def test_step_schedule_and_passes_per_epoch(config, prepared: Path, tmp_path: Path) -> None:
    """The lr column follows lr·decay^⌊(epoch − 1)/lr_step⌋; an epoch is `passes` passes."""
    result = train(config(prepared, tmp_path / "step", lr=0.02, lr_step=2, lr_decay=0.5,
                           passes_per_epoch=2))
    assert [h["lr"] for h in result.history] == pytest.approx([0.02, 0.02, 0.01])
    once, twice = OversamplingSampler([1, 0, 0], 4, 0), OversamplingSampler([1, 0, 0], 4, 0, 2)
    assert len(twice) == 2 * len(once) == 12
    assert np.bincount([i for i, _ in twice]).tolist() == [8, 2, 2]


def test_adamw_onecycle_follows_torchs_schedule(config, prepared: Path, tmp_path: Path) -> None:
    result = train(config(prepared, tmp_path / "cycle", optimizer="adamw", schedule="onecycle",
                           lr=1e-3, weight_decay=0.01))
    steps = (12 * 4 + 20) // 8  # melanoma ×4, ragged batch dropped
    reference = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3), max_lr=1e-3,
        total_steps=3 * steps)
    expected = []
    for _ in range(3):
        expected.append(reference.get_last_lr()[0])
        for _ in range(steps):
            reference.optimizer.step()
            reference.step()
    assert [h["lr"] for h in result.history] == pytest.approx(expected)
    assert result.history[-1]["lr"] < result.history[1]["lr"]


def test_folds_hold_out_one_fold_and_train_splits_train_val(
    config, prepared: Path, tmp_path: Path
) -> None:
    rows = read_manifest(prepared)
    fold = train(config(prepared, tmp_path / "fold", epochs=1, folds=2, fold=1))
    meta = read_metadata(tmp_path / "fold" / BEST)
    assert (meta.train_config["folds"], meta.train_config["fold"]) == (2, 1)
    assert math.isfinite(fold.history[0]["val_auc"])
    train_rows, held = fold_split(rows, 2, 1, seed=3)
    assert len(held) == 24 and len(train_rows) == 24

    both = train(config(prepared, tmp_path / "all", epochs=2, train_splits="train,val"))
    assert all(math.isnan(h["val_auc"]) for h in both.history)
    assert both.best_epoch == 2  # no validation: the last epoch
    best, _ = read_tensors(tmp_path / "all" / BEST)
    last, _ = read_tensors(tmp_path / "all" / LAST)
    assert all(torch.equal(best[k], last[k]) for k in last)
    with pytest.raises(AttnMelError, match="unknown split"):
        train(config(prepared, tmp_path / "bad", train_splits="train,tset"))


def test_init_fine_tunes_from_a_checkpoint(config, prepared: Path, tmp_path: Path) -> None:
    train(config(prepared, tmp_path / "first", epochs=1))
    start, _ = read_tensors(tmp_path / "first" / LAST)
    train(config(prepared, tmp_path / "tuned", epochs=1, lr=1e-12, init=tmp_path / "first" / LAST,
                  seed=99))
    tuned, _ = read_tensors(tmp_path / "tuned" / LAST)
    for key in ("features.0.weight", "attn4.W.weight", "classifier.weight"):
        torch.testing.assert_close(tuned[key], start[key], rtol=0, atol=1e-6)
    with pytest.raises(AttnMelError, match="same model"):
        train(config(prepared, tmp_path / "other", arch="mel-cnn",
                      init=tmp_path / "first" / LAST))


def test_normalize_dataset_and_explicit_are_stored(config, prepared: Path, tmp_path: Path) -> None:
    train(config(prepared, tmp_path / "ds", epochs=1, normalize="dataset"))
    meta = read_metadata(tmp_path / "ds" / BEST)
    pixels = np.concatenate([
        np.asarray(Image.open(prepared / r.image).convert("RGB"), np.float64).reshape(-1, 3)
        for r in read_manifest(prepared) if r.split == "train"]) / 255.0
    np.testing.assert_allclose(meta.mean, pixels.mean(0), atol=1e-5)
    np.testing.assert_allclose(meta.std, pixels.std(0), atol=1e-5)
    train(config(prepared, tmp_path / "ex", epochs=1, normalize="0.5,0.25"))
    meta = read_metadata(tmp_path / "ex" / BEST)
    assert (meta.mean, meta.std) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(AttnMelError, match="--normalize"):
        train(config(prepared, tmp_path / "no", normalize="0.5"))


def test_efficientnet_lite_run_records_its_backbone_and_preprocessing(config,
    prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path.resolve() / "lite"
    train(config(prepared, out, epochs=1, backbone="efficientnet_lite0", width=1.0,
                  arch="attnmel", roi="lesion", optimizer="adamw", lr=1e-3))
    model, meta = load_checkpoint(out / BEST)
    assert (meta.backbone, meta.strides) == ("efficientnet_lite0", (8, 16, 32))
    assert meta.mean == meta.std == (0.5, 0.5, 0.5)  # timm's data config for tf_efficientnet_lite
    assert meta.train_config["out"] == "lite"  # the training machine's folders are not recorded
    assert not any(str(v).startswith("/") for v in meta.train_config.values())
    _, maps = model(torch.zeros(1, 3, 64, 64))
    assert set(maps) == {"pool3", "pool4"}
