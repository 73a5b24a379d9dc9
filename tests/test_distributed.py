"""Data-parallel runs under torchrun (gloo on this CPU), sharded scoring, and the GPU path.

The torchrun tests start real ``torchrun --standalone --nproc_per_node 2 -m attnmel_cli …``
processes on a prepared 48-image ISIC 2017 subset with a width-1/16, 64-pixel model.

Why two processes train like one: ``--batch-size`` is the global batch, and
``ShardedOversamplingSampler`` interleaves the single process's epoch order, so every step sees
the same 16 images with the same augmentation seeds (per-item seeds); DDP averages the two
halves' gradients, which is the gradient of the batch mean the single process takes. With a
backbone without batch norm (``vgg16``: batch norm would see 8 images per process instead of
16) the runs differ only by floating-point summation order (~1e-7 per step), so the validation
AUC must be the same up to 1e-6 (one discordantly ordered pair would move it by 1/60) and the
losses and weights agree to 1e-5.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmel_cli.config import TrainConfig
from attnmel_cli.data.image_files import shard
from attnmel_cli.data.sampler import OversamplingSampler, ShardedOversamplingSampler
from attnmel_cli.engine.distributed import SINGLE, Dist, from_env, make_sampler
from attnmel_cli.engine.trainer import train
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.checkpoint import read_tensors
from attnmel_cli.io.model_checkpoint import load_checkpoint
from attnmel_cli.io.run_dir import BEST, LAST, METRICS

SUBSET = {"Training": (12, 20), "Validation": (6, 10)}  # (melanoma, other) per split
TINY = ["--no-pretrained", "--width", "0.0625", "--image-size", "64", "-b", "16", "--seed", "7",
        "--deterministic", "--device", "cpu", "-j", "0", "--backbone", "vgg16"]

pytestmark = pytest.mark.usefixtures("restore_logging")


# -- pure parts ------------------------------------------------------------------------------

def test_ranks_together_draw_the_single_process_batches() -> None:
    labels = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0]  # 3 melanoma × 4 + 7 = 19 draws per epoch
    single = OversamplingSampler(labels, 4, seed=3)
    ranks = [ShardedOversamplingSampler(labels, 4, 3, rank=r, world=2, batch_size=4)
             for r in range(2)]
    for epoch in (0, 1):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        whole, parts = list(single), [list(r) for r in ranks]
        assert [len(p) for p in parts] == [len(r) for r in ranks] == [8, 8]  # ragged 3 dropped
        for k in range(4):  # global step k = rank 0's and rank 1's k-th batch of 2
            step = parts[0][2 * k:2 * k + 2] + parts[1][2 * k:2 * k + 2]
            assert sorted(step) == sorted(whole[4 * k:4 * k + 4])
        if epoch == 0:
            first = parts[0]
    assert parts[0] != first  # reshuffled every epoch
    # an epoch shorter than one batch is padded so that both ranks take one step
    short = [ShardedOversamplingSampler(labels, 4, 3, rank=r, world=2, batch_size=32)
             for r in range(2)]
    drawn = [x for s in short for x in s]
    single.set_epoch(0)
    assert [len(s) for s in short] == [10, 10] and len(drawn) == 20
    assert set(drawn) == set(single)  # all 19 draws, one of them twice
    with pytest.raises(ValueError):
        ShardedOversamplingSampler(labels, 4, 3, rank=0, world=3, batch_size=4)


def test_rank_blocks_are_the_shard_blocks() -> None:
    for n in range(9):
        items = [str(i) for i in range(n)]
        for world in (1, 2, 3, 4):
            blocks = [items[slice(*Dist(rank=r, world=world).bounds(n))] for r in range(world)]
            assert blocks == [shard(items, r, world) for r in range(world)]


def test_environment_and_batch_checks() -> None:
    assert from_env({}) is SINGLE and from_env({"WORLD_SIZE": "1", "RANK": "0"}) is SINGLE
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    d = from_env(env)
    assert (d.rank, d.world, d.local_rank, d.local_world, d.is_main) == (3, 4, 1, 2, False)
    assert d.local_batch(32) == 8 and d.workers(7) == 3
    with pytest.raises(AttnMelError, match="divisible"):
        d.local_batch(30)
    with pytest.raises(AttnMelError, match="torchrun"):
        from_env({"WORLD_SIZE": "2"})
    assert type(make_sampler(SINGLE, [0, 1], 4, 0, 2)) is OversamplingSampler
    # outside torchrun every collective is the identity
    assert SINGLE.gather([1, 2]) == [1, 2] and SINGLE.on_main(lambda: 5) == 5


# -- torchrun with gloo ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(isic2017_subset) -> Path:
    """32 training and 16 validation images of ISIC 2017, prepared."""
    return isic2017_subset(SUBSET)


def _torchrun(*args: str | Path, nproc: int = 2, stdin: str | None = None,
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "attnmel_cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, input=stdin, timeout=600)


def _metrics(run: Path) -> list[dict[str, float]]:
    with (run / METRICS).open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def one_process(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 2 epochs in this process."""
    out = tmp_path_factory.mktemp("runs") / "one"
    train(TrainConfig(data=prepared, out=out, backbone="vgg16", pretrained=False, width=0.0625,
                      image_size=64, epochs=2, batch_size=16, seed=7, deterministic=True,
                      device="cpu", workers=0))
    return out


def _assert_same_run(one: Path, two: Path) -> None:
    """Same metrics (AUC and AP to 1e-6, losses to 1e-5 relative) and weights (module docs)."""
    expected, got = _metrics(one), _metrics(two)
    assert [r["epoch"] for r in got] == [1.0, 2.0]
    for e, g in zip(expected, got, strict=True):
        assert abs(e["val_auc"] - g["val_auc"]) <= 1e-6 and abs(e["val_ap"] - g["val_ap"]) <= 1e-6
        for key in ("val_loss", "train_loss"):
            assert g[key] == pytest.approx(e[key], rel=1e-5)
    a, _ = read_tensors(one / LAST)
    b, _ = read_tensors(two / LAST)
    assert set(a) == set(b) and not any(k.startswith("module.") for k in b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    load_checkpoint(two / BEST)  # an ordinary checkpoint


def test_two_processes_train_like_one(prepared: Path, one_process: Path, tmp_path: Path) -> None:
    two, logs = tmp_path / "two", tmp_path / "tb"
    run = _torchrun("train", "-d", prepared, "-o", two, "--epochs", "2", "--tensorboard", logs,
                    *TINY)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == [str(two / BEST)]  # rank 0 alone prints
    assert run.stderr.count("epoch 1/2") == 1  # rank 1 logs warnings only
    assert len(list(logs.glob("events.out.tfevents.*"))) == 1  # and alone writes TensorBoard logs
    _assert_same_run(one_process, two)


@pytest.mark.slow  # two more torchrun starts (~40 s here)
def test_resume_under_torchrun(prepared: Path, one_process: Path, tmp_path: Path) -> None:
    two = tmp_path / "two"
    first = _torchrun("train", "-d", prepared, "-o", two, "--epochs", "1", *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun("train", "-d", prepared, "-o", two, "--epochs", "2", "--resume", *TINY)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(one_process, two)


def _images(prepared: Path) -> list[str]:
    return sorted(str(p) for p in (prepared / "images").iterdir())


def test_shards_concatenate_to_the_unsharded_output(
    prepared: Path, tiny_checkpoint: Path, invoke
) -> None:
    paths = [*_images(prepared)[:10], "/no/such/file.png"]
    base = ["predict", "-", "-c", tiny_checkpoint, "-j", "0", "-b", "4"]
    stdin = "\n".join(paths) + "\n"
    for fmt in ("csv", "jsonl"):
        whole = invoke(*base, "-f", fmt, stdin=stdin)
        assert whole.exit_code == 2  # the missing file is an error record
        parts = [invoke(*base, "-f", fmt, "--shard", f"{i}/3", stdin=stdin) for i in range(3)]
        lines = [line for i, part in enumerate(parts)
                 for line in part.stdout.splitlines()[(1 if fmt == "csv" and i else 0):]]
        assert lines == whole.stdout.splitlines()
        assert [p.exit_code for p in parts] == [0, 0, 2]


def test_predict_under_torchrun_equals_one_process(
    prepared: Path, tiny_checkpoint: Path, invoke
) -> None:
    paths = [*_images(prepared)[:9], "/no/such/file.png", *_images(prepared)[9:13]]
    stdin = "\n".join(paths) + "\n"
    args = ["predict", "-", "-c", tiny_checkpoint, "-f", "csv", "-j", "0", "-b", "4"]
    one = invoke(*args, stdin=stdin)
    two = _torchrun(*args, stdin=stdin)  # stdin reaches rank 0, which hands the list on
    assert one.exit_code == 2 and two.returncode != 0  # torchrun reports rank 0's exit 2
    assert two.stdout == one.stdout and len(one.stdout.splitlines()) == 1 + len(paths)
    assert two.stderr.count("error: /no/such/file.png") == 1


@pytest.mark.slow  # one more torchrun start (~20 s here)
def test_evaluate_under_torchrun_equals_one_process(
    prepared: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    ev = ["evaluate", "-d", prepared, "--split", "val", "-c", tiny_checkpoint, "-f", "json",
          "--bootstrap", "20", "-j", "0", "-b", "4"]
    one_ev = invoke(*ev, "-o", tmp_path / "one")
    two_ev = _torchrun(*ev, "-o", tmp_path / "two")
    assert one_ev.exit_code == 0 and two_ev.returncode == 0, two_ev.stderr[-3000:]
    assert json.loads(two_ev.stdout) == json.loads(one_ev.stdout)
    assert ((tmp_path / "two" / "predictions.csv").read_text()
            == (tmp_path / "one" / "predictions.csv").read_text())


# -- GPU (run with -m gpu on a CUDA machine) ---------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_trains_one_epoch_on_cuda_with_amp(prepared: Path, tmp_path: Path) -> None:
    result = train(TrainConfig(data=prepared, out=tmp_path / "run", pretrained=False,
                               width=0.0625, image_size=64, epochs=1, batch_size=16, seed=7,
                               device="cuda", amp=True, workers=2))
    row = result.history[0]
    assert np.isfinite([row["train_loss"], row["val_loss"]]).all() and 0 <= row["val_auc"] <= 1
    model, _ = load_checkpoint(tmp_path / "run" / BEST)
    assert next(model.parameters()).dtype == torch.float32  # AMP keeps float32 weights


@pytest.mark.gpu
@needs_cuda
def test_predict_amp_on_cuda_is_close_to_float32(
    prepared: Path, tiny_checkpoint: Path, invoke
) -> None:
    args = ["predict", *_images(prepared)[:8], "-c", tiny_checkpoint, "-f", "jsonl",
            "--device", "cuda", "-j", "2"]
    full = [json.loads(x)["p_melanoma"] for x in invoke(*args).stdout.splitlines()]
    half = [json.loads(x)["p_melanoma"] for x in invoke(*args, "--amp").stdout.splitlines()]
    assert np.allclose(full, half, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_torchrun_nccl_with_sync_batch_norm(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = _torchrun("train", "-d", prepared, "-o", out, "--no-pretrained", "--width", "0.0625",
                    "--image-size", "64", "--epochs", "1", "-b", "16", "--device", "cuda",
                    "--sync-bn", "-j", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NCCL" in run.stderr and (out / BEST).is_file()
    assert not any(k.startswith("module.") for k in read_tensors(out / BEST)[0])

