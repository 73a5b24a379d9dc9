"""``evaluate --html``: the whole evaluation as one self-contained HTML file, rendered by Jinja2
from ``templates/report.html.j2``: every picture inlined as a ``data:`` URI, plain JavaScript,
a Content-Security-Policy that forbids fetching anything, so it opens from an e-mail attachment.

The figures are the report's (:mod:`attnmel_cli.evaluation.report`), the curves ``plots.py``'s;
nothing is recomputed here but the gallery's maps, for the few images it shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import torch

from attnmel_cli.engine.inference import Session
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.evaluation.gallery import (
    GALLERY_OPTIONS,
    GALLERY_SIZE,
    Card,
    Section,
    build_gallery,
)
from attnmel_cli.evaluation.plots import class_figures, curve_figures
from attnmel_cli.evaluation.rendering import CLASS_COLUMNS, class_rows, metric_rows
from attnmel_cli.evaluation.report_figures import (
    diagnosis_chart,
    diagnosis_rows,
    figure_data_uri,
    score_histogram,
)
from attnmel_cli.evaluation.report_types import Failure
from attnmel_cli.evaluation.results import CheckpointReport, EvalData, Evaluation, Report
from attnmel_cli.io.atomic import write_text_atomic
from attnmel_cli.viz.overlay import MAP_LABELS

TEMPLATE = "report.html.j2"
# train_config fields shown in the header (the rest is in report.json)
TRAINING_FIELDS = ("epochs", "optimizer", "lr", "schedule", "batch_size", "roi", "pretrained",
                   "normalize", "seed")


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("attnmel_cli.evaluation", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def training_summary(cfg: dict[str, Any]) -> str:
    """A run's recipe in words: ``splits train,val`` or ``fold 2 of 3 (train + val pooled)``,
    then epochs, optimiser… (``—`` for a checkpoint that records none)."""
    if cfg.get("folds"):
        data = [f"fold {cfg.get('fold', 0)} of {cfg['folds']} held out (train + val pooled)"]
    else:
        data = [f"splits {cfg['train_splits']}"] if "train_splits" in cfg else []
    return ", ".join(data + [f"{k} {cfg[k]}" for k in TRAINING_FIELDS if k in cfg]) or "—"


def _model_card(rep: CheckpointReport) -> dict[str, Any]:
    """The model-card fields of one checkpoint, as the header shows them."""
    meta = rep.meta
    overlap = rep.training_overlap
    return {
        "name": rep.name,
        "path": rep.checkpoint.name,  # a report is shared: no local folders in it
        "fields": [
            ("architecture", f"{meta.arch} on {meta.backbone}"
                             + (f" (width {meta.width:g})" if meta.width != 1 else "")),
            ("input", f"{meta.image_size} px (strides {', '.join(map(str, meta.strides))})"),
            ("classes", ", ".join(meta.classes)),
            ("normalisation", f"mean {meta.mean}, std {meta.std}"),
            ("training", training_summary(meta.train_config or {})),
            ("data fingerprint", (meta.data_fingerprint or "—")[:16]),
            ("attnmel version", meta.attnmel_version),
        ],
        "trained_on_this": rep.trained_on_evaluated_images,
        "overlap": "" if overlap is None else overlap.sentence(rep.name),
    }


def _image_table(evaluation: Evaluation, data: EvalData) -> dict[str, Any]:
    """Every image of the split, one row each: id, label, diagnosis, each checkpoint's score
    and Jaccard of each map (None where it could not score the image, or there is no mask)."""
    several = len(evaluation.scores) > 1
    columns = ["#", "image", "label", "diagnosis"]
    for sc in evaluation.scores:
        suffix = f" ({sc.name})" if several else ""
        columns.append(f"p(melanoma){suffix}")
        columns += [f"Jaccard {MAP_LABELS.get(n, n).split()[0]}{suffix}" for n in sc.jaccard]
    where = [{image_id: i for i, image_id in enumerate(sc.ids)} for sc in evaluation.scores]
    rows = []
    for k, item in enumerate(data.items, 1):
        values: list[float | None] = []
        for sc, index in zip(evaluation.scores, where, strict=True):
            i = index.get(item.image_id)
            values.append(None if i is None else float(sc.probs[i]))
            values += [None if i is None or math.isnan(v[i]) else float(v[i])
                       for v in sc.jaccard.values()]
        rows.append((k, item.image_id, "melanoma" if item.label else "other", item.diagnosis,
                     values))
    return {"columns": columns, "rows": rows}


def _diagnoses(evaluation: Evaluation, data: EvalData) -> dict[str, Any] | None:
    """How often each diagnosis is called melanoma, per checkpoint (None: no diagnoses)."""
    diagnosis = {it.image_id: it.diagnosis for it in data.items}
    if not any(diagnosis.values()):
        return None
    by_checkpoint = {
        sc.name: diagnosis_rows([diagnosis[i] or "(none)" for i in sc.ids], sc.probs,
                                rep.threshold.value)
        for sc, rep in zip(evaluation.scores, evaluation.report.checkpoints, strict=True)
    }
    return {"rows": by_checkpoint, "chart": figure_data_uri(diagnosis_chart(by_checkpoint))}


def _classes(report: Report) -> dict[str, Any] | None:
    """The per-class sections of the multi-class checkpoints (None: there is none): per
    checkpoint its name and either its section and table rows, or why it has none."""
    shown = [
        {"name": rep.name, "section": rep.class_section, "skipped": rep.classes_skipped,
         "rows": [] if rep.class_section is None else class_rows(rep.class_section)}
        for rep in report.checkpoints if rep.multiclass is not None
    ]
    return {"checkpoints": shown, "columns": CLASS_COLUMNS} if shown else None


def _shown_path(path: str, base: Path) -> str:
    """``path`` as a shared report shows it: relative to the data dir when inside it, else by
    its name (no absolute folder of this machine)."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except (ValueError, OSError, RuntimeError):
        return Path(path).name


def _shareable(report: Report, source: Path) -> Report:
    """The report with the data dir by name and failed images relative to it."""
    failed = tuple(Failure(_shown_path(f.path, source),
                           f.error.replace(f.path, _shown_path(f.path, source)))
                   for f in report.failed)
    return replace(report, data=Path(report.data).name, failed=failed)


def render_html(
    evaluation: Evaluation, data: EvalData, gallery: list[tuple[Section, list[Card]]],
    *, created: datetime | None = None,
) -> str:
    """The report as one HTML document (``gallery``: :func:`build_gallery`'s sections)."""
    report = _shareable(evaluation.report, data.source)
    reps = report.checkpoints
    shown = [card for _, cards in gallery for card in cards if card.pictures]
    context = {
        "report": report,
        "created": (created or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC"),
        "n_melanoma": reps[0].n_melanoma,
        "models": [_model_card(rep) for rep in reps],
        "metric_rows": metric_rows(report),
        "curves": {name.removesuffix(".png"): figure_data_uri(fig)
                   for name, fig in curve_figures(evaluation).items()},
        "classes": _classes(report),
        "class_curves": [(name.removesuffix(".png").replace("_", " "), figure_data_uri(fig))
                         for name, fig in class_figures(evaluation).items()],
        "histograms": [figure_data_uri(score_histogram(sc, rep.threshold.value))
                       for sc, rep in zip(evaluation.scores, reps, strict=True)],
        "gallery": gallery,
        "outlined": any(card.outlined for card in shown),
        "panels": [caption for caption, _ in shown[0].pictures] if shown else [],
        "gallery_checkpoint": reps[0].name,
        "threshold": reps[0].threshold.value,
        "diagnoses": _diagnoses(evaluation, data),
        "table": _image_table(evaluation, data),
        "map_labels": MAP_LABELS,
    }
    return _environment().get_template(TEMPLATE).render(context)


def write_html_report(
    evaluation: Evaluation, data: EvalData, targets: Sequence[Path], device: torch.device, *,
    gallery: int = GALLERY_SIZE, options: ScoringOptions = GALLERY_OPTIONS,
    overwrite: bool = False,
) -> list[Path]:
    """Build the gallery with the first checkpoint (loaded again on ``device``, scoring as
    ``options`` say), render the report and write it, atomically, to each of ``targets``."""
    first = evaluation.scores[0]
    threshold = evaluation.report.checkpoints[0].threshold.value
    sections = build_gallery(
        first, data, Session.load(first.checkpoint, device), threshold, gallery, options,
    ) if gallery else []
    html = render_html(evaluation, data, sections)
    return [write_text_atomic(t, html, overwrite=overwrite) for t in targets]
