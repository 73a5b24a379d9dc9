"""The report rendered as files and text: strict JSON, ``predictions.csv``, the output files, and
the cells of its tables (:func:`metric_rows`, :func:`class_rows`), one column per checkpoint (the
paper's Tables 1–3), which the terminal (:mod:`attnmel_cli.cli.render`) and the HTML report
(:mod:`attnmel_cli.evaluation.html_report`) lay out each in its own way."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attnmel_cli.evaluation.isic_scorer import PARTIAL_AUC_SENSITIVITY, SENSITIVITIES
from attnmel_cli.evaluation.metrics import ThresholdMetrics
from attnmel_cli.evaluation.outputs import check_outputs
from attnmel_cli.evaluation.plots import write_plots
from attnmel_cli.evaluation.report_types import ClassSection, Estimate
from attnmel_cli.evaluation.results import (
    SPECIFICITIES,
    CheckpointReport,
    Evaluation,
    Report,
    Scores,
)
from attnmel_cli.io.atomic import write_text_atomic
from attnmel_cli.io.safe_text import csv_cell
from attnmel_cli.models.names import is_binary


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def report_json(record: dict[str, Any]) -> str:
    """A report's record (:meth:`Report.as_record`) as strict JSON (NaN and infinity as
    null)."""
    return json.dumps(_finite_or_none(record), indent=2, ensure_ascii=False) + "\n"


def _maps(scores: Sequence[Scores]) -> list[str]:
    """The maps with a Jaccard column, in order of first appearance."""
    return list(dict.fromkeys(n for sc in scores for n in sc.jaccard))


def _classes(scores: Sequence[Scores]) -> list[str]:
    """The classes of the multi-class checkpoints with a ``p_<class>`` column, in order of first
    appearance (not ``melanoma``: its column is ``p_melanoma``)."""
    return list(dict.fromkeys(
        c for sc in scores if not is_binary(sc.meta.classes) for c in sc.meta.classes
        if c != "melanoma"
    ))


def prediction_records(scores: Sequence[Scores]) -> list[dict[str, Any]]:
    """One record per image and checkpoint: ``image_id, label`` (ground truth), ``p_melanoma``,
    ``checkpoint``, ``p_<class>`` per class of the multi-class checkpoints (None where the
    checkpoint has no such class) and ``jaccard_<map>`` per map (None where the image has no
    lesion mask)."""
    maps, classes = _maps(scores), _classes(scores)
    records = []
    for sc in scores:
        binary = is_binary(sc.meta.classes)
        where = {} if binary else {c: k for k, c in enumerate(sc.meta.classes)}
        for i, image_id in enumerate(sc.ids):
            jac = [float(sc.jaccard[n][i]) if n in sc.jaccard else math.nan for n in maps]
            records.append({
                "image_id": image_id, "label": int(sc.labels[i]),
                "p_melanoma": float(sc.probs[i]), "checkpoint": sc.name,
                **{f"p_{c}": float(sc.class_probs[i, where[c]]) if c in where else None
                   for c in classes},
                **{f"jaccard_{n}": None if math.isnan(j) else j
                   for n, j in zip(maps, jac, strict=True)},
            })
    return records


def predictions_csv(scores: Sequence[Scores]) -> str:
    """:func:`prediction_records` as CSV with a header (``predictions.csv``).

    Probabilities are written in full precision, so recomputing a metric from the file gives
    the report's value exactly; a text cell a spreadsheet would run as a formula (an image id or
    checkpoint name beginning with ``=``…) gets a leading ``'``.
    """
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "label", "p_melanoma", "checkpoint",
                     *(f"p_{c}" for c in _classes(scores)),
                     *(f"jaccard_{n}" for n in _maps(scores))])
    for rec in prediction_records(scores):
        writer.writerow(
            "" if v is None else repr(v) if isinstance(v, float) else csv_cell(v)
            for v in rec.values()
        )
    return buf.getvalue()


def stdout_text(evaluation: Evaluation, fmt: str) -> str:
    """``evaluate --format json|csv|jsonl``: the report as JSON, or the per-image records as
    CSV or JSON lines."""
    if fmt == "json":
        return report_json(evaluation.report.as_record())
    if fmt == "csv":
        return predictions_csv(evaluation.scores)
    records = prediction_records(evaluation.scores)
    return "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)


def write_outputs(evaluation: Evaluation, out: Path, *, overwrite: bool = False) -> list[Path]:
    """predictions.csv, report.json and the plots in ``out``; nothing is written when one of
    evaluate's files exists already and ``overwrite`` is false."""
    check_outputs(out, overwrite=overwrite)
    written = [
        write_text_atomic(
            out / "predictions.csv", predictions_csv(evaluation.scores), overwrite=overwrite
        ),
        write_text_atomic(out / "report.json", report_json(evaluation.report.as_record()),
                          overwrite=overwrite),
    ]
    return written + write_plots(evaluation, out, overwrite=overwrite)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _with_ci(estimate: Estimate) -> str:
    """``value [low, high]`` of an estimate."""
    ci = estimate.ci95
    return _fmt(estimate.value) + ("" if ci is None else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]")


def _counts(rates: ThresholdMetrics) -> str:
    """The confusion matrix in one cell: ``TN / FP / FN / TP``."""
    return f"{rates.tn} / {rates.fp} / {rates.fn} / {rates.tp}"


# the rates at the threshold, in the tables' order
AT_THRESHOLD: tuple[tuple[str, Callable[[ThresholdMetrics], float]], ...] = (
    ("sensitivity", lambda r: r.sensitivity),
    ("specificity", lambda r: r.specificity),
    ("precision (PPV)", lambda r: r.precision),
    ("NPV", lambda r: r.npv),
    ("balanced accuracy", lambda r: r.balanced_accuracy),
    ("accuracy", lambda r: r.accuracy),
    ("F1 (Dice)", lambda r: r.f1),
)


def metric_rows(report: Report) -> list[tuple[str, list[str]]]:
    """The report's figures as (label, one cell per checkpoint) rows: the terminal table's and
    the HTML report's (the paper's Table 1–3 layout, then the ISIC scorer's figures)."""
    reports = report.checkpoints
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[CheckpointReport], str]) -> None:
        rows.append((label, [cell(r) for r in reports]))

    row("AP (95 % CI)", lambda r: _with_ci(r.average_precision))
    row("AUC (95 % CI)", lambda r: _with_ci(r.roc_auc))
    row(
        f"AUC above {PARTIAL_AUC_SENSITIVITY:.0%} sensitivity",
        lambda r: _with_ci(r.roc_auc_above_sensitivity.auc),
    )
    row("threshold t (melanoma: p ≥ t)", lambda r: _fmt(r.threshold.value))
    for label, rate in AT_THRESHOLD:
        row(f"  {label}", lambda r, rate=rate: _fmt(rate(r.at_threshold.rates)))
    row("  TN / FP / FN / TP", lambda r: _counts(r.at_threshold.rates))
    for spec in SPECIFICITIES:
        row(
            f"sensitivity @ {spec:.0%} specificity",
            lambda r, s=spec: _fmt(r.sensitivity_at_specificity[s].sensitivity),
        )
    for sens in SENSITIVITIES:
        row(
            f"specificity @ {sens:.0%} sensitivity",
            lambda r, s=sens: _fmt(r.specificity_at_sensitivity[s].specificity),
        )
    row("ECE", lambda r: _fmt(r.expected_calibration_error.value))
    sections = [r.class_section for r in reports]
    if any(sections):
        rows.append(("balanced multi-class accuracy",
                     [_fmt(s.balanced_accuracy) if s else "—" for s in sections]))
        rows.append(("multi-class accuracy", [_fmt(s.accuracy) if s else "—" for s in sections]))
    if any(s and s.isic2017_part3_mean_auc is not None for s in sections):
        rows.append(("ISIC 2017 Part 3: mean AUC (MEL, SK)", [
            _fmt(s.isic2017_part3_mean_auc) if s else "—" for s in sections
        ]))
    maps = list(dict.fromkeys(n for r in reports for n in r.attention_jaccard))
    for name in maps:
        row(
            f"Jaccard {name} (Table 3)",
            lambda r, n=name: _fmt(r.attention_jaccard[n].mean if n in r.attention_jaccard
                                   else None),
        )
    if report.comparisons:
        p_values = [_fmt(c.p_value, 4) for c in report.comparisons]
        rows.append(("AUC vs first: p (DeLong)", ["", *p_values]))
    return rows


CLASS_COLUMNS = ("class", "images", "AUC (95 % CI)", "AP (95 % CI)", "sens.", "spec.", "PPV",
                 "NPV", "F1")


def class_rows(section: ClassSection) -> list[list[str]]:
    """One row per class of a per-class section (:data:`CLASS_COLUMNS`): one-vs-rest AUC and AP,
    and the rates of the arg-max prediction."""
    return [
        [name, str(c.n_images), _with_ci(c.roc_auc), _with_ci(c.average_precision),
         *(_fmt(v) for v in (c.rates.sensitivity, c.rates.specificity, c.rates.precision,
                             c.rates.npv, c.rates.f1))]
        for name, c in section.per_class.items()
    ]
