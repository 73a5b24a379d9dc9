"""`attnmel train` on a real ISIC 2017 subset: tiny width and input, a couple of epochs."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmel_cli.data.augment import AREA, ASPECT, random_view, resized_crop, strong_view
from attnmel_cli.data.manifest import data_fingerprint, read_manifest
from attnmel_cli.data.prepare import META_NAME
from attnmel_cli.data.sampler import OversamplingSampler
from attnmel_cli.data.train_set import TrainSet
from attnmel_cli.engine.setup import check_resumable
from attnmel_cli.engine.trainer import TrainInterrupted, train
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.io.model_checkpoint import load_checkpoint
from attnmel_cli.io.run_dir import BEST, LAST, METRICS, METRICS_COLUMNS, STATE
from attnmel_cli.io.run_state import RunState, flatten, unflatten


@pytest.fixture(scope="module")
def config(tiny_config):
    """This module's tiny runs: the shared ``tiny_config`` with epochs=2, seed=7."""
    return partial(tiny_config, epochs=2, seed=7)


def test_sampler_oversamples_melanoma_and_depends_only_on_seed_and_epoch() -> None:
    sampler = OversamplingSampler([1, 0, 0, 1, 0], factor=4, seed=5)
    order = list(sampler)
    assert len(order) == len(sampler) == 2 * 4 + 3
    counts = np.bincount([i for i, _ in order])
    assert counts.tolist() == [4, 1, 1, 4, 1]
    again = OversamplingSampler([1, 0, 0, 1, 0], factor=4, seed=5)
    assert list(again) == order
    again.set_epoch(1)
    assert list(again) != order


def test_random_view_moves_image_and_mask_together() -> None:
    image = torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8)
    planes = torch.cat([image, image[:1]])  # the "mask" is a copy of the first channel
    for seed in range(20):
        view = random_view(planes, 7, torch.Generator().manual_seed(seed))
        assert view.shape == (4, 7, 7) and torch.equal(view[0], view[3])


def test_strong_view_moves_image_and_mask_together_and_depends_only_on_its_seed() -> None:
    # a black-and-white pattern: the colour jitter keeps white above 127 and black below it
    mask = torch.zeros(100, 100, dtype=torch.uint8)
    mask[10:50, 20:80] = 1
    mask[65:, :30] = 1
    planes = torch.cat([(mask * 255).expand(3, -1, -1), mask[None]])
    views = [strong_view(planes, 64, torch.Generator().manual_seed(seed)) for seed in range(20)]
    for view in views:
        assert view.shape == (4, 64, 64) and view.dtype == torch.uint8
        assert set(view[3].unique().tolist()) <= {0, 1}
        agree = ((view[:3] > 127) == view[3].bool()).float().mean()
        assert agree > 0.98  # only edge pixels of the bilinear resize may differ
    assert len({v.sum().item() for v in views}) > 10  # the views differ
    again = strong_view(planes, 64, torch.Generator().manual_seed(3))
    assert torch.equal(again, views[3])
    rgb = strong_view(planes[:3], 64, torch.Generator().manual_seed(3))
    assert torch.equal(rgb, views[3][:3])  # no mask: the same image view


def test_resized_crop_window_stays_within_the_configured_area_and_aspect() -> None:
    r = 64
    rows = torch.arange(r, dtype=torch.uint8)[:, None].expand(r, r)
    probe = torch.stack([rows, rows.T, rows, rows, rows.T])  # masks: each pixel's row, column
    low = r * (AREA[0] / ASPECT[1]) ** 0.5 - 1  # smallest side: least area, most elongated
    for seed in range(40):
        view = resized_crop(probe, r, torch.Generator().manual_seed(seed))
        h = int(view[3].max()) - int(view[3].min()) + 1  # nearest resize keeps every index
        w = int(view[4].max()) - int(view[4].min()) + 1
        assert low <= h <= r and low <= w <= r
        assert AREA[0] * r * r * 0.9 <= h * w and ASPECT[0] * 0.9 <= w / h <= ASPECT[1] * 1.1


def test_resume_reads_an_option_the_interrupted_run_predates_as_its_default(
    config, prepared: Path, tmp_path: Path,
) -> None:
    now = config(prepared, tmp_path / "run", resume=True)
    saved = now.as_record()
    del saved["augment"]  # a run from before --augment: it used the paper's views
    state = RunState(epoch=1, best_auc=0.5, best_epoch=1, train_config=saved,
                     data_fingerprint="f", optimizer={}, scheduler={}, scaler={}, sampler={})
    check_resumable(state, now, "f")
    with pytest.raises(AttnMelError, match="augment: 'paper' → 'strong'"):
        check_resumable(state, replace(now, augment="strong"), "f")


def test_state_flattening_keeps_tensors_and_integer_keys() -> None:
    state = {"state": {0: {"momentum_buffer": torch.arange(3.0)}}, "param_groups": [{"lr": 0.1}]}
    tensors: dict[str, torch.Tensor] = {}
    back = unflatten(flatten(state, tensors, "optimizer"), tensors)
    assert list(back["state"]) == [0] and back["param_groups"] == [{"lr": 0.1}]
    assert torch.equal(back["state"][0]["momentum_buffer"], torch.arange(3.0))






@pytest.fixture(scope="module")
def uninterrupted(config, prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "straight"
    train(config(prepared, out, workers=1, cache_images=False))
    return out


def test_trains_and_writes_a_loadable_best_checkpoint(uninterrupted: Path) -> None:
    assert {p.name for p in uninterrupted.iterdir()} >= {BEST, LAST, STATE, METRICS}
    with (uninterrupted / METRICS).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == METRICS_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_auc"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    model, meta = load_checkpoint(uninterrupted / BEST)
    best = max(rows, key=lambda r: float(r["val_auc"]))
    assert meta.metrics["epoch"] == int(best["epoch"])
    assert meta.train_config["seed"] == 7 and meta.train_config["roi"] == "none"
    assert len(meta.data_fingerprint) == 64
    logits, maps = model(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 2) and maps["pool4"].shape == (1, 1, 4, 4)


def test_interrupted_run_resumes_to_the_uninterrupted_result(config,
    prepared: Path, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    run_metrics, assert_same_run, interrupt_at,
) -> None:
    out = tmp_path / "resumed"
    interrupt_at(6)  # 4 steps per epoch: the 2nd step of epoch 2
    with pytest.raises(TrainInterrupted, match="holds epoch 1"):
        train(config(prepared, out))
    monkeypatch.undo()
    assert [r["epoch"] for r in run_metrics(out)] == ["1"]
    # cached images in the main process here, decoded in a worker there: the same result
    train(config(prepared, out, resume=True))
    assert_same_run(out, uninterrupted)


def test_refuses_to_overwrite_a_run(config, prepared: Path, uninterrupted: Path) -> None:
    before = (uninterrupted / LAST).read_bytes()
    with pytest.raises(AttnMelError, match="already holds a run"):
        train(config(prepared, uninterrupted))
    with pytest.raises(AttnMelError, match="differ"):
        train(config(prepared, uninterrupted, resume=True, lr=0.5))
    assert (uninterrupted / LAST).read_bytes() == before


def test_roi_lesion_runs_and_force_replaces(config, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "lesion"
    (out).mkdir()
    (out / METRICS).write_text("old run\n")
    config = config(prepared, out, roi="lesion", epochs=1, force=True)
    result = train(config)
    row = result.history[0]
    assert 0 < row["train_dice3"] <= 1 and 0 < row["train_dice4"] <= 1
    assert row["train_loss"] > row["train_focal"]
    _, meta = load_checkpoint(out / BEST)
    assert meta.train_config["roi"] == "lesion"
    with pytest.raises(AttnMelError, match="needs --arch attnmel"):
        train(replace(config, arch="vgg16-gap", out=tmp_path / "x"))


def test_strong_augmentation_trains_with_a_lesion_roi_and_is_recorded(
    config, prepared: Path, tmp_path: Path,
) -> None:
    with pytest.raises(AttnMelError, match="unknown augment 'heavy'"):
        train(config(prepared, tmp_path / "bad", augment="heavy"))
    result = train(config(prepared, tmp_path / "strong", roi="lesion", epochs=1,
                          augment="strong"))
    assert 0 < result.history[0]["train_dice4"] <= 1
    _, meta = load_checkpoint(tmp_path / "strong" / BEST)
    assert meta.train_config["augment"] == "strong"


def test_background_roi_is_the_inverse_of_the_lesion_mask(prepared: Path) -> None:
    rows = read_manifest(prepared, "train")[:3]
    lesion = TrainSet(prepared, rows, 64, "lesion")
    background = TrainSet(prepared, rows, 64, "background")
    for index in range(3):
        image_l, roi_l, known_l, _ = lesion[index, 11]
        image_b, roi_b, known_b, _ = background[index, 11]
        assert torch.equal(image_l, image_b) and known_l and known_b
        assert roi_l.shape == (1, 64, 64) and torch.equal(roi_b, 1 - roi_l)


def test_dermo_roi_of_an_image_without_features_is_a_known_all_zero_map(prepared: Path) -> None:
    with_map, without = read_manifest(prepared, "train")[:2]
    rows = [replace(with_map, dermo_mask=with_map.lesion_mask), replace(without, dermo_mask=None)]
    dermo, lesion = TrainSet(prepared, rows, 64, "dermo"), TrainSet(prepared, rows, 64, "lesion")
    _, roi, known, _ = dermo[0, 3]
    assert known and torch.equal(roi, lesion[0, 3][1])
    _, roi, known, _ = dermo[1, 3]
    assert known and roi.shape == (1, 64, 64) and not roi.any()


def test_dermo_roi_without_any_dermo_map_is_refused(config, prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs dermoscopic-feature maps"):
        train(config(prepared, tmp_path / "dermo", roi="dermo"))


def test_cli_train_prints_the_best_checkpoint_and_guards_the_run_dir(
    prepared: Path, tmp_path: Path, invoke, restore_logging: None
) -> None:
    out = tmp_path / "cli-run"
    args = ["train", "--data", str(prepared), "--out", str(out), "--no-pretrained",
            "--width", "0.0625", "--image-size", "64", "--epochs", "1", "-b", "16", "-j", "0",
            "--device", "cpu"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / BEST)
    again = invoke(*args)
    assert again.exit_code == 1 and "already holds a run" in again.output


def test_a_run_records_its_data_crop_and_evaluate_warns_of_another_crop(
    config, prepared: Path, tmp_path: Path, invoke, restore_logging: None,
) -> None:
    whole = tmp_path / "whole"  # as `prepare --crop-fraction 1` records it
    shutil.copytree(prepared, whole)
    info = json.loads((whole / META_NAME).read_text())
    (whole / META_NAME).write_text(json.dumps({**info, "crop_fraction": 1.0}))
    train(config(whole, tmp_path / "run", epochs=1))
    _, meta = load_checkpoint(tmp_path / "run" / BEST)
    assert meta.crop_fraction == 1.0 and meta.preprocessing["crop_fraction"] == 1.0
    rows = read_manifest(prepared)
    assert meta.data_fingerprint == data_fingerprint(rows, 1.0) != data_fingerprint(rows)
    result = invoke("evaluate", "--data", prepared, "--split", "val", "-c",
                    tmp_path / "run" / BEST, "-f", "json")
    assert result.exit_code == 0, result.output
    assert "was prepared with --crop-fraction 0.8" in result.stderr
    result = invoke("evaluate", "--data", whole, "--split", "val", "-c",
                    tmp_path / "run" / BEST, "-f", "json")
    assert result.exit_code == 0 and "--crop-fraction" not in result.stderr
    (whole / META_NAME).write_text(json.dumps({**info, "crop_fraction": "all"}))
    bad = invoke("train", "--data", whole, "--out", tmp_path / "bad", "--no-pretrained",
                 "--width", "0.0625", "--image-size", "64", "-j", "0", "--device", "cpu")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert f"{whole / META_NAME}: crop_fraction 'all' is not a number in (0, 1]" in bad.stderr
