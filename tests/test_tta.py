"""Test-time augmentation over the 8 symmetries of the square (engine/tta.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.tensors import photo_to_input
from attnmel_cli.engine.tta import VIEWS, apply_view, tta_forward, undo_view
from attnmel_cli.io.model_checkpoint import load_checkpoint


def test_the_views_are_the_8_distinct_symmetries_and_undo_inverts_them() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    seen = {tuple(apply_view(x, k, flip).flatten().tolist()) for k, flip in VIEWS}
    assert len(VIEWS) == 8 and len(seen) == 8
    for k, flip in VIEWS:
        assert torch.equal(undo_view(apply_view(x, k, flip), k, flip), x)


def _equivariant(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits from the top-left pixel (not rotation-invariant); a map = the channel mean."""
    corner = x[:, :, 0, 0].mean(dim=1, keepdim=True)
    return torch.cat([-corner, corner], dim=1), {"pool3": x.mean(dim=1, keepdim=True)}


def test_tta_averages_probabilities_and_reorients_maps() -> None:
    x = torch.randn(2, 3, 8, 8)
    probs, maps = tta_forward(_equivariant, x)
    expected = torch.stack([
        torch.softmax(_equivariant(apply_view(x, k, f))[0], dim=1) for k, f in VIEWS
    ]).mean(0)
    torch.testing.assert_close(probs, expected)
    assert torch.allclose(probs.sum(1), torch.ones(2))
    # every view's map, turned back, is the plain map: so is their average
    torch.testing.assert_close(maps["pool3"], x.mean(dim=1, keepdim=True))


pytestmark = pytest.mark.usefixtures("restore_logging")
REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "ISIC_0000287.jpg"


def test_predict_explain_and_evaluate_tta_match_the_engine(
    invoke, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """--tta on the command line is tta_forward on the network input, for every command."""
    model, meta = load_checkpoint(tiny_checkpoint)
    x = photo_to_input(load_photo(PHOTO), meta.preprocess)[None]  # as predict
    with torch.no_grad():
        probs, maps = tta_forward(model, x)
        plain = torch.softmax(model(x)[0], dim=1)[0, 1]
    expected = float(probs[0, 1])
    assert abs(expected - float(plain)) > 1e-6  # a model that TTA changes

    result = invoke("predict", PHOTO, "-c", tiny_checkpoint, "--tta", "-f", "jsonl")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[0])
    assert record["p_melanoma"] == pytest.approx(expected, abs=1e-6)

    result = invoke("explain", PHOTO, "-c", tiny_checkpoint, "--tta", "--out", tmp_path / "x")
    assert result.exit_code == 0, result.output
    raw = np.load(tmp_path / "x" / "ISIC_0000287_maps.npz")
    np.testing.assert_allclose(raw["pool4"], maps["pool4"][0, 0].numpy(), atol=1e-5)
