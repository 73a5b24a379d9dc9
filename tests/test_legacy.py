"""Checkpoints written before the backbone change keep loading and scoring as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.transforms import photo_to_array
from attnmel_cli.engine.inference import Session, forward_batch

REPO = Path(__file__).resolve().parents[1]
PREVIOUS = REPO / "tests" / "data" / "attnmel-0.1-vgg16bn-w025.safetensors"
# What attnmel 0.1.0 printed for the bundled examples with this checkpoint (its default model).
# 0.1.0 decoded these JPEGs at half scale (the draft decode, which scoring no longer uses), so the
# test feeds the model that decode's inputs: what it checks is that the checkpoint loads and
# computes as it did.
SCORES_0_1 = {
    "ISIC_0000115.jpg": 0.279382,
    "ISIC_0000195.jpg": 0.812668,
    "ISIC_0000257.jpg": 0.484631,
    "ISIC_0000279.jpg": 0.548708,
    "ISIC_0000287.jpg": 0.419006,
}


def test_the_previous_default_model_scores_the_examples_as_0_1_did() -> None:
    session = Session.load(PREVIOUS, torch.device("cpu"))
    meta = session.meta
    assert (meta.backbone, meta.width, meta.image_size, meta.strides) == (
        "vgg16_bn", 0.25, 128, (8, 16, 32))
    assert meta.preprocess.resize == 146 and meta.preprocess.crop_fraction == 0.8
    x = torch.from_numpy(np.stack([
        photo_to_array(load_photo(REPO / "examples" / name, draft_min_side=256), meta.preprocess)
        for name in SCORES_0_1
    ]))
    with torch.inference_mode():
        probs, _ = forward_batch(session.model, x, session.device)
    for p, (name, expected) in zip(probs[:, 1], SCORES_0_1.items(), strict=True):
        assert float(p) == pytest.approx(expected, abs=5e-7), name
