"""The HTML report's own figures and tables beside ``plots.py``'s curves: the score histogram of
each class, how often each diagnosis is called melanoma, and images as ``data:`` URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from attnmel_cli.evaluation.results import Scores
from attnmel_cli.io.safe_text import plain_label

HISTOGRAM_BINS = 20


def figure_data_uri(fig: Figure, dpi: int = 80) -> str:
    """A Matplotlib figure as a ``data:image/png;base64,…`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def jpeg_data_uri(img: Image.Image, quality: int = 80) -> str:
    """A picture as a ``data:image/jpeg;base64,…`` URI."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def score_histogram(sc: Scores, threshold: float) -> Figure:
    """p_melanoma of the melanomas and of the other images (each as a fraction of its class,
    so the rarer class stays visible), the threshold marked."""
    fig, ax = _figure(5, 3.2)
    bins = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    for label, name, colour in ((0, "other", "tab:blue"), (1, "melanoma", "tab:red")):
        p = sc.probs[sc.labels == label]
        weights = np.full(len(p), 1 / max(len(p), 1))
        ax.hist(p, bins=bins, weights=weights, histtype="stepfilled", alpha=0.35, color=colour,
                label=f"{name} ({len(p)})")
        ax.hist(p, bins=bins, weights=weights, histtype="step", color=colour)
    ax.axvline(threshold, ls="--", c="black", lw=1, label=f"threshold {threshold:.3g}")
    ax.set(title=plain_label(sc.name), xlabel="p(melanoma)", ylabel="fraction of the class",
           xlim=(0, 1))
    ax.legend(fontsize="small")
    return fig


@dataclass(frozen=True)
class DiagnosisRow:
    """How one checkpoint calls the images of one diagnosis at its threshold."""

    diagnosis: str
    n_images: int
    called_melanoma: int
    mean_p: float

    @property
    def rate(self) -> float:
        return self.called_melanoma / self.n_images


def diagnosis_rows(
    diagnoses: Sequence[str], probs: np.ndarray, threshold: float
) -> list[DiagnosisRow]:
    """Per diagnosis (most images first, then by name): images, how many have
    ``p >= threshold`` (called melanoma) and the mean ``p``."""
    groups = np.asarray(diagnoses, dtype=object)
    probs = np.asarray(probs, dtype=float)
    rows = []
    for name in sorted(set(diagnoses), key=lambda d: (-diagnoses.count(d), d)):
        p = probs[groups == name]
        rows.append(DiagnosisRow(name, len(p), int(np.sum(p >= threshold)), float(p.mean())))
    return rows


def diagnosis_chart(by_checkpoint: dict[str, list[DiagnosisRow]]) -> Figure:
    """Horizontal bars: the fraction of each diagnosis called melanoma, one bar per checkpoint."""
    count: dict[str, int] = {}  # images per diagnosis (the most any checkpoint scored)
    for rows in by_checkpoint.values():
        for r in rows:
            count[r.diagnosis] = max(count.get(r.diagnosis, 0), r.n_images)
    names = list(count)
    height = 0.8 / len(by_checkpoint)
    fig, ax = _figure(6, 0.8 + 0.3 * len(names) * len(by_checkpoint))
    y = np.arange(len(names))
    for k, (checkpoint, rows) in enumerate(by_checkpoint.items()):
        rate = {r.diagnosis: r.rate for r in rows}
        ax.barh(y + k * height, [rate.get(n, np.nan) for n in names], height,
                label=plain_label(checkpoint))
    # diagnoses from a label file: drawn as written, never as mathtext
    ax.set_yticks(y + height * (len(by_checkpoint) - 1) / 2,
                  [f"{plain_label(n)} ({count[n]})" for n in names])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="fraction called melanoma at the threshold")
    ax.grid(axis="x", alpha=0.3)
    if len(by_checkpoint) > 1:
        ax.legend(fontsize="small")
    return fig
