"""``evaluate``'s plots: ROC, precision–recall and reliability, one curve per checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from attnmel_cli.evaluation import metrics
from attnmel_cli.evaluation.results import ECE_BINS, Evaluation
from attnmel_cli.io.atomic import atomic_path


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
    for sc, rep in zip(evaluation.scores, evaluation.report["checkpoints"], strict=True):
        name = sc.name
        fpr, tpr, _ = roc_curve(sc.labels, sc.probs)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {rep['roc_auc']['value']:.3f})")
        prec, rec, _ = precision_recall_curve(sc.labels, sc.probs)
        pr_ax.step(
            rec, prec, where="post", label=f"{name} (AP {rep['average_precision']['value']:.3f})"
        )
        bins = metrics.calibration_bins(sc.labels, sc.probs, ECE_BINS)
        used = bins.count > 0
        ece = rep["expected_calibration_error"]["value"]
        rel_ax.plot(
            bins.mean_probability[used],
            bins.fraction_positive[used],
            "o-",
            label=f"{name} (ECE {ece:.3f})",
        )
    for ax in (roc_ax, pr_ax, rel_ax):
        ax.legend(loc="lower right", fontsize="small")
    return {"roc.png": roc, "pr.png": pr, "reliability.png": rel}


def write_plots(evaluation: Evaluation, out: Path, *, overwrite: bool = False) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``reliability.png``: one curve per checkpoint."""
    written = []
    for fname, fig in curve_figures(evaluation).items():
        _save_png(fig, out / fname, overwrite)
        written.append(out / fname)
    return written
