"""``attnmel train --tensorboard DIR`` on a tiny model: the event files read back, the run itself
unchanged, and a one-line error where TensorBoard is not installed."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnmel_cli.data.manifest import read_manifest
from attnmel_cli.engine.trainer import train
from attnmel_cli.io.run_dir import STATE
from attnmel_cli.io.run_state import load_run_state
from attnmel_cli.viz.tensorboard import (
    IMAGES_PER_CLASS,
    PANEL_HEIGHT,
    SCALARS,
    TensorBoardLog,
    fixed_images,
)

pytestmark = pytest.mark.usefixtures("restore_logging")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install -e '.[test]')",
)


@pytest.fixture(scope="module")
def runs(prepared: Path, tiny_config, tmp_path_factory: pytest.TempPathFactory,
         ) -> tuple[Path, Path, Path]:
    """The same two-epoch tiny run without and with ``--tensorboard`` (run dirs, log dir)."""
    root = tmp_path_factory.mktemp("tb")
    train(tiny_config(prepared, root / "plain", epochs=2))
    train(tiny_config(prepared, root / "logged", epochs=2, tensorboard=root / "logs"),
          epoch_log=TensorBoardLog)
    return root / "plain", root / "logged", root / "logs"


def test_events_hold_each_epoch_and_the_fixed_images(runs, run_metrics, prepared: Path) -> None:
    _, logged, logs = runs
    acc = event_accumulator.EventAccumulator(str(logs), size_guidance={"images": 0})
    acc.Reload()
    rows = run_metrics(logged)
    for column, tag in SCALARS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2], tag
        for e, row in zip(events, rows, strict=True):
            assert e.value == pytest.approx(float(row[column]), rel=1e-6) or (
                math.isnan(e.value) and math.isnan(float(row[column])))
    shown = fixed_images(read_manifest(prepared, "val"))
    assert len(shown) == 2 * IMAGES_PER_CLASS
    tags = [f"attention/{'melanoma' if r.label else 'other'}/{r.image_id}" for r in shown]
    assert sorted(acc.Tags()["images"]) == sorted(tags)
    for tag in tags:
        events = acc.Images(tag)
        assert [e.step for e in events] == [1, 2]
        with Image.open(io.BytesIO(events[-1].encoded_image_string)) as img:
            assert img.height > PANEL_HEIGHT and img.width >= 3 * PANEL_HEIGHT  # photo + 2 maps
    assert "train_config" in " ".join(acc.Tags()["tensors"])


def test_logging_leaves_the_run_unchanged(runs, assert_same_run) -> None:
    plain, logged, _ = runs
    assert_same_run(plain, logged)
    # nor the random generators a --resume restores
    a, b = (load_run_state(run / STATE).rng["torch"] for run in (plain, logged))
    assert torch.equal(a, b)


def test_missing_tensorboard_is_a_one_line_error(prepared: Path, tmp_path: Path, invoke,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    result = invoke("train", "--data", prepared, "--out", tmp_path / "run", "--tensorboard",
                    tmp_path / "tb", "--no-pretrained", "--device", "cpu")
    assert result.exit_code == 1
    assert "pip install 'attnmel[tensorboard]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()
