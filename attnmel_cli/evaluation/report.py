"""``evaluate``: the paper's AP and AUC (§3.1) with their uncertainty, operating points,
calibration, plots, and the attention quality of Table 3 (§3.3), for one checkpoint or several
side by side on the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

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
from attnmel_cli.evaluation.report_types import (
    AtThreshold,
    Bootstrap,
    CalibrationError,
    Comparison,
    Failure,
    MapJaccard,
    PartialAuc,
    Threshold,
)
from attnmel_cli.evaluation.results import (
    ECE_BINS,
    SPECIFICITIES,
    Advance,
    CheckpointReport,
    EvalData,
    Evaluation,
    Report,
    Scores,
)
from attnmel_cli.evaluation.scoring import score
from attnmel_cli.evaluation.uncertainty import delong_test
from attnmel_cli.models.names import is_binary

# How ``evaluate`` calls an image melanoma; the ISIC scorer calls it so when p > 0.5, which
# differs only for an image scored exactly at the threshold (counted in ``n_at_threshold``).
DECISION_RULE = "p_melanoma >= threshold"


def checkpoint_report(
    sc: Scores, threshold: float, threshold_source: str, *, n_boot: int = 1000, seed: int = 0
) -> CheckpointReport:
    """Every figure of one checkpoint on its scored images (non-finite kept as is), with the
    per-class section of a multi-class checkpoint (its training overlap: not checked here)."""
    y, p = sc.labels, sc.probs
    if len(y) == 0:
        first = f"; the first: {sc.failed[0][1]}" if sc.failed else ""
        raise AttnMelError(
            f"{sc.checkpoint}: no image could be scored ({len(sc.failed)} failed{first})"
        )
    return CheckpointReport(
        checkpoint=sc.checkpoint,
        name=sc.name,
        meta=sc.meta,
        n_images=len(y),
        n_melanoma=int(y.sum()),
        average_precision=interval(y, p, metrics.average_precision, n_boot, seed),
        roc_auc=interval(y, p, metrics.roc_auc, n_boot, seed),
        roc_auc_above_sensitivity=PartialAuc(
            PARTIAL_AUC_SENSITIVITY, interval(y, p, partial_auc_above_sensitivity, n_boot, seed)
        ),
        threshold=Threshold(threshold, threshold_source, DECISION_RULE),
        at_threshold=AtThreshold(metrics.threshold_metrics(y, p, threshold),
                                 int(np.sum(p == threshold))),
        sensitivity_at_specificity={
            spec: metrics.sensitivity_at_specificity(y, p, spec) for spec in SPECIFICITIES
        },
        specificity_at_sensitivity={
            sens: metrics.specificity_at_sensitivity(y, p, sens) for sens in SENSITIVITIES
        },
        expected_calibration_error=CalibrationError(
            metrics.expected_calibration_error(y, p, ECE_BINS), ECE_BINS
        ),
        multiclass=None if is_binary(sc.meta.classes)
        else class_section(sc, n_boot=n_boot, seed=seed),
        attention_jaccard={
            name: MapJaccard(float(np.nanmean(v)) if np.isfinite(v).any() else None,
                             int(np.isfinite(v).sum()))
            for name, v in sc.jaccard.items()
        },
    )


def display_names(checkpoints: Sequence[Path]) -> list[str]:
    """File names, or parent/name where two checkpoints share a name (run1/best, run2/best)."""
    names = [p.name for p in checkpoints]
    if len(set(names)) == len(names):
        return names
    names = [f"{p.parent.name}/{p.name}" for p in checkpoints]
    return names if len(set(names)) == len(names) else [str(p) for p in checkpoints]


def compare(first: Scores, other: Scores) -> Comparison:
    """DeLong's paired test of ``other``'s AUC against ``first``'s on the images both scored."""
    where = {image_id: k for k, image_id in enumerate(other.ids)}
    ia = [k for k, image_id in enumerate(first.ids) if image_id in where]
    ib = [where[first.ids[k]] for k in ia]
    r = delong_test(first.labels[ia], first.probs[ia], other.probs[ib])
    return Comparison(first.name, other.name, len(ia), "DeLong (paired, two-sided)", r.auc1,
                      r.auc2, r.z, r.p_value)


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
    reports: list[CheckpointReport] = []
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
        overlap = training_overlap(sc.meta, data, fingerprint, str(ckpt))
        reports.append(replace(rep, training_overlap=overlap))
    return Evaluation(assemble_report(data, reports, all_scores, n_boot, seed), all_scores)


def assemble_report(
    data: EvalData, reports: Sequence[CheckpointReport], scores: Sequence[Scores], n_boot: int,
    seed: int,
) -> Report:
    """The whole report of ``reports`` (one per checkpoint, in order) on ``data``: the images
    every checkpoint scored, the bootstrap, the comparisons of each checkpoint with the first, and
    every image that failed."""
    failed = {path: error for sc in scores for path, error in sc.failed}
    return Report(
        attnmel_version=__version__,
        data=str(data.source),
        split=data.split,
        n_images=len(data.items) - len(failed),
        score_weight_zero=data.score_weight_zero,
        bootstrap=Bootstrap(n_boot, seed),
        checkpoints=tuple(reports),
        comparisons=tuple(compare(scores[0], sc) for sc in scores[1:]),
        failed=tuple(Failure(p, e) for p, e in failed.items()),
    )
