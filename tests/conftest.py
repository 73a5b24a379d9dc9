"""Shared pytest fixtures (keep additive: several test files rely on these)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from attnmel_cli.checkpoint import CheckpointMeta, save_checkpoint
from attnmel_cli.model import build_model

# Tiny models gain nothing from intra-op threads, and on a small shared machine OpenMP spinning
# makes a 4 ms forward pass take 0.5 s; OMP_NUM_THREADS still overrides this.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

TINY_WIDTH = 0.0625
TINY_SIZE = 64


def _tiny(folder: Path, arch: str, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model(arch, "vgg16_bn", TINY_WIDTH)
    meta = CheckpointMeta(arch=arch, backbone="vgg16_bn", width=TINY_WIDTH, image_size=TINY_SIZE)
    return save_checkpoint(folder / f"tiny-{arch}.safetensors", model, meta)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``attnmel`` checkpoint (vgg16_bn, width 1/16, 64 px input)."""
    return _tiny(tmp_path_factory.mktemp("ckpt"), "attnmel", 0)


@pytest.fixture(scope="session")
def tiny_gap_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``vgg16-gap`` checkpoint (its maps are a CAM), same size as above."""
    return _tiny(tmp_path_factory.mktemp("ckpt"), "vgg16-gap", 1)
