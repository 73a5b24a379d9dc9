"""Metrics against scikit-learn and hand computations on small known arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)

from attnmel_cli.errors import AttnMelError
from attnmel_cli.evaluation import metrics as M
from attnmel_cli.evaluation import uncertainty as U


def _random_case(n: int = 120, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ~30 % melanoma and informative probabilities rounded to force ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(rng.normal(0.35 + 0.25 * y, 0.2), 0, 1).round(2)
    return y, p


# --- AP and AUC -----------------------------------------------------------------------------


def test_ap_auc_hand_computed() -> None:
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # AUC: 3 of the 4 (melanoma, other) pairs are ordered correctly.
    assert M.roc_auc(y, p) == pytest.approx(0.75)
    # AP: recall steps 0.5 at precision 1 (0.8) and 0.5 at precision 2/3 (0.35).
    assert M.average_precision(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_ties_count_half() -> None:
    y, p = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    assert M.roc_auc(y, p) == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    # The tied pair enters as one threshold: precision 2/3 at recall 1.
    assert M.average_precision(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_equal_scikit_learn_with_ties() -> None:
    y, p = _random_case()
    assert M.average_precision(y, p) == average_precision_score(y, p)
    assert M.roc_auc(y, p) == roc_auc_score(y, p)


def test_perfect_separation() -> None:
    y, p = [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9]
    assert M.roc_auc(y, p) == 1.0
    assert M.average_precision(y, p) == 1.0
    assert U.bootstrap_ci(y, p, M.roc_auc, n_boot=20) == (1.0, 1.0)
    assert M.sensitivity_at_specificity(y, p, 0.95).sensitivity == 1.0
    assert M.youden_threshold(y, p).threshold == 0.7


@pytest.mark.parametrize(
    "fn",
    [
        M.average_precision,
        M.roc_auc,
        M.youden_threshold,
        lambda y, p: M.sensitivity_at_specificity(y, p, 0.8),
        lambda y, p: U.bootstrap_ci(y, p, M.roc_auc),
        lambda y, p: U.delong_test(y, p, p),
    ],
)
@pytest.mark.parametrize("label", [0, 1])
def test_single_class_is_a_clear_error(fn, label: int) -> None:
    with pytest.raises(AttnMelError, match="needs both melanoma and non-melanoma"):
        fn([label] * 4, [0.1, 0.2, 0.3, 0.4])


def test_calibration_is_defined_on_one_class() -> None:
    assert M.expected_calibration_error([1] * 4, [0.7] * 4) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.5], "differ in length"),
        ([0, 2], [0.5, 0.5], "labels must be 0 or 1"),
        ([0, 1], [0.5, 1.5], r"finite numbers in \[0, 1\]"),
        ([0, 1], [0.5, float("nan")], r"finite numbers in \[0, 1\]"),
        ([], [], "no images"),
    ],
)
def test_invalid_inputs(y: list, p: list, message: str) -> None:
    with pytest.raises(AttnMelError, match=message):
        M.roc_auc(y, p)


# --- bootstrap --------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [M.roc_auc, M.average_precision])
def test_bootstrap_contains_estimate_and_is_seeded(metric) -> None:
    y, p = _random_case(200)
    low, high = U.bootstrap_ci(y, p, metric, n_boot=100, seed=3)
    assert low < metric(y, p) < high
    assert U.bootstrap_ci(y, p, metric, n_boot=100, seed=3) == (low, high)
    assert U.bootstrap_ci(y, p, metric, n_boot=100, seed=4) != (low, high)
    narrow = U.bootstrap_ci(y, p, metric, n_boot=100, alpha=0.5, seed=3)
    assert low <= narrow[0] <= narrow[1] <= high


def test_bootstrap_is_stratified() -> None:
    # One melanoma among 20: unstratified resamples would often lack it and make AUC undefined.
    # Stratified, every resample holds the melanoma and 19 non-melanomas drawn with replacement,
    # 10 of the 19 scored below it: the resample's AUC is Binomial(19, 10/19) / 19, whose 2.5 %
    # and 97.5 % quantiles are 6/19 and 14/19.
    y = np.array([1] + [0] * 19)
    p = np.r_[0.5, np.linspace(0.0, 0.45, 10), np.linspace(0.55, 1.0, 9)]
    assert M.roc_auc(y, p) == pytest.approx(10 / 19)
    low, high = U.bootstrap_ci(y, p, M.roc_auc, n_boot=2000)
    assert low == pytest.approx(6 / 19, abs=1 / 19 + 1e-9)
    assert high == pytest.approx(14 / 19, abs=1 / 19 + 1e-9)


# --- threshold metrics and operating points ----------------------------------------------------


def test_threshold_metrics_hand_and_sklearn() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.5])
    t = M.threshold_metrics(y, p, 0.5)  # 0.5 itself counts as melanoma
    assert (t.tn, t.fp, t.fn, t.tp) == (2, 2, 1, 2)
    assert (t.sensitivity, t.specificity, t.precision) == pytest.approx((2 / 3, 0.5, 0.5))
    assert t.balanced_accuracy == pytest.approx((2 / 3 + 0.5) / 2)
    pred = (p >= 0.5).astype(int)
    assert [t.tn, t.fp, t.fn, t.tp] == confusion_matrix(y, pred).ravel().tolist()
    assert t.sensitivity == pytest.approx(recall_score(y, pred))
    assert t.specificity == pytest.approx(recall_score(y, pred, pos_label=0))
    assert t.precision == pytest.approx(precision_score(y, pred))
    assert t.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))


def test_threshold_metrics_undefined_rates_are_nan() -> None:
    t = M.threshold_metrics([0, 1, 0], [0.1, 0.4, 0.3], 0.9)
    assert math.isnan(t.precision)  # nothing called melanoma
    assert (t.sensitivity, t.specificity) == (0.0, 1.0)
    only_neg = M.threshold_metrics([0, 0], [0.1, 0.9], 0.5)
    assert math.isnan(only_neg.sensitivity) and math.isnan(only_neg.balanced_accuracy)
    assert only_neg.specificity == 0.5


def test_sensitivity_at_specificity_hand() -> None:
    neg = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.6, 0.9]
    pos = [0.5, 0.55, 0.7, 0.8, 0.95]
    y, p = [0] * 10 + [1] * 5, neg + pos
    # spec >= 80 % allows 2 false positives (0.6, 0.9): threshold 0.5 catches every melanoma.
    assert M.sensitivity_at_specificity(y, p, 0.80) == M.OperatingPoint(0.5, 1.0, 0.8)
    assert M.sensitivity_at_specificity(y, p, 0.90) == M.OperatingPoint(0.7, 0.6, 0.9)
    assert M.sensitivity_at_specificity(y, p, 0.95) == M.OperatingPoint(0.95, 0.2, 1.0)


def test_sensitivity_at_specificity_is_reachable_and_best() -> None:
    y, p = _random_case(150, seed=5)
    for target in (0.8, 0.9, 0.95):
        op = M.sensitivity_at_specificity(y, p, target)
        again = M.threshold_metrics(y, p, op.threshold)
        assert (again.sensitivity, again.specificity) == pytest.approx(
            (op.sensitivity, op.specificity)
        )
        assert op.specificity >= target
        for t in np.unique(p):  # no threshold does better at the same specificity
            tm = M.threshold_metrics(y, p, t)
            if tm.specificity >= target:
                assert tm.sensitivity <= op.sensitivity


def test_youden_threshold_hand() -> None:
    y, p = [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.4, 0.7, 0.8]
    # J = 2/3 at both 0.7 (sens 2/3, spec 1) and 0.4 (sens 1, spec 2/3): the higher one wins.
    assert M.youden_threshold(y, p) == M.OperatingPoint(0.7, pytest.approx(2 / 3), 1.0)


def test_youden_threshold_never_infinite() -> None:
    op = M.youden_threshold([1, 0], [0.2, 0.8])  # worse than chance everywhere
    assert math.isfinite(op.threshold)


# --- calibration ------------------------------------------------------------------------------


def test_expected_calibration_error_hand() -> None:
    y, p = [0, 0, 1, 1, 1], [0.05, 0.15, 0.15, 0.95, 0.85]
    # bins 0, 1, 8, 9: gaps 0.05 (1 image), 0.35 (2), 0.15 (1), 0.05 (1).
    assert M.expected_calibration_error(y, p) == pytest.approx((0.05 + 2 * 0.35 + 0.15 + 0.05) / 5)
    assert M.expected_calibration_error([0, 1, 1], [0.0, 1.0, 1.0]) == 0.0
    bins = M.calibration_bins([0, 1], [0.0, 1.0], n_bins=4)
    assert bins.count.tolist() == [1, 0, 0, 1]  # 1.0 falls in the last, closed bin
    assert np.isnan(bins.mean_probability[1])


# --- DeLong -----------------------------------------------------------------------------------


def _delong_reference(y: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> tuple[float, float]:
    """Original O(m·n) DeLong (1988): placement values from pairwise comparisons."""
    pos, neg = y == 1, y == 0
    v10, v01, aucs = [], [], []
    for s in (p1, p2):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return z, math.erfc(abs(z) / math.sqrt(2))


def test_delong_hand_case() -> None:
    y = [1, 1, 0, 0]
    r = U.delong_test(y, [0.9, 0.8, 0.1, 0.2], [0.9, 0.1, 0.8, 0.2])
    # AUCs 1 and 0.5; only the second predictor's melanoma components vary (1, 0): var = 0.5 / 2.
    assert (r.auc1, r.auc2) == (1.0, 0.5)
    assert r.z == pytest.approx(1.0)
    assert r.p_value == pytest.approx(0.31731050786291)


def test_delong_matches_reference_and_sklearn() -> None:
    y, p1 = _random_case(90, seed=7)
    rng = np.random.default_rng(8)
    p2 = np.clip(p1 + rng.normal(0, 0.15, len(p1)), 0, 1).round(2)
    r = U.delong_test(y, p1, p2)
    assert r.auc1 == pytest.approx(roc_auc_score(y, p1))
    assert r.auc2 == pytest.approx(roc_auc_score(y, p2))
    assert (r.z, r.p_value) == pytest.approx(_delong_reference(y, p1, p2))
    swapped = U.delong_test(y, p2, p1)
    assert (swapped.z, swapped.p_value) == pytest.approx((-r.z, r.p_value))


def test_delong_identical_predictors() -> None:
    y, p = _random_case(50)
    r = U.delong_test(y, p, p)
    assert (r.z, r.p_value) == (0.0, 1.0)


def test_delong_standard_error_agrees_with_paired_bootstrap() -> None:
    y, p1 = _random_case(300, seed=11)
    rng = np.random.default_rng(12)
    p2 = np.clip(0.5 * p1 + 0.5 * rng.random(len(p1)), 0, 1)
    r = U.delong_test(y, p1, p2)
    se_delong = (r.auc1 - r.auc2) / r.z
    diffs = []
    for _ in range(200):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            diffs.append(roc_auc_score(y[i], p1[i]) - roc_auc_score(y[i], p2[i]))
    assert se_delong == pytest.approx(np.std(diffs), rel=0.25)


# --- Jaccard, Table 3 protocol (§3.3) -----------------------------------------------------------


def test_jaccard_hand() -> None:
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True
    b = np.zeros((4, 4), np.uint8)
    b[:2, :3] = 255  # 0/255 masks as ISIC ships them
    assert M.jaccard(a, b) == pytest.approx(4 / 6)
    assert M.jaccard(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert M.jaccard(np.zeros((4, 4)), b) == 0.0
    with pytest.raises(AttnMelError, match="shapes differ"):
        M.jaccard(a, np.zeros((8, 8)))


def test_attention_jaccard_4x4_same_size() -> None:
    attn = np.array(
        [
            [0.0, 0.1, 0.2, 0.1],
            [0.1, 0.9, 1.0, 0.2],
            [0.2, 0.8, 0.6, 0.1],
            [0.0, 0.1, 0.2, 0.4],
        ]
    )
    # Renormalised it is unchanged (min 0, max 1): >= 0.5 at (1,1), (1,2), (2,1), (2,2).
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:4] = 1
    assert M.attention_jaccard(attn, mask) == pytest.approx(4 / 6)
    # Min–max renormalisation makes the scale and offset irrelevant.
    assert M.attention_jaccard(attn * 0.01 + 3.0, mask) == pytest.approx(4 / 6)


def test_attention_jaccard_4x4_map_on_8x8_mask() -> None:
    attn = np.zeros((4, 4))
    attn[:2, :2] = 1.0
    # Bilinear ×2 with half-pixel centres: each row/column profile [1, 1, 0, 0] becomes
    # [1, 1, 1, .75, .25, 0, 0, 0]; the 2-D value is their product, >= 0.5 on the top-left 4×4.
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :5] = 255
    assert M.attention_jaccard(attn, mask) == pytest.approx(16 / 20)
    peak = np.zeros((4, 4))
    peak[1, 1] = 0.3  # profile [0, 1, 0, 0] -> [0, .25, .75, .75, .25, 0, 0, 0]
    block = np.zeros((8, 8), bool)
    block[2:4, 2:4] = True
    assert M.attention_jaccard(peak, block) == 1.0


def test_attention_jaccard_8x8_to_non_square_mask() -> None:
    attn = np.zeros((8, 8))
    attn[:, 4:] = 5.0  # right half attended
    mask = np.zeros((16, 24), bool)
    mask[:, 12:] = True
    assert M.attention_jaccard(attn, mask) == 1.0


def test_attention_jaccard_edge_cases() -> None:
    lesion = np.zeros((8, 8), bool)
    lesion[2:6, 2:6] = True
    # A constant map localises nothing: empty prediction.
    assert M.attention_jaccard(np.full((4, 4), 0.7), lesion) == 0.0
    assert M.attention_jaccard(np.full((4, 4), 0.7), np.zeros((8, 8))) == 1.0
    with pytest.raises(AttnMelError, match="non-finite"):
        M.attention_jaccard(np.full((4, 4), np.nan), lesion)
    with pytest.raises(AttnMelError, match="2-D"):
        M.attention_jaccard(np.zeros((1, 4, 4)), lesion)
