"""``evaluate``: the paper's AP and AUC (§3.1) with their uncertainty, operating points,
calibration, plots, and the attention quality of Table 3 (§3.3), for one checkpoint or several
side by side on the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnmel_cli import __version__
from attnmel_cli.engine.distributed import SINGLE, Dist
from attnmel_cli.engine.inference import Session
from attnmel_cli.engine.scored import DEFAULT_OPTIONS, ScoringOptions
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.evaluation import metrics
from attnmel_cli.evaluation.class_report import class_section, interval
from attnmel_cli.evaluation.inputs import of_split
from attnmel_cli.evaluation.isic_scorer import (
    PARTIAL_AUC_SENSITIVITY,
    SENSITIVITIES,
    partial_auc_above_sensitivity,
)
from attnmel_cli.evaluation.leakage import prepared_fingerprint, training_overlap
from attnmel_cli.evaluation.results import (
    ECE_BINS,
    SPECIFICITIES,
    Advance,
    EvalData,
    Evaluation,
    Scores,
)
from attnmel_cli.evaluation.scoring import score
from attnmel_cli.models.names import is_binary

# How ``evaluate`` calls an image melanoma; the ISIC scorer calls it so when p > 0.5, which
# differs only for an image scored exactly at the threshold (counted in ``n_at_threshold``).
DECISION_RULE = "p_melanoma >= threshold"


def checkpoint_report(
    sc: Scores, threshold: float, threshold_source: str, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Every figure of one checkpoint on its scored images (JSON-ready, non-finite kept as is),
    with the per-class section of a multi-class checkpoint."""
    y, p = sc.labels, sc.probs
    if len(y) == 0:
        first = f"; the first: {sc.failed[0][1]}" if sc.failed else ""
        raise AttnMelError(
            f"{sc.checkpoint}: no image could be scored ({len(sc.failed)} failed{first})"
        )
    at = metrics.threshold_metrics(y, p, threshold)
    meta = sc.meta
    report: dict[str, Any] = {
        "checkpoint": str(sc.checkpoint),
        "name": sc.name,
        "metadata": {**{k: v for k, v in asdict(meta).items() if k != "train_image_ids"},
                     "preprocessing": meta.preprocessing},
        "n_images": len(y),
        "n_melanoma": int(y.sum()),
        "average_precision": interval(y, p, metrics.average_precision, n_boot, seed),
        "roc_auc": interval(y, p, metrics.roc_auc, n_boot, seed),
        "roc_auc_above_sensitivity": {
            "min_sensitivity": PARTIAL_AUC_SENSITIVITY,
            **interval(y, p, partial_auc_above_sensitivity, n_boot, seed),
        },
        "threshold": {"value": threshold, "source": threshold_source, "rule": DECISION_RULE},
        "at_threshold": {
            "sensitivity": at.sensitivity,
            "specificity": at.specificity,
            "precision": at.precision,
            "balanced_accuracy": at.balanced_accuracy,
            "npv": at.npv,
            "accuracy": at.accuracy,
            "f1": at.f1,
            "confusion_matrix": {"tn": at.tn, "fp": at.fp, "fn": at.fn, "tp": at.tp},
            "n_at_threshold": int(np.sum(p == threshold)),
        },
        "sensitivity_at_specificity": {
            f"{spec:.2f}": asdict(metrics.sensitivity_at_specificity(y, p, spec))
            for spec in SPECIFICITIES
        },
        "specificity_at_sensitivity": {
            f"{sens:.2f}": asdict(metrics.specificity_at_sensitivity(y, p, sens))
            for sens in SENSITIVITIES
        },
        "expected_calibration_error": {
            "value": metrics.expected_calibration_error(y, p, ECE_BINS),
            "bins": ECE_BINS,
        },
    }
    if not is_binary(sc.meta.classes):
        report["multiclass"] = class_section(sc, n_boot=n_boot, seed=seed)
    if sc.jaccard:
        report["attention_jaccard"] = {
            name: {
                "mean": float(np.nanmean(v)) if np.isfinite(v).any() else None,
                "n_images": int(np.isfinite(v).sum()),
            }
            for name, v in sc.jaccard.items()
        }
    return report


def display_names(checkpoints: Sequence[Path]) -> list[str]:
    """File names, or parent/name where two checkpoints share a name (run1/best, run2/best)."""
    names = [p.name for p in checkpoints]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{p.name}" for p in checkpoints]
    return names if len(set(names)) == len(names) else [str(p) for p in checkpoints]


def compare(first: Scores, other: Scores) -> dict[str, Any]:
    """DeLong's paired test of ``other``'s AUC against ``first``'s on the images both scored."""
    where = {image_id: k for k, image_id in enumerate(other.ids)}
    ia = [k for k, image_id in enumerate(first.ids) if image_id in where]
    ib = [where[first.ids[k]] for k in ia]
    r = metrics.delong_test(first.labels[ia], first.probs[ia], other.probs[ib])
    return {
        "checkpoint_a": first.name,
        "checkpoint_b": other.name,
        "n_images": len(ia),
        "test": "DeLong (paired, two-sided)",
        "auc_a": r.auc1,
        "auc_b": r.auc2,
        "z": r.z,
        "p_value": r.p_value,
    }


def run_evaluation(
    data: EvalData,
    checkpoints: Sequence[Path],
    device: torch.device,
    options: ScoringOptions = DEFAULT_OPTIONS,
    *,
    threshold: float | None = 0.5,
    val_data: EvalData | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    advance: Advance | None = None,
    dist: Dist = SINGLE,
) -> Evaluation:
    """Score ``data`` with each checkpoint (loaded one at a time, scoring as ``options`` say)
    and build the report.

    ``threshold=None`` picks each checkpoint's threshold on ``val_data`` by Youden's J.
    ``dist``: under torchrun the images are scored by all the ranks, and every rank builds the
    same report (only rank 0 should write it).
    """
    if threshold is None and val_data is None:
        raise AttnMelError("--threshold val needs data with a 'val' split")
    n_melanoma = sum(it.label for it in data.items)
    if n_melanoma in (0, len(data.items)):
        only = "melanoma" if n_melanoma else "non-melanoma"
        raise DataError(
            f"{data.source}: all {len(data.items)} images{of_split(data)} are {only}; "
            "AP and AUC need both melanoma and other images"
        )
    all_scores: list[Scores] = []
    reports = []
    fingerprint = prepared_fingerprint(data)
    for ckpt, name in zip(checkpoints, display_names(checkpoints), strict=True):
        session = Session.load(ckpt, device)
        sc = score(session, data, ckpt, name, options, advance=advance, dist=dist)
        t, source = threshold, "given"
        if val_data is not None and t is None:
            val = score(session, val_data, ckpt, name, options, dist=dist)
            t = metrics.youden_threshold(val.labels, val.probs).threshold
            source = f"chosen on split {val_data.split!r} (Youden's J)"
        all_scores.append(sc)
        rep = checkpoint_report(sc, t, source, n_boot=n_boot, seed=seed)
        rep["training_overlap"] = training_overlap(sc.meta, data, fingerprint, str(ckpt))
        reports.append(rep)
    return Evaluation(_assemble(data, reports, all_scores, n_boot, seed), all_scores)


def _assemble(
    data: EvalData, reports: list[dict[str, Any]], scores: list[Scores], n_boot: int, seed: int
) -> dict[str, Any]:
    """The whole report: the data (``n_images``: the images every checkpoint scored; images
    that failed and those the ground truth weighs 0 are not in it), the bootstrap, each
    checkpoint's figures, the comparisons of each with the first, and every image that failed."""
    failed = {path: error for sc in scores for path, error in sc.failed}
    return {
        "attnmel_version": __version__,
        "data": str(data.source),
        "split": data.split,
        # true when any checkpoint trained on some of these images (each says how many)
        "trained_on_evaluated_images": any(
            r["training_overlap"]["trained_on_evaluated_images"] for r in reports),
        "n_images": len(data.items) - len(failed),
        "n_failed": len(failed),
        "score_weight_zero": data.score_weight_zero,
        "bootstrap": {
            "resamples": n_boot,
            "seed": seed,
            "confidence": 0.95,
            "method": "percentile, resampling melanoma and other images separately",
        },
        "checkpoints": reports,
        "comparisons": [compare(scores[0], sc) for sc in scores[1:]],
        "failed": [{"path": p, "error": e} for p, e in failed.items()],
    }
