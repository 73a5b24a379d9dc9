"""``evaluate``'s plots: ROC, precision–recall and reliability, one curve per checkpoint; for
multi-class checkpoints, the per-class curves and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from attnmel_cli.evaluation import metrics
from attnmel_cli.evaluation.outputs import CLASS_PLOTS
from attnmel_cli.evaluation.report_types import ClassSection
from attnmel_cli.evaluation.results import ECE_BINS, Evaluation
from attnmel_cli.io.atomic import atomic_path
from attnmel_cli.io.safe_text import plain_label


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    return fig, ax


def _save_png(fig: Figure, target: Path, overwrite: bool) -> None:
    with atomic_path(target, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def curve_figures(evaluation: Evaluation) -> dict[str, Figure]:
    """The ROC, precision–recall and reliability figures (one curve per checkpoint), by the
    name of the file ``evaluate --out`` writes each to."""
    roc, roc_ax = _figure("ROC", "1 − specificity", "sensitivity")
    roc_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    pr, pr_ax = _figure("Precision–recall", "recall (sensitivity)", "precision")
    rel, rel_ax = _figure("Reliability", "mean predicted p(melanoma)", "fraction melanoma")
    rel_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    for sc, rep in zip(evaluation.scores, evaluation.report.checkpoints, strict=True):
        name = plain_label(sc.name)  # a file name: drawn as written, never as mathtext
        fpr, tpr, _ = roc_curve(sc.labels, sc.probs)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {rep.roc_auc.value:.3f})")
        prec, rec, _ = precision_recall_curve(sc.labels, sc.probs)
        pr_ax.step(
            rec, prec, where="post", label=f"{name} (AP {rep.average_precision.value:.3f})"
        )
        bins = metrics.calibration_bins(sc.labels, sc.probs, ECE_BINS)
        used = bins.count > 0
        ece = rep.expected_calibration_error.value
        rel_ax.plot(
            bins.mean_probability[used],
            bins.fraction_positive[used],
            "o-",
            label=f"{name} (ECE {ece:.3f})",
        )
    for ax in (roc_ax, pr_ax, rel_ax):
        ax.legend(loc="lower right", fontsize="small")
    return {"roc.png": roc, "pr.png": pr, "reliability.png": rel}


def class_figures(evaluation: Evaluation) -> dict[str, Figure]:
    """Per multi-class checkpoint (one panel each): the one-vs-rest ROC and precision–recall
    curve of every class with images, and the confusion matrix of the arg-max prediction (each
    row as a fraction of its class, the counts written in); by the name of the file ``evaluate
    --out`` writes each to. Empty without a multi-class checkpoint whose classes are known."""
    shown = [(sc, rep.class_section) for sc, rep in
             zip(evaluation.scores, evaluation.report.checkpoints, strict=True)
             if rep.class_section is not None]
    if not shown:
        return {}
    figures = {name: Figure(figsize=(5 * len(shown), 5), dpi=100) for name in CLASS_PLOTS}
    for fig in figures.values():
        FigureCanvasAgg(fig)
    roc_fig, pr_fig, cm_fig = (figures[name] for name in CLASS_PLOTS)
    for k, (sc, section) in enumerate(shown, 1):
        roc_ax, pr_ax = roc_fig.add_subplot(1, len(shown), k), pr_fig.add_subplot(1, len(shown), k)
        title = plain_label(sc.name)
        roc_ax.set(title=f"{title}: one-vs-rest ROC", xlabel="1 − specificity",
                   ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02))
        pr_ax.set(title=f"{title}: one-vs-rest precision–recall", xlabel="recall",
                  ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        roc_ax.plot([0, 1], [0, 1], ls=":", c="grey")
        for c, name in enumerate(section.classes):
            y, p = sc.true_class == c, sc.class_probs[:, c]
            if 0 < y.sum() < len(y):
                one = section.per_class[name]
                fpr, tpr, _ = roc_curve(y, p)
                roc_ax.plot(fpr, tpr,
                            label=f"{plain_label(name)} (AUC {one.roc_auc.value:.3f})")
                prec, rec, _ = precision_recall_curve(y, p)
                pr_ax.step(rec, prec, where="post",
                           label=f"{plain_label(name)} "
                                 f"(AP {one.average_precision.value:.3f})")
        for ax in (roc_ax, pr_ax):
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize="small")
        _confusion_panel(cm_fig.add_subplot(1, len(shown), k), title, section)
    return figures


def _confusion_panel(ax: Any, name: str, section: ClassSection) -> None:
    """The confusion matrix of a per-class section: rows true, columns predicted."""
    counts = np.asarray(section.confusion)
    fraction = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    ticks, labels = range(len(section.classes)), list(map(plain_label, section.classes))
    ax.set_xticks(ticks, labels, rotation=30, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set(title=f"{name}: confusion matrix", xlabel="predicted class", ylabel="true class")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if fraction[i, j] > 0.5 else "black")


def write_plots(evaluation: Evaluation, out: Path, *, overwrite: bool = False) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``reliability.png`` (one curve per checkpoint), and for
    multi-class checkpoints the :func:`class_figures`."""
    written = []
    figures = {**curve_figures(evaluation), **class_figures(evaluation)}
    for fname, fig in figures.items():
        _save_png(fig, out / fname, overwrite)
        written.append(out / fname)
    return written
