"""The report rendered: strict JSON, ``predictions.csv``, the output files, and a Rich table
with one column per checkpoint (the paper's Tables 1–3)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from attnmel_cli.errors import AttnMelError
from attnmel_cli.evaluation.plots import write_plots
from attnmel_cli.evaluation.results import SPECIFICITIES, Evaluation, Scores
from attnmel_cli.io.atomic import ensure_dir, refuse_unless_forced, write_text_atomic

OUTPUT_FILES = (
    "predictions.csv", "report.json", "roc.png", "pr.png", "reliability.png", "report.html"
)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def report_json(report: dict[str, Any]) -> str:
    """The report as strict JSON (NaN and infinity as null)."""
    return json.dumps(_finite_or_none(report), indent=2, ensure_ascii=False) + "\n"


def _maps(scores: Sequence[Scores]) -> list[str]:
    """The maps with a Jaccard column, in order of first appearance."""
    return list(dict.fromkeys(n for sc in scores for n in sc.jaccard))


def prediction_records(scores: Sequence[Scores]) -> list[dict[str, Any]]:
    """One record per image and checkpoint: ``image_id, label`` (ground truth), ``p_melanoma``,
    ``checkpoint`` and ``jaccard_<map>`` per map (None where the image has no lesion mask)."""
    maps = _maps(scores)
    records = []
    for sc in scores:
        for i, image_id in enumerate(sc.ids):
            jac = [float(sc.jaccard[n][i]) if n in sc.jaccard else math.nan for n in maps]
            records.append({
                "image_id": image_id, "label": int(sc.labels[i]),
                "p_melanoma": float(sc.probs[i]), "checkpoint": sc.name,
                **{f"jaccard_{n}": None if math.isnan(j) else j
                   for n, j in zip(maps, jac, strict=True)},
            })
    return records


def predictions_csv(scores: Sequence[Scores]) -> str:
    """:func:`prediction_records` as CSV with a header (``predictions.csv``).

    Probabilities are written in full precision, so recomputing a metric from the file gives
    the report's value exactly.
    """
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "label", "p_melanoma", "checkpoint",
                     *(f"jaccard_{n}" for n in _maps(scores))])
    for rec in prediction_records(scores):
        writer.writerow(
            "" if v is None else repr(v) if isinstance(v, float) else v for v in rec.values()
        )
    return buf.getvalue()


def stdout_text(evaluation: Evaluation, fmt: str) -> str:
    """``evaluate --format json|csv|jsonl``: the report as JSON, or the per-image records as
    CSV or JSON lines."""
    if fmt == "json":
        return report_json(evaluation.report)
    if fmt == "csv":
        return predictions_csv(evaluation.scores)
    records = prediction_records(evaluation.scores)
    return "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)


def check_outputs(out: Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that holds evaluate's files unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise AttnMelError(f"{out}: exists and is not a folder")
    existing = (out / f for f in OUTPUT_FILES if (out / f).exists())
    refuse_unless_forced(next(existing, None), force=overwrite)
    ensure_dir(out)  # fail now, not after scoring, where the folder cannot be written


def write_outputs(evaluation: Evaluation, out: Path, *, overwrite: bool = False) -> list[Path]:
    """predictions.csv, report.json and the three plots in ``out``; nothing is written when one
    of them exists already and ``overwrite`` is false."""
    check_outputs(out, overwrite=overwrite)
    written = [
        write_text_atomic(
            out / "predictions.csv", predictions_csv(evaluation.scores), overwrite=overwrite
        ),
        write_text_atomic(out / "report.json", report_json(evaluation.report), overwrite=overwrite),
    ]
    return written + write_plots(evaluation, out, overwrite=overwrite)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def metric_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The report's figures as (label, one cell per checkpoint) rows: the terminal table's and
    the HTML report's (the paper's Table 1–3 layout)."""
    reports = report["checkpoints"]
    rows: list[tuple[str, list[str]]] = []

    def with_ci(block: dict[str, Any]) -> str:
        ci = block["ci95"]
        return _fmt(block["value"]) + ("" if ci is None else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]")

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [cell(r) for r in reports]))

    row("AP (95 % CI)", lambda r: with_ci(r["average_precision"]))
    row("AUC (95 % CI)", lambda r: with_ci(r["roc_auc"]))
    row("threshold", lambda r: _fmt(r["threshold"]["value"]))
    for key, label in (
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
        ("precision", "precision"),
        ("balanced_accuracy", "balanced accuracy"),
    ):
        row(f"  {label}", lambda r, k=key: _fmt(r["at_threshold"][k]))
    row(
        "  TN / FP / FN / TP",
        lambda r: "{tn} / {fp} / {fn} / {tp}".format(**r["at_threshold"]["confusion_matrix"]),
    )
    for spec in SPECIFICITIES:
        row(
            f"sensitivity @ {spec:.0%} specificity",
            lambda r, s=f"{spec:.2f}": _fmt(r["sensitivity_at_specificity"][s]["sensitivity"]),
        )
    row("ECE", lambda r: _fmt(r["expected_calibration_error"]["value"]))
    maps = list(dict.fromkeys(n for r in reports for n in r.get("attention_jaccard", {})))
    for name in maps:
        row(
            f"Jaccard {name} (Table 3)",
            lambda r, n=name: _fmt(r.get("attention_jaccard", {}).get(n, {}).get("mean")),
        )
    if report["comparisons"]:
        p_values = [_fmt(c["p_value"], 4) for c in report["comparisons"]]
        rows.append(("AUC vs first: p (DeLong)", ["", *p_values]))
    return rows


def report_table(report: dict[str, Any]) -> Table:
    """The report as a Rich table: one column per checkpoint (:func:`metric_rows`)."""
    reports = report["checkpoints"]
    table = Table(
        title=f"{report['data']} · split {report['split']} · {reports[0]['n_images']} images"
    )
    table.add_column("metric")
    for rep in reports:
        table.add_column(rep["name"], justify="right")
    for label, cells in metric_rows(report):
        table.add_row(label, *cells)
    return table
