"""Multi-class evaluation and the ISIC scorer's figures: the pure functions against scikit-learn
and independent computations on small arrays, ISIC 2019 ``score_weight``, and ``attnmel
evaluate`` end to end on a tiny 3-class checkpoint."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.preprocessing import label_binarize

from attnmel_cli.data.classes import ISIC2017_CLASSES
from attnmel_cli.data.manifest import Problems
from attnmel_cli.data.sources import read_source
from attnmel_cli.errors import AttnMelError
from attnmel_cli.evaluation import metrics as M
from attnmel_cli.evaluation import multiclass as mc
from attnmel_cli.evaluation.class_report import multiclass_report
from attnmel_cli.evaluation.inputs import load_data
from attnmel_cli.evaluation.isic_scorer import partial_auc_above_sensitivity

pytestmark = pytest.mark.usefixtures("restore_logging")

FAST = ["--bootstrap", "20", "--workers", "0", "--device", "cpu"]
ISIC2019_HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK,score_weight"


def _softmax_case(n: int = 90, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True classes (n,) and informative class probabilities (n, k), rounded to force ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.2 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs.round(2)


def _binary_case(n: int = 150, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    return y, np.clip(rng.normal(0.35 + 0.25 * y, 0.2), 0, 1).round(2)


# --- multi-class: per class, balanced accuracy, confusion matrix -----------------------------


def test_multiclass_report_equals_scikit_learn() -> None:
    y, probs = _softmax_case()
    rep = multiclass_report(y, probs, ISIC2017_CLASSES, n_boot=0).as_record()
    pred = probs.argmax(axis=1)
    onehot = label_binarize(y, classes=[0, 1, 2])
    aucs = roc_auc_score(onehot, probs, average=None)
    aps = average_precision_score(onehot, probs, average=None)
    for c, name in enumerate(ISIC2017_CLASSES):
        one = rep["per_class"][name]
        assert one["n_images"] == int(np.sum(y == c))
        assert one["roc_auc"] == {"value": aucs[c], "ci95": None}
        assert one["average_precision"]["value"] == aps[c]
        assert one["sensitivity"] == pytest.approx(recall_score(y == c, pred == c))
        assert one["specificity"] == pytest.approx(recall_score(y != c, pred != c))
        assert one["precision"] == pytest.approx(precision_score(y == c, pred == c))
        assert one["npv"] == pytest.approx(precision_score(y != c, pred != c))
        assert one["f1"] == pytest.approx(f1_score(y == c, pred == c))
    assert rep["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert rep["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert rep["confusion_matrix"]["counts"] == sk_confusion_matrix(y, pred).tolist()
    # ISIC 2017 Part 3: the mean of the melanoma and seborrheic keratosis AUCs
    assert rep["isic2017_part3_mean_auc"] == pytest.approx((aucs[0] + aucs[1]) / 2)


def test_part3_mean_only_with_both_classes_and_intervals_hold_the_value() -> None:
    y, probs = _softmax_case(seed=3)
    rep = multiclass_report(y, probs, ("melanoma", "nevus", "other"), n_boot=30, seed=1).as_record()
    assert "isic2017_part3_mean_auc" not in rep
    for one in rep["per_class"].values():
        low, high = one["roc_auc"]["ci95"]
        assert low <= one["roc_auc"]["value"] <= high


def test_class_without_images_has_no_auc_and_is_left_out_of_balanced_accuracy() -> None:
    y, probs = _softmax_case(seed=4)
    y = np.where(y == 2, 0, y)  # no image of the third class left
    rep = multiclass_report(y, probs, ("melanoma", "nevus", "other"), n_boot=5).as_record()
    assert rep["per_class"]["other"]["n_images"] == 0
    assert math.isnan(rep["per_class"]["other"]["roc_auc"]["value"])
    pred = probs.argmax(axis=1)
    with pytest.warns(UserWarning):  # scikit-learn warns of the class never true
        expected = balanced_accuracy_score(y, pred)
    assert rep["balanced_accuracy"] == pytest.approx(expected)
    assert sum(map(sum, rep["confusion_matrix"]["counts"])) == len(y)


def test_confusion_matrix_and_tie_rule_by_hand() -> None:
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.4, 0.2, 0.4]])
    pred = mc.predicted_class(probs)
    assert pred.tolist() == [0, 2, 1, 0]  # ties go to the first class
    cm = mc.confusion_matrix([0, 2, 0, 2], pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 1]]
    assert mc.balanced_multiclass_accuracy(cm) == pytest.approx((1 / 2 + 1 / 2) / 2)
    rates = mc.class_rates(np.array([0, 2, 0, 2]), pred, 2)
    assert (rates.tp, rates.fn, rates.fp, rates.tn) == (1, 1, 0, 2)


@pytest.mark.parametrize(
    ("y", "probs", "message"),
    [
        ([0, 1], [[0.5, 0.5]], "shapes"),
        ([0, 3], [[0.5, 0.5], [0.1, 0.9]], "indices"),
        ([0, 1], [[0.5, 0.5], [1.5, -0.5]], "in \\[0, 1\\]"),
    ],
)
def test_check_classes_refuses_bad_inputs(y: list, probs: list, message: str) -> None:
    with pytest.raises(AttnMelError, match=message):
        mc.check_classes(np.array(y), np.array(probs))


# --- the ISIC scorer's binary figures ---------------------------------------------------------


def test_npv_accuracy_f1_equal_scikit_learn() -> None:
    y, p = _binary_case()
    for t in (0.3, 0.5, 0.62):
        pred = (p >= t).astype(int)
        m = M.threshold_metrics(y, p, t)
        assert m.npv == pytest.approx(precision_score(y, pred, pos_label=0))
        assert m.accuracy == pytest.approx(accuracy_score(y, pred))
        assert m.f1 == pytest.approx(f1_score(y, pred))
        assert m.f1 == pytest.approx(2 * m.tp / (2 * m.tp + m.fp + m.fn))  # the scorer's Dice


def test_npv_and_f1_are_nan_when_undefined() -> None:
    called_all = M.threshold_metrics([0, 1], [0.6, 0.7], 0.5)
    assert math.isnan(called_all.npv) and called_all.accuracy == 0.5
    assert math.isnan(M.threshold_metrics([0, 0], [0.1, 0.2], 0.5).f1)


def _isic2017_rule(y: np.ndarray, p: np.ndarray, sensitivity: float) -> float:
    """The ISIC 2017 scorer's specificity at ``sensitivity``, counted by hand: walk the
    thresholds from the highest score down; the first whose sensitivity reaches the target
    gives 1 − its false-positive rate (computed so, as the scorer does)."""
    for t in sorted(set(p.tolist()), reverse=True):
        called = p >= t
        if np.sum(called & (y == 1)) / np.sum(y == 1) >= sensitivity:
            return 1.0 - float(np.sum(called & (y == 0)) / np.sum(y == 0))
    raise AssertionError("the lowest threshold reaches every sensitivity")


def test_specificity_at_sensitivity_hand() -> None:
    pos = [0.95, 0.8, 0.7, 0.55, 0.5]
    neg = [0.9, 0.6, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05]
    y, p = [1] * 5 + [0] * 10, pos + neg
    # 80 % sensitivity needs the fourth melanoma (0.55), 2 false positives above it; 0.5 is as
    # specific and catches the fifth too: the most sensitive of the equally specific wins.
    assert M.specificity_at_sensitivity(y, p, 0.80) == M.OperatingPoint(0.5, 1.0, 0.8)
    assert M.specificity_at_sensitivity(y, p, 0.95) == M.OperatingPoint(0.5, 1.0, 0.8)
    # 60 %: threshold 0.7 (spec 0.9); 0.6 is as sensitive and less specific.
    assert M.specificity_at_sensitivity(y, p, 0.60) == M.OperatingPoint(0.7, 0.6, 0.9)


def test_specificity_at_sensitivity_follows_the_isic_2017_rule() -> None:
    for seed in range(4):
        y, p = _binary_case(seed=seed)
        for target in (0.82, 0.89, 0.95):
            op = M.specificity_at_sensitivity(y, p, target)
            assert op.specificity == _isic2017_rule(y, p, target)
            again = M.threshold_metrics(y, p, op.threshold)  # reachable with its threshold
            assert (again.sensitivity, again.specificity) == pytest.approx(
                (op.sensitivity, op.specificity)
            )
            assert op.sensitivity >= target


def _partial_auc_reference(y: np.ndarray, p: np.ndarray, s: float) -> float:
    """The ROC area right of the false-positive rate f0 where the curve first reaches
    sensitivity ``s``: the whole AUC less the area left of f0, the latter from scikit-learn's
    McClish-standardised ``max_fpr`` partial AUC turned back into an area."""
    points = [(0.0, 0.0)]  # (fpr, tpr) of every threshold, counted by hand
    for t in sorted(set(p.tolist()), reverse=True):
        called = p >= t
        points.append((np.mean(called[y == 0]), np.mean(called[y == 1])))
    k = next(i for i, (_, tpr) in enumerate(points) if tpr >= s)
    (f1, t1), (f2, t2) = points[k - 1], points[k]
    f0 = f1 + (s - t1) / (t2 - t1) * (f2 - f1)
    if f0 == 0:
        left = 0.0
    elif f0 >= 1:
        left = roc_auc_score(y, p)
    else:
        std = roc_auc_score(y, p, max_fpr=f0)
        low, high = 0.5 * f0**2, f0
        left = low + (2 * std - 1) * (high - low)
    return roc_auc_score(y, p) - left


def test_partial_auc_above_sensitivity_hand() -> None:
    # ROC points (0, 0), (0, .5), (.5, .5), (.5, 1), (1, 1): sensitivity reaches 80 % at
    # fpr 0.5, and the curve stays at 1 from there: area 0.5.
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    assert partial_auc_above_sensitivity(y, p, 0.8) == pytest.approx(0.5)
    # Perfect separation: the whole square.
    assert partial_auc_above_sensitivity([0, 0, 1], [0.1, 0.2, 0.9], 0.8) == pytest.approx(1.0)
    # At sensitivity 1e-9 it is the whole AUC.
    y, p = _binary_case()
    assert partial_auc_above_sensitivity(y, p, 1e-9) == pytest.approx(roc_auc_score(y, p))
    with pytest.raises(AttnMelError, match="sensitivity"):
        partial_auc_above_sensitivity(y, p, 0.0)


def test_partial_auc_above_sensitivity_equals_an_independent_reference() -> None:
    for seed in range(5):
        y, p = _binary_case(seed=seed)
        for s in (0.8, 0.5, 0.95):
            assert partial_auc_above_sensitivity(y, p, s) == pytest.approx(
                _partial_auc_reference(y, p, s), abs=1e-12
            )


# --- ISIC 2019 score_weight -------------------------------------------------------------------


@pytest.fixture(scope="module")
def isic2019_test(tmp_path_factory: pytest.TempPathFactory, make_photo) -> Path:
    """An ISIC 2019-style test download: 10 photos, ground truth with ``score_weight`` (the
    last two weigh 0)."""
    root = tmp_path_factory.mktemp("isic2019")
    (root / "ISIC_2019_Test_Input").mkdir()
    rows = [ISIC2019_HEADER]
    for i in range(10):
        image_id = f"ISIC_{i:07d}"
        make_photo(root / "ISIC_2019_Test_Input" / f"{image_id}.jpg", i)
        hot = ["0.0"] * 9
        hot[0 if i % 2 else 1] = "1.0"  # MEL or NV
        rows.append(",".join([image_id, *hot, "0.0" if i >= 8 else "1.0"]))
    (root / "ISIC_2019_Test_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return root


def test_score_weight_zero_images_are_left_out_and_counted(isic2019_test: Path, invoke,
                                                           tiny_checkpoint: Path) -> None:
    source = read_source(isic2019_test, Problems(str(isic2019_test)))
    assert [e.weight for e in source.entries] == [1] * 8 + [0] * 2
    data = load_data(isic2019_test, None)
    assert len(data.items) == 8 and data.score_weight_zero == 2
    assert {it.image_id for it in data.items} == {f"ISIC_{i:07d}" for i in range(8)}
    result = invoke("evaluate", "--data", isic2019_test, "-c", tiny_checkpoint, "-f", "json",
                    *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n_images"], report["score_weight_zero"]) == (8, 2)
    assert report["checkpoints"][0]["n_images"] == 8


def test_a_score_weight_other_than_0_or_1_is_refused(tmp_path: Path, make_photo) -> None:
    make_photo(tmp_path / "ISIC_0000001.jpg", 1)
    (tmp_path / "truth.csv").write_text(
        f"{ISIC2019_HEADER}\nISIC_0000001,1.0,0,0,0,0,0,0,0,0,0.5\n"
    )
    problems = Problems(str(tmp_path))
    assert read_source(tmp_path, problems).entries == []
    with pytest.raises(AttnMelError, match="score_weight"):
        problems.raise_if_any()


# --- evaluate end to end on a tiny 3-class checkpoint ------------------------------------------


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory, make_photo) -> Path:
    """12 labelled photos (an image,label,diagnosis CSV), four of each ISIC 2017 class."""
    data = tmp_path_factory.mktemp("three")
    rows = ["image,label,diagnosis"]
    for i in range(12):
        diagnosis = ISIC2017_CLASSES[i % 3]
        make_photo(data / f"p{i:02d}.jpg", 100 + i)
        rows.append(f"p{i:02d}.jpg,{int(diagnosis == 'melanoma')},{diagnosis}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    return data


def test_evaluate_a_three_class_checkpoint_beside_a_binary_one(
    three_classes: Path, tiny_isic2017_checkpoint: Path, tiny_checkpoint: Path, invoke,
    tmp_path: Path,
) -> None:
    checkpoint, data = tiny_isic2017_checkpoint, three_classes
    out = tmp_path / "eval"
    result = invoke("evaluate", "--data", data, "-c", checkpoint, "--compare", tiny_checkpoint,
                    "--out", out, "-f", "json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    three, binary = report["checkpoints"]
    assert "multiclass" not in binary
    section = three["multiclass"]
    assert section["classes"] == list(ISIC2017_CLASSES) and section["n_images"] == 12
    cm = np.array(section["confusion_matrix"]["counts"])
    assert cm.sum() == report["n_images"] == 12
    assert cm.sum(axis=1).tolist() == [4, 4, 4]
    aucs = [section["per_class"][c]["roc_auc"]["value"] for c in ("melanoma",
                                                                  "seborrheic_keratosis")]
    assert section["isic2017_part3_mean_auc"] == pytest.approx(sum(aucs) / 2)

    with (out / "predictions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["checkpoint"] == three["name"]]
    y = np.array([int(r["image_id"].removeprefix("p")) % 3 for r in rows])  # as made above
    probs = np.array([[float(r["p_melanoma"]), float(r["p_seborrheic_keratosis"]),
                       float(r["p_nevus"])] for r in rows])
    assert probs.sum(axis=1) == pytest.approx(1, abs=1e-5)
    for c, name in enumerate(ISIC2017_CLASSES):
        assert section["per_class"][name]["roc_auc"]["value"] == pytest.approx(
            roc_auc_score(y == c, probs[:, c])
        )
    assert section["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, probs.argmax(axis=1))
    )
    # the melanoma figures stay: p_melanoma against the melanoma label
    label = np.array([int(r["label"]) for r in rows])
    assert three["roc_auc"]["value"] == pytest.approx(roc_auc_score(label, probs[:, 0]))
    assert set(three["specificity_at_sensitivity"]) == {"0.82", "0.89", "0.95"}

    for name in ("roc_classes.png", "pr_classes.png", "confusion_matrix.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Per class" in html and "balanced multi-class accuracy" in html

    table = invoke("evaluate", "--data", data, "-c", checkpoint, *FAST)
    assert table.exit_code == 0
    for needle in ("balanced multi-class accuracy", "ISIC 2017 Part 3", "confusion matrix",
                   "seborrheic_keratosis"):
        assert needle in table.stderr


def test_diagnoses_outside_the_classes_skip_the_per_class_section(
    tiny_isic2017_checkpoint: Path, labelled: Path, invoke
) -> None:
    result = invoke("evaluate", "--data", labelled, "-c", tiny_isic2017_checkpoint, "-f", "json",
                    *FAST)
    assert result.exit_code == 0, result.output
    (rep,) = json.loads(result.stdout)["checkpoints"]
    assert "other" in rep["multiclass"]["skipped"]  # the generic CSV's diagnoses: melanoma, other
    assert rep["roc_auc"]["value"] is not None  # the melanoma figures are still there
    assert "no per-class figures" in result.stderr
