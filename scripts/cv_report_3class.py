"""Cross-validation report for the 3-class model card (ISIC 2017 Part 3 classes).

Reads the runs ``scripts/reproduce_3class_model.sh`` trains (``RUNS/3class-f<I>`` and
``RUNS/binary-f<I>``, fold I of K held out, each its last epoch), scores every held-out fold and
reports, per fold (mean ± sd) and pooled over all out-of-fold predictions (95 % stratified
bootstrap intervals): melanoma and seborrheic keratosis one-vs-rest AUC, their mean (the ISIC 2017
Part 3 figure), the nevus AUC, melanoma AP and the balanced multi-class accuracy of the arg-max.
Beside it, on the same folds: the colour baseline (one-vs-rest per class; its arg-max over the
three one-vs-rest probabilities) and the binary
AttnMel-CNN on melanoma, with DeLong's paired test of the two melanoma rankings.

``--isic2016 DIR``: the ISIC 2016 test photos at full resolution, each scored by the fold model
that did not train on it (photos outside the pool by the mean of the fold models).

    python scripts/cv_report_3class.py --data PREPARED --runs RUNS --folds 3 --isic2016 DIR
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from cv_report import (  # scripts/cv_report.py
    COLOUR,
    _ci,
    _pick,
    arguments,
    cv_pool,
    emit,
    external,
    isic2016,
    summary,
)

from attnmel_cli.data.classes import ISIC2017_CLASSES, class_labels
from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.transforms import paper_crop
from attnmel_cli.engine.inference import score_paths
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.evaluation.colour_baseline import (
    colour_classifier,
    colour_features,
    features_of_file,
)
from attnmel_cli.evaluation.metrics import average_precision, roc_auc
from attnmel_cli.evaluation.uncertainty import delong_test
from attnmel_cli.io.model_checkpoint import load_checkpoint

MEL, SK, NEV = range(3)  # ISIC2017_CLASSES order


def score_probs(checkpoint: Path, paths: list[Path], *, prepared: bool) -> np.ndarray:
    """Class probabilities (n, K) of ``paths`` with one checkpoint, on the CPU."""
    model, meta = load_checkpoint(checkpoint)
    scored = list(score_paths(model, meta, paths, ScoringOptions(
        batch_size=32, workers=1, prepared=prepared,
    ), device=torch.device("cpu")))
    if any(s.error for s in scored):
        raise SystemExit(f"{checkpoint}: some images could not be scored")
    return np.array([s.probs for s in scored])


def figures(c: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The card's figures for true classes c (n,) and probabilities (n, 3)."""
    auc = [roc_auc((c == k).astype(int), probs[:, k]) for k in range(3)]
    pred = probs.argmax(1)
    recall = [float(np.mean(pred[c == k] == k)) for k in range(3)]
    return {"mel_auc": auc[MEL], "sk_auc": auc[SK], "nevus_auc": auc[NEV],
            "part3_mean": (auc[MEL] + auc[SK]) / 2,
            "mel_ap": average_precision((c == MEL).astype(int), probs[:, MEL]),
            "balanced_accuracy": float(np.mean(recall))}


def bootstrap(c: np.ndarray, stat: Callable[[np.ndarray], dict[str, float]], seed: int,
              n_boot: int = 1000) -> dict[str, list[float]]:
    """95 % percentile intervals of every figure of ``stat(indices)``, resampling each true
    class in its own number."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(c == k) for k in np.unique(c)]
    draws = [stat(np.concatenate([rng.choice(g, size=len(g)) for g in groups]))
             for _ in range(n_boot)]
    return {k: [float(v) for v in np.quantile([d[k] for d in draws], [0.025, 0.975])]
            for k in draws[0]}


def report_of(c: np.ndarray, probs: np.ndarray, fold: np.ndarray, seed: int) -> dict:
    per_fold = [figures(c[fold == k], probs[fold == k]) for k in np.unique(fold)]
    out: dict[str, object] = {"pooled": figures(c, probs),
                              "pooled_ci": bootstrap(c, lambda i: figures(c[i], probs[i]), seed)}
    for key in per_fold[0]:
        values = [f[key] for f in per_fold]
        out[key] = {"folds": values, "mean": float(np.mean(values)),
                    "sd": float(np.std(values, ddof=1))}
    return out


def main() -> None:
    args = arguments(__doc__, "folder of 3class-f<I>, binary-f<I> runs").parse_args()
    torch.set_num_threads(2)

    pool, assignment = cv_pool(args.data, args.folds, args.seed)
    c = class_labels(pool, ISIC2017_CLASSES)
    y = (c == MEL).astype(int)
    fold = np.array([assignment[r.image_id] for r in pool])
    paths = [args.data / r.image for r in pool]

    def out_of_fold(name: str) -> np.ndarray:
        out: np.ndarray | None = None
        for k in range(args.folds):
            p = score_probs(args.runs / f"{name}-f{k}" / "last.safetensors",
                            [q for q, f in zip(paths, fold, strict=True) if f == k], prepared=True)
            out = np.zeros((len(pool), p.shape[1])) if out is None else out
            out[fold == k] = p
        assert out is not None
        return out

    three, binary = out_of_fold("3class"), out_of_fold("binary")[:, 1]
    x = np.stack([features_of_file(p) for p in paths])
    colour, colour_models = np.zeros((len(pool), 3)), []
    for k in range(args.folds):  # one-vs-rest colour classifiers, fitted on the training folds
        models = [colour_classifier(args.seed).fit(x[fold != k], c[fold != k] == j)
                  for j in range(3)]
        colour_models.append(models)
        colour[fold == k] = np.stack([m.predict_proba(x[fold == k])[:, 1] for m in models], 1)

    d = delong_test(y, binary, three[:, MEL])
    report: dict[str, object] = {
        "folds": args.folds, "seed": args.seed, "classes": list(ISIC2017_CLASSES),
        "n": len(pool), "per_class": np.bincount(c, minlength=3).tolist(),
        "3class": report_of(c, three, fold, args.seed),
        COLOUR: report_of(c, colour, fold, args.seed),
        "binary_melanoma": summary(y, binary, fold, args.seed),
        "delong_binary_vs_3class_melanoma": {"auc_binary": d.auc1, "auc_3class": d.auc2,
                                             "p_value": d.p_value},
    }
    if args.isic2016:
        ids, photos, y16 = isic2016(args.isic2016)
        folds16 = [assignment.get(i) for i in ids]
        crops = [paper_crop(load_photo(p)) for p in photos]
        x16 = np.stack([colour_features(np.asarray(crop)) for crop in crops])
        ext = {
            COLOUR: _pick(np.stack([ms[MEL].predict_proba(x16)[:, 1] for ms in colour_models]),
                          folds16),
            "3class": _pick(np.stack([score_probs(args.runs / f"3class-f{k}" / "last.safetensors",
                                                  photos, prepared=False)[:, MEL]
                                      for k in range(args.folds)]), folds16),
            "binary": _pick(np.stack([score_probs(args.runs / f"binary-f{k}" / "last.safetensors",
                                                  photos, prepared=False)[:, 1]
                                      for k in range(args.folds)]), folds16),
        }
        report["isic2016_out_of_fold"] = external(y16, folds16, ext, args.seed)
    emit(report, markdown(report), args.json, args.markdown)


ROWS = (("mel_auc", "melanoma AUC"), ("sk_auc", "seborrheic keratosis AUC"),
        ("part3_mean", "mean of the two (ISIC 2017 Part 3)"), ("nevus_auc", "nevus AUC"),
        ("mel_ap", "melanoma AP"), ("balanced_accuracy", "balanced accuracy (arg-max)"))


def markdown(report: dict) -> str:
    """The model card's tables."""
    three, colour = report["3class"], report[COLOUR]

    def cell(entry: dict, key: str) -> str:
        lo, hi = entry["pooled_ci"][key]
        return (f"{entry[key]['mean']:.3f} ± {entry[key]['sd']:.3f} | "
                f"{entry['pooled'][key]:.3f} [{lo:.3f}, {hi:.3f}]")

    lines = [f"| figure | 3-class model, mean ± sd over {report['folds']} folds | pooled "
             "[95 % CI] | colour baseline, mean ± sd | pooled [95 % CI] |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {cell(three, key)} | {cell(colour, key)} |" for key, name in ROWS]
    b, d = report["binary_melanoma"], report["delong_binary_vs_3class_melanoma"]
    lines += ["", "| melanoma ranking, same folds | AUC mean ± sd | pooled AUC [95 % CI] |",
              "|---|---|---|",
              f"| binary AttnMel-CNN (the default's recipe) | {b['auc_mean']:.3f} ± "
              f"{b['auc_sd']:.3f} | {_ci(b, 'auc')} |",
              f"| 3-class model's p_melanoma | {cell(three, 'mel_auc')} |",
              "", f"DeLong's paired test, binary vs 3-class on melanoma: p = {d['p_value']:.3g}."]
    ext = report.get("isic2016_out_of_fold")
    if ext:
        lines += ["", f"ISIC 2016 test photos at full resolution ({ext['in_pool']} of them in "
                  "the ISIC 2017 pool, each scored by the fold model that did not train on it), "
                  "melanoma:", "", "| model | AUC [95 % CI] | AP [95 % CI] |", "|---|---|---|"]
        lines += [f"| {k} | {_ci(e, 'auc')} | {_ci(e, 'ap')} |"
                  for k, e in ext.items() if isinstance(e, dict)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
