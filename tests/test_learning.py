"""Training does what it claims on real ISIC 2017 images: a tiny model learns, the weight
averaging of ``--average-last`` is the mean of the kept epochs with batch norm recomputed, every
``--roi`` goes through the real loop, and training normalises its inputs as scoring does."""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.manifest import read_manifest, write_manifest
from attnmel_cli.data.tensors import prepared_to_input, to_uint8_tensor
from attnmel_cli.data.transforms import centre_crop
from attnmel_cli.engine.averaging import average_state_dicts, recalibrate_batch_norm
from attnmel_cli.engine.epoch import Step
from attnmel_cli.engine.inference import score_paths
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.engine.trainer import train
from attnmel_cli.evaluation.metrics import roc_auc
from attnmel_cli.io.checkpoint import read_tensors
from attnmel_cli.io.model_checkpoint import load_checkpoint
from attnmel_cli.io.run_dir import AVERAGED, LAST, epoch_name

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")




# ── it learns ─────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def config(tiny_config):
    """This module's tiny runs: the shared ``tiny_config`` with its defaults."""
    return partial(tiny_config)


def test_a_tiny_model_overfits_a_tiny_real_batch(config, isic2017_subset, tmp_path: Path) -> None:
    """A tiny model learns 16 training images: its loss falls to under half, and it ranks and
    separates the melanomas from the others by margins that one image pair scored the other
    way round on another CPU (its own rounding, its own kernels) cannot cross: AUC ≥ 0.8 (a
    misordered pair costs 1/64) and a gap of at least 0.3 between the classes' mean scores."""
    data = isic2017_subset({"Training": (8, 8), "Validation": (2, 2)})
    config = config(data, tmp_path / "run", epochs=100, batch_size=8, lr=0.02, lr_step=1000,
                     oversample=1, seed=0)
    history = train(config).history
    losses = [row["train_loss"] for row in history]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses
    model, meta = load_checkpoint(tmp_path / "run" / LAST)
    rows = read_manifest(data, "train")
    scored = list(score_paths(model, meta, [data / r.image for r in rows],
                              ScoringOptions(workers=0, prepared=True),
                              device=torch.device("cpu")))
    probs = np.array([s.p_melanoma for s in scored])
    labels = np.array([r.label for r in rows])
    gap = probs[labels == 1].mean() - probs[labels == 0].mean()
    assert roc_auc(labels, probs) >= 0.8 and gap >= 0.3, (labels, probs.round(2))


# ── --average-last ────────────────────────────────────────────────────────────────────────────


def test_average_state_dicts_is_the_mean_and_keeps_integer_buffers_of_the_last() -> None:
    states = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)},
              {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}]
    averaged = average_state_dicts(states)
    assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0]))
    assert averaged["n"].item() == 7 and averaged["n"].dtype == torch.int64


def test_recalibrated_batch_norm_holds_the_mean_of_the_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    model[1].running_mean.fill_(5.0)  # stale statistics, to be replaced
    batches = [torch.randn(6, 3, 5, 5) * (i + 1) + i for i in range(3)]
    seen = recalibrate_batch_norm(model, batches, model)
    with torch.no_grad():
        outs = [model[0](b) for b in batches]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    variances = torch.stack([o.transpose(0, 1).flatten(1).var(1) for o in outs]).mean(0)
    bn = model[1]
    assert seen == 3 and not model.training and bn.momentum == 0.1
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert torch.allclose(bn.running_var, variances, rtol=1e-4)


def test_average_last_saves_the_mean_of_the_kept_epochs_with_batch_norm_recomputed(config,
    prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "averaged"
    train(config(prepared, out, epochs=3, average_last=2))
    assert not (out / epoch_name(1)).exists()  # only the last two epochs are kept
    kept = [read_tensors(out / epoch_name(e))[0] for e in (2, 3)]
    averaged, _ = read_tensors(out / AVERAGED)
    _, meta = load_checkpoint(out / AVERAGED)
    assert meta.metrics["averaged_epochs"] == [2, 3] and 0 <= meta.metrics["val_auc"] <= 1
    assert averaged.keys() == kept[0].keys()
    bn_keys = [k for k in averaged if k.endswith(BN_STATS)]
    assert bn_keys
    for key, value in averaged.items():
        if key not in bn_keys:
            assert torch.allclose(value, (kept[0][key] + kept[1][key]) / 2, atol=1e-6), key
    steps = [k for k in bn_keys if k.endswith("num_batches_tracked")]
    for key in steps:  # one pass over the training data, not three epochs' worth
        assert averaged[key].item() > 0 and averaged[key].item() * 3 == kept[1][key].item()
    means = [k for k in bn_keys if k.endswith("running_mean")]
    assert any(
        not torch.allclose(averaged[k], (kept[0][k] + kept[1][k]) / 2, atol=1e-4) for k in means
    )


# ── --roi through the training loop ───────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def with_dermo(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared dir with a synthetic dermo map per image: a copy of its lesion mask."""
    copy = tmp_path_factory.mktemp("dermo") / "prepared"
    shutil.copytree(prepared, copy)
    (copy / "masks" / "dermo").mkdir(parents=True, exist_ok=True)
    rows = read_manifest(copy)
    for row in rows:
        assert row.lesion_mask is not None
        shutil.copy(copy / row.lesion_mask, copy / "masks" / "dermo" / f"{row.image_id}.png")
    write_manifest(copy, [replace(r, dermo_mask=f"masks/dermo/{r.image_id}.png") for r in rows])
    return copy


def test_roi_dermo_and_background_train_through_the_real_loop(config,
    with_dermo: Path, tmp_path: Path
) -> None:
    runs = {roi: train(config(with_dermo, tmp_path / roi, roi=roi)).history[0]
            for roi in ("lesion", "dermo", "background")}
    for roi, row in runs.items():
        assert 0 < row["train_dice3"] <= 1 and 0 < row["train_dice4"] <= 1, roi
        assert row["train_loss"] > row["train_focal"], roi
        _, meta = load_checkpoint(tmp_path / roi / LAST)
        assert meta.train_config["roi"] == roi
    # dermo maps equal to the lesion masks: the same references, so the very same run
    keys = ("train_loss", "train_focal", "train_dice3", "train_dice4", "val_loss", "val_auc")
    assert [runs["dermo"][k] for k in keys] == [runs["lesion"][k] for k in keys]
    # the background is the inverse mask: other references, other Dice terms
    assert runs["background"]["train_dice4"] != runs["lesion"]["train_dice4"]


# ── one normalisation ─────────────────────────────────────────────────────────────────────────


def test_training_and_scoring_normalise_a_prepared_image_alike(prepared: Path) -> None:
    pre = PreprocessConfig(image_size=64, mean=(0.682, 0.5312, 0.4736), std=(0.084, 0.114, 0.1282))
    row = read_manifest(prepared, "train")[0]
    img = load_photo(prepared / row.image)
    scored = prepared_to_input(img, pre)  # what predict / evaluate / validation feed the network
    view = centre_crop(img.resize((pre.resize, pre.resize), Image.BILINEAR), pre.image_size)
    step = Step(None, None, None, torch.device("cpu"), pre, None)  # type: ignore[arg-type]
    trained = step.normalise(to_uint8_tensor(view)[None])[0]  # a training batch of that view
    assert trained.dtype == scored.dtype == torch.float32
    assert torch.equal(trained.contiguous(), scored)
    imagenet = prepared_to_input(img, replace(pre, mean=(0.485, 0.456, 0.406),
                                              std=(0.229, 0.224, 0.225)))
    assert not torch.allclose(imagenet, scored)  # the checkpoint's mean/std are used
