"""Focal loss and the batch Dice of Eq. 4–5 against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnmel_cli.losses import (
    LAMBDA1,
    LAMBDA2,
    attnmel_loss,
    batch_dice_loss,
    downsample_reference,
    focal_loss,
)


def test_focal_matches_hand_computation() -> None:
    # softmax: (1/4, 3/4) and (4/5, 1/5)
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
    labels = torch.tensor([1, 1])
    # p_t = 3/4 and 1/5: −(1 − p_t)² log p_t, averaged
    expected = (-(0.25**2) * math.log(0.75) - (0.8**2) * math.log(0.2)) / 2
    assert focal_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    logits = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    assert focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )


def test_focal_down_weights_easy_examples() -> None:
    labels = torch.tensor([1])
    easy, hard = torch.tensor([[0.0, 4.0]]), torch.tensor([[0.0, -1.0]])
    ce_ratio = F.cross_entropy(easy, labels) / F.cross_entropy(hard, labels)
    assert focal_loss(easy, labels) / focal_loss(hard, labels) < ce_ratio


def test_batch_dice_matches_hand_computation() -> None:
    a = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]], [[[1.0, 0.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
    ref = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    # Σ a·ā = 0.5 + 1 = 1.5; Σ (a + ā) = 1.75 + 1 + 2 = 4.75 over the whole batch (Eq. 4)
    assert batch_dice_loss(a, ref).item() == pytest.approx(1 - 2 * 1.5 / 4.75)


def test_batch_dice_is_not_a_mean_of_per_image_dice() -> None:
    a = torch.tensor([[[[1.0, 0.0]]], [[[0.5, 0.5]]]])
    ref = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    per_image = [1 - 2 * (a[i] * ref[i]).sum() / (a[i] + ref[i]).sum() for i in range(2)]
    assert batch_dice_loss(a, ref).item() != pytest.approx(float(sum(per_image) / 2))


def test_batch_dice_finite_with_an_all_zero_reference_image() -> None:
    a = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ref = torch.zeros(3, 1, 4, 4)
    ref[0, 0, :2, :2] = 1  # images 1 and 2 have no ROI at all
    loss = batch_dice_loss(a, ref)
    assert torch.isfinite(loss)
    assert 0 <= loss.item() <= 1
    assert torch.isfinite(batch_dice_loss(a, torch.zeros_like(a)))  # a batch with no ROI


def test_reference_is_area_downsampled_to_the_map() -> None:
    ref = torch.zeros(1, 1, 16, 16)
    ref[0, 0, :8, :4] = 1  # half of the top-left 8×8 block
    small = downsample_reference(ref, (2, 2))
    assert small[0, 0].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    a = torch.full((1, 1, 2, 2), 0.5)
    # the image-sized reference is pooled inside batch_dice_loss: Σ a·ā = 0.25, Σ(a+ā) = 2.5
    assert batch_dice_loss(a, ref).item() == pytest.approx(1 - 2 * 0.25 / 2.5)


def _loss_inputs(
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Logits and labels of two images, their pool3 and pool4 maps and a 32×32 reference."""
    g = torch.Generator().manual_seed(seed)
    logits, labels = torch.randn(2, 2, generator=g), torch.tensor([0, 1])
    maps = {"pool3": torch.rand(2, 1, 4, 4, generator=g),
            "pool4": torch.rand(2, 1, 2, 2, generator=g)}
    roi = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()
    return logits, labels, maps, roi


def test_eq5_combines_focal_and_weighted_dice_terms() -> None:
    logits, labels, maps, roi = _loss_inputs(2)
    terms = attnmel_loss(logits, labels, maps, roi)
    d3, d4 = batch_dice_loss(maps["pool3"], roi), batch_dice_loss(maps["pool4"], roi)
    assert terms.dice3.item() == pytest.approx(d3.item())
    assert terms.dice4.item() == pytest.approx(d4.item())
    expected = focal_loss(logits, labels) + LAMBDA1 * d3 + LAMBDA2 * d4
    assert terms.total.item() == pytest.approx(expected.item())
    no_roi = attnmel_loss(logits, labels, maps)
    assert no_roi.total.item() == pytest.approx(focal_loss(logits, labels).item())
    assert no_roi.dice3.item() == no_roi.dice4.item() == 0


def test_eq5_leaves_images_without_a_reference_out_of_the_dice_sums() -> None:
    logits, labels, maps, roi = _loss_inputs(3)
    terms = attnmel_loss(logits, labels, maps, roi, torch.tensor([True, False]))
    assert terms.dice3.item() == pytest.approx(batch_dice_loss(maps["pool3"][:1], roi[:1]).item())
    assert terms.dice4.item() == pytest.approx(batch_dice_loss(maps["pool4"][:1], roi[:1]).item())
