"""``evaluate``: the paper's AP and AUC (§3.1) with their uncertainty, operating points,
calibration, plots, and the attention quality of Table 3 (§3.3), for one checkpoint or several
side by side on the same images.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from rich.table import Table
from sklearn.metrics import precision_recall_curve, roc_curve

from attnmel_cli import __version__, metrics
from attnmel_cli.checkpoint import CheckpointMeta
from attnmel_cli.datasets import read_source
from attnmel_cli.distributed import SINGLE, Dist
from attnmel_cli.errors import AttnMelError, DataError, InputError
from attnmel_cli.fsio import atomic_path, ensure_dir, write_text_atomic
from attnmel_cli.manifest import MANIFEST_NAME, Problems, read_manifest
from attnmel_cli.predict import Session
from attnmel_cli.prepare import ORIENTATION_TRANSPOSE, match_files
from attnmel_cli.preprocess import (
    DECODE_ERRORS,
    DEFAULT_MAX_PIXELS,
    PREPARED_SIZE,
    centre_crop,
    paper_crop_box,
    resize_size,
)

SPECIFICITIES = (0.80, 0.90, 0.95)  # the ISIC challenge scorer reports the first
ECE_BINS = 10
OUTPUT_FILES = ("predictions.csv", "report.json", "roc.png", "pr.png", "reliability.png")
Advance = Callable[[], None]


@dataclass(frozen=True)
class Item:
    """One labelled image; ``lesion_mask`` is aligned with it, or ``None``."""

    image_id: str
    path: Path
    label: int
    lesion_mask: Path | None = None


@dataclass(frozen=True)
class EvalData:
    """The labelled images of one split (prepared dir) or of a layout never prepared."""

    source: Path
    split: str | None
    items: list[Item]
    prepared: bool


@dataclass
class Scores:
    """One checkpoint's results on an :class:`EvalData`, failed images left out."""

    checkpoint: Path
    name: str  # how tables, plots and predictions.csv call the checkpoint
    meta: CheckpointMeta
    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    jaccard: dict[str, np.ndarray]  # map name → per scored image (nan: no lesion mask)
    failed: list[tuple[str, str]]  # (path, error)


@dataclass
class Evaluation:
    """Everything ``evaluate`` computed: the JSON-ready report and the scores behind it."""

    report: dict[str, Any]
    scores: list[Scores]


def parse_threshold(text: str) -> float | None:
    """``--threshold``: a probability in [0, 1], or ``val`` (→ ``None``: choose on validation)."""
    if text.strip().lower() == "val":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise AttnMelError(f"--threshold must be a probability in [0, 1] or 'val'; got {text!r}")
    return value


def load_data(data: Path, split: str, dataset: str = "auto") -> EvalData:
    """The labelled ``split`` images of ``data``, with their lesion masks where there are any.

    ``data`` is a prepared dir (``manifest.csv``) or a source never prepared: an ISIC download or
    a generic layout (class folders, or a CSV of image,label), read and matched as ``prepare``
    does. A photo-sized lesion mask must cover the photo's pixel grid.
    A source whose labels name no split at all is evaluated whole.
    """
    if (data / MANIFEST_NAME).is_file():
        rows = read_manifest(data, split)
        if not rows:
            present = sorted({r.split for r in read_manifest(data)})
            raise DataError(
                f"{data / MANIFEST_NAME}: no {split!r} images "
                f"(splits present: {', '.join(present)})"
            )
        items = [
            Item(
                r.image_id, data / r.image, r.label, data / r.lesion_mask if r.lesion_mask else None
            )
            for r in rows
        ]
        return EvalData(data, split, items, prepared=True)
    problems = Problems(str(data))
    jobs, _ = match_files(read_source(data, problems, dataset), problems)
    problems.raise_if_any()
    splits = {j.split for j in jobs if j.split}
    if splits:
        jobs = [j for j in jobs if j.split == split]
        if not jobs:
            raise DataError(
                f"{data}: no {split!r} images (splits present: {', '.join(sorted(splits))})"
            )
    items = [Item(j.image_id, j.image, j.label, j.lesion) for j in jobs]
    return EvalData(data, split if splits else None, items, prepared=False)


def load_val_data(data: Path, dataset: str = "auto") -> EvalData:
    """The validation split on which ``--threshold val`` is chosen."""
    try:
        val = load_data(data, "val", dataset)
    except DataError as exc:
        raise DataError(f"--threshold val: {exc}") from None
    if val.split is None:
        raise DataError(f"--threshold val: {data} has no val split (its labels name no splits)")
    return val


def _of_split(data: EvalData) -> str:
    return "" if data.split is None else f" of split {data.split!r}"


def load_mask(
    path: Path, image_size: int, *, prepared: bool, photo: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A lesion mask in the network input's frame (S×S, bool), with the image's own geometry.

    A prepared mask (256×256, aligned with its image) is resized to R and centre-cropped to S as
    the image is (``preprocess.prepared_to_input``); a photo-sized mask first gets the photo's
    EXIF orientation (as ``prepare`` does), then the paper crop. Nearest-neighbour throughout,
    so the mask stays binary. With ``photo`` (its image), a mask that is not on the image's
    pixel grid is refused (InputError), before the mask is decoded; so is a mask declaring more
    than ``max_pixels``.
    """
    orientation, stored = 1, None
    if photo is not None:
        try:
            with Image.open(photo) as img:
                stored = img.size
                orientation = 1 if prepared else int(img.getexif().get(0x0112, 1))
        except DECODE_ERRORS as exc:
            raise InputError(f"{photo}: cannot read image header ({exc})") from None
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise InputError(
                    f"{path}: lesion mask declares {img.width}×{img.height} px, over the pixel "
                    "limit (possible decompression bomb); raise it with --max-pixels if genuine"
                )
            if stored is not None and img.size != stored:
                raise InputError(
                    f"{path}: lesion mask is {img.width}×{img.height} px but its image "
                    f"{photo.name} is {stored[0]}×{stored[1]} px"  # type: ignore[union-attr]
                )
            mask = img.convert("L")
    except InputError:
        raise
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read lesion mask ({exc})") from None
    if not prepared:
        if orientation in ORIENTATION_TRANSPOSE:
            mask = mask.transpose(ORIENTATION_TRANSPOSE[orientation])
        box = paper_crop_box(*mask.size)
        mask = mask.resize((PREPARED_SIZE, PREPARED_SIZE), Image.NEAREST, box=box)
    r = resize_size(image_size)
    if mask.size != (r, r):
        mask = mask.resize((r, r), Image.NEAREST)
    return np.asarray(centre_crop(mask, image_size)) > 127


def score(
    session: Session,
    data: EvalData,
    checkpoint: Path,
    name: str,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    advance: Advance | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dist: Dist = SINGLE,
) -> Scores:
    """Score every image of ``data``; Table 3 Jaccard of each map where a lesion mask exists.

    Under torchrun (``dist``) each rank scores a contiguous block of the images and every rank
    gets all the results, in input order.
    """
    names = session.map_names() if any(it.lesion_mask for it in data.items) else []
    lo, hi = dist.bounds(len(data.items))
    items = data.items[lo:hi]
    # (item, path, p_melanoma, {map: jaccard}, error) per image of this rank's block
    local: list[tuple[Item, str, float | None, dict[str, float], str | None]] = []
    for s in session.score(
        [str(it.path) for it in items], batch_size=batch_size, workers=workers,
        keep_maps=bool(names), prepared=data.prepared, max_pixels=max_pixels,
    ):
        item = items[s.index]
        try:
            if s.error is not None:
                raise InputError(s.error)
            mask = (
                load_mask(
                    item.lesion_mask, session.meta.image_size, prepared=data.prepared,
                    photo=item.path, max_pixels=max_pixels,
                )
                if names and item.lesion_mask
                else None
            )
        except InputError as exc:
            local.append((item, s.path, None, {}, str(exc)))
        else:
            local.append((item, s.path, s.p_melanoma, {
                n: math.nan if mask is None else metrics.attention_jaccard(s.maps[n], mask)
                for n in names
            }, None))
        if advance is not None:
            advance()
    ids, labels, probs, failed = [], [], [], []
    jaccard: dict[str, list[float]] = {n: [] for n in names}
    for item, path, p, jac, error in dist.gather(local):
        if error is not None:
            failed.append((path, error))
            continue
        ids.append(item.image_id)
        labels.append(item.label)
        probs.append(p)
        for n in names:
            jaccard[n].append(jac[n])
    return Scores(
        checkpoint,
        name,
        session.meta,
        ids,
        np.asarray(labels, dtype=int),
        np.asarray(probs, dtype=float),
        {n: np.asarray(v, dtype=float) for n, v in jaccard.items()},
        failed,
    )


def _interval(
    y: np.ndarray, p: np.ndarray, metric: metrics.Metric, n_boot: int, seed: int
) -> dict[str, Any]:
    value = metric(y, p)
    ci = metrics.bootstrap_ci(y, p, metric, n_boot=n_boot, seed=seed) if n_boot else None
    return {"value": value, "ci95": None if ci is None else list(ci)}


def checkpoint_report(
    sc: Scores, threshold: float, threshold_source: str, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Every figure of one checkpoint on its scored images (JSON-ready, non-finite kept as is)."""
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
        "metadata": {**asdict(meta), "preprocessing": meta.preprocessing},
        "n_images": len(y),
        "n_melanoma": int(y.sum()),
        "average_precision": _interval(y, p, metrics.average_precision, n_boot, seed),
        "roc_auc": _interval(y, p, metrics.roc_auc, n_boot, seed),
        "threshold": {"value": threshold, "source": threshold_source},
        "at_threshold": {
            "sensitivity": at.sensitivity,
            "specificity": at.specificity,
            "precision": at.precision,
            "balanced_accuracy": at.balanced_accuracy,
            "confusion_matrix": {"tn": at.tn, "fp": at.fp, "fn": at.fn, "tp": at.tp},
        },
        "sensitivity_at_specificity": {
            f"{spec:.2f}": asdict(metrics.sensitivity_at_specificity(y, p, spec))
            for spec in SPECIFICITIES
        },
        "expected_calibration_error": {
            "value": metrics.expected_calibration_error(y, p, ECE_BINS),
            "bins": ECE_BINS,
        },
    }
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
    *,
    threshold: float | None = 0.5,
    val_data: EvalData | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    workers: int | None = None,
    advance: Advance | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dist: Dist = SINGLE,
) -> Evaluation:
    """Score ``data`` with each checkpoint (loaded one at a time) and build the report.

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
            f"{data.source}: all {len(data.items)} images{_of_split(data)} are {only}; "
            "AP and AUC need both melanoma and other images"
        )
    all_scores: list[Scores] = []
    reports = []
    for ckpt, name in zip(checkpoints, display_names(checkpoints), strict=True):
        session = Session.load(ckpt, device)
        sc = score(
            session, data, ckpt, name, batch_size=batch_size, workers=workers, advance=advance,
            max_pixels=max_pixels, dist=dist,
        )
        t, source = threshold, "given"
        if val_data is not None and t is None:
            val = score(
                session, val_data, ckpt, name, batch_size=batch_size, workers=workers,
                max_pixels=max_pixels, dist=dist,
            )
            t = metrics.youden_threshold(val.labels, val.probs).threshold
            source = f"chosen on split {val_data.split!r} (Youden's J)"
        all_scores.append(sc)
        reports.append(checkpoint_report(sc, t, source, n_boot=n_boot, seed=seed))
    failed = {path: error for sc in all_scores for path, error in sc.failed}
    report = {
        "attnmel_version": __version__,
        "data": str(data.source),
        "split": data.split,
        "n_images": len(data.items),
        "bootstrap": {
            "resamples": n_boot,
            "seed": seed,
            "confidence": 0.95,
            "method": "percentile, resampling melanoma and other images separately",
        },
        "checkpoints": reports,
        "comparisons": [compare(all_scores[0], sc) for sc in all_scores[1:]],
        "failed": [{"path": p, "error": e} for p, e in failed.items()],
    }
    return Evaluation(report, all_scores)


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


def predictions_csv(scores: Sequence[Scores]) -> str:
    """``image_id,label,p_melanoma,checkpoint`` + ``jaccard_<map>`` per map, one row per image.

    Probabilities are written in full precision, so recomputing a metric from the file gives
    the report's value exactly.
    """
    maps = list(dict.fromkeys(n for sc in scores for n in sc.jaccard))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["image_id", "label", "p_melanoma", "checkpoint", *(f"jaccard_{n}" for n in maps)]
    )
    for sc in scores:
        for i, image_id in enumerate(sc.ids):
            jac = [sc.jaccard[n][i] if n in sc.jaccard else math.nan for n in maps]
            writer.writerow(
                [image_id, int(sc.labels[i]), repr(float(sc.probs[i])), sc.name]
                + ["" if math.isnan(j) else repr(float(j)) for j in jac]
            )
    return buf.getvalue()


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


def write_plots(evaluation: Evaluation, out: Path, *, overwrite: bool = False) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``reliability.png``: one curve per checkpoint."""
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
    written = []
    for fig, ax, fname in (
        (roc, roc_ax, "roc.png"),
        (pr, pr_ax, "pr.png"),
        (rel, rel_ax, "reliability.png"),
    ):
        ax.legend(loc="lower right", fontsize="small")
        _save_png(fig, out / fname, overwrite)
        written.append(out / fname)
    return written


def check_outputs(out: Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that holds evaluate's files unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise AttnMelError(f"{out}: exists and is not a folder")
    existing = [f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise AttnMelError(f"{out / existing[0]}: already exists; pass --force to overwrite it")
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


def report_table(report: dict[str, Any]) -> Table:
    """The report as a Rich table: one column per checkpoint (the paper's Table 1–3 layout)."""
    reports = report["checkpoints"]
    table = Table(
        title=f"{report['data']} · split {report['split']} · {reports[0]['n_images']} images"
    )
    table.add_column("metric")
    for rep in reports:
        table.add_column(rep["name"], justify="right")

    def with_ci(block: dict[str, Any]) -> str:
        ci = block["ci95"]
        return _fmt(block["value"]) + ("" if ci is None else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]")

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(label, *(cell(r) for r in reports))

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
        table.add_row("AUC vs first: p (DeLong)", "", *p_values)
    return table
