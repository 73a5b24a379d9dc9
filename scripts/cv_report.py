"""Cross-validation report for the model card: the paper's Table 2 rows and the backbones compared.

Reads the fold runs that ``scripts/reproduce_default_model.sh`` trains
(``RUNS/<variant>-f<I>/last.safetensors``, fold I of K held out, chosen by nothing: the last
epoch), scores every held-out fold (optionally with 8-view test-time augmentation), fits the
colour baseline on the same folds, and prints mean ± sd over the folds, the pooled out-of-fold
AUC/AP with 95 % bootstrap intervals and DeLong's test of each variant against the first.

``--isic2016 DIR`` adds the ISIC 2016 test photos at full resolution as an independent check
without the leak: 120 of those 131 photos are ISIC 2017 training images, so each photo is
scored by the fold model that did not train on it (photos outside the pool by the mean of the
fold models), and the colour baseline likewise.

    python scripts/cv_report.py --data PREPARED --runs RUNS --folds 3 --variants gap,attnmel,lesion
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.folds import fold_of
from attnmel_cli.data.manifest import Row, read_manifest
from attnmel_cli.data.transforms import paper_crop
from attnmel_cli.engine.inference import score_paths
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.evaluation.colour_baseline import (
    colour_classifier,
    colour_features,
    features_of_file,
)
from attnmel_cli.evaluation.metrics import average_precision, roc_auc
from attnmel_cli.evaluation.uncertainty import bootstrap_ci, delong_test
from attnmel_cli.io.model_checkpoint import load_checkpoint

COLOUR = "colour"


def score(checkpoint: Path, paths: list[Path], *, prepared: bool, tta: bool) -> np.ndarray:
    """p_melanoma of ``paths`` with one checkpoint, on the CPU."""
    model, meta = load_checkpoint(checkpoint)
    scored = score_paths(model, meta, paths, ScoringOptions(
        batch_size=32, workers=1, prepared=prepared, tta=tta,
    ), device=torch.device("cpu"))
    out = np.array([np.nan if s.p_melanoma is None else s.p_melanoma for s in scored])
    if np.isnan(out).any():
        raise SystemExit(f"{checkpoint}: some images could not be scored")
    return out


def summary(y: np.ndarray, p: np.ndarray, folds: np.ndarray | None, seed: int) -> dict:
    """Per-fold mean ± sd (when ``folds`` is given) and pooled figures with intervals."""
    out: dict[str, object] = {
        "pooled_auc": roc_auc(y, p), "pooled_auc_ci": list(bootstrap_ci(y, p, roc_auc, seed=seed)),
        "pooled_ap": average_precision(y, p),
        "pooled_ap_ci": list(bootstrap_ci(y, p, average_precision, seed=seed)),
        "n": len(y), "n_melanoma": int(y.sum()),
    }
    if folds is not None:
        aucs = [roc_auc(y[folds == k], p[folds == k]) for k in np.unique(folds)]
        aps = [average_precision(y[folds == k], p[folds == k]) for k in np.unique(folds)]
        out.update(fold_auc=aucs, fold_ap=aps, auc_mean=float(np.mean(aucs)),
                   auc_sd=float(np.std(aucs, ddof=1)), ap_mean=float(np.mean(aps)),
                   ap_sd=float(np.std(aps, ddof=1)))
    return out


def isic2016(directory: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(ids, photo paths, labels) of the ISIC 2016 Part 3 test folder."""
    with (directory / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv").open() as fh:
        rows = [r for r in csv.reader(fh) if r]
    photos = directory / "ISBI2016_ISIC_Part3_Test_Data"
    ids = [r[0] for r in rows]
    return ids, [photos / f"{i}.jpg" for i in ids], np.array([int(float(r[1])) for r in rows])


def arguments(doc: str, runs_help: str) -> argparse.ArgumentParser:
    """The options both cross-validation reports take."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared dir (attnmel prepare)")
    ap.add_argument("--runs", type=Path, required=True, help=runs_help)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the folds (train --seed)")
    ap.add_argument("--isic2016", type=Path, help="ISIC 2016 test folder (full resolution)")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--markdown", type=Path, help="write the model card's tables here")
    return ap


def cv_pool(data: Path, folds: int, seed: int) -> tuple[list[Row], dict[str, int]]:
    """The train + val rows by image id, and each one's fold."""
    rows = read_manifest(data)
    assignment = fold_of(rows, folds, seed)
    pool = [r for r in rows if r.image_id in assignment]
    return sorted(pool, key=lambda r: r.image_id), assignment


def add_variant_data(ap: argparse.ArgumentParser) -> None:
    """The --variant-data option (read by :func:`data_dirs`)."""
    ap.add_argument("--variant-data", action="append", default=[], metavar="VARIANT=DIR",
                    help="score VARIANT's held-out images from this prepared dir (same images, "
                         "another --crop-fraction); default --data")


def data_dirs(data: Path, variants: list[str], specs: list[str]) -> dict[str, Path]:
    """Each variant's prepared dir: ``data``, or the DIR of its ``VARIANT=DIR`` spec."""
    dirs = dict.fromkeys(variants, data)
    for spec in specs:
        variant, _, folder = spec.partition("=")
        dirs[variant] = Path(folder)
    return dirs


def main() -> None:
    ap = arguments(__doc__, "folder of <variant>-f<I> runs")
    ap.add_argument("--variants", default="gap,attnmel,lesion")
    add_variant_data(ap)
    ap.add_argument("--tta", action="store_true",
                    help="also score the chosen variant with 8-view TTA")
    args = ap.parse_args()
    torch.set_num_threads(2)

    pool, assignment = cv_pool(args.data, args.folds, args.seed)
    y = np.array([r.label for r in pool])
    fold = np.array([assignment[r.image_id] for r in pool])
    paths = [args.data / r.image for r in pool]
    variants = args.variants.split(",")
    data_of = data_dirs(args.data, variants, args.variant_data)

    oof: dict[str, np.ndarray] = {}
    x = np.stack([features_of_file(p) for p in paths])
    oof[COLOUR] = np.zeros(len(pool))
    colour_models = []
    for k in range(args.folds):
        model = colour_classifier(args.seed).fit(x[fold != k], y[fold != k])
        colour_models.append(model)
        oof[COLOUR][fold == k] = model.predict_proba(x[fold == k])[:, 1]
    def out_of_fold(variant: str, tta: bool) -> np.ndarray:
        p = np.zeros(len(pool))
        for k in range(args.folds):
            held = [data_of[variant] / r.image for r, f in zip(pool, fold, strict=True)
                    if f == k]
            ckpt = args.runs / f"{variant}-f{k}" / "last.safetensors"
            p[fold == k] = score(ckpt, held, prepared=True, tta=tta)
        return p

    for variant in variants:
        oof[variant] = out_of_fold(variant, tta=False)
        print(f"{variant}: pooled out-of-fold AUC {roc_auc(y, oof[variant]):.4f}", flush=True)
    # the variant is chosen by mean AUC over the folds, before (and without) TTA
    chosen = max(variants, key=lambda v: summary(y, oof[v], fold, args.seed)["auc_mean"])
    runs = [(v, False) for v in variants]
    if args.tta:
        oof[f"{chosen}+tta"] = out_of_fold(chosen, tta=True)
        runs.append((chosen, True))

    report: dict[str, object] = {"folds": args.folds, "seed": args.seed, "chosen": chosen,
                                 "delong_reference": variants[0],
                                 "cv": cv_entries(y, oof, fold, variants[0], args.seed)}

    if args.isic2016:
        photos, y16, folds16, ext = isic2016_colour(args.isic2016, assignment, colour_models)
        for variant, tta in runs:
            per_fold = np.stack([
                score(args.runs / f"{variant}-f{k}" / "last.safetensors", photos,
                      prepared=False, tta=tta) for k in range(args.folds)])
            ext[f"{variant}+tta" if tta else variant] = _pick(per_fold, folds16)
        report["isic2016_out_of_fold"] = external(y16, folds16, ext, args.seed)
    emit(report, markdown(report), args.json, args.markdown)


def cv_entries(y: np.ndarray, oof: dict[str, np.ndarray], fold: np.ndarray, first: str,
               seed: int) -> dict[str, dict]:
    """Each model's :func:`summary`, with DeLong's paired test against ``first``."""
    entries = {}
    for name, p in oof.items():
        entry = summary(y, p, fold, seed)
        if name != first:
            d = delong_test(y, oof[first], p)
            entry["delong_vs_" + first] = {"auc1": d.auc1, "auc2": d.auc2, "p_value": d.p_value}
        entries[name] = entry
    return entries


def isic2016_colour(directory: Path, assignment: dict[str, int], colour_models: list
                    ) -> tuple[list[Path], np.ndarray, list[int | None], dict[str, np.ndarray]]:
    """The ISIC 2016 photos, labels and folds (None: not in the pool), and the colour baseline's
    scores on them, each photo by the fold model that did not train on it."""
    ids, photos, y16 = isic2016(directory)
    folds16 = [assignment.get(i) for i in ids]
    crops = [paper_crop(load_photo(p)) for p in photos]
    x16 = np.stack([colour_features(np.asarray(c)) for c in crops])
    colour = np.stack([m.predict_proba(x16)[:, 1] for m in colour_models])
    return photos, y16, folds16, {COLOUR: _pick(colour, folds16)}


def external(y: np.ndarray, folds: list[int | None], scores: dict[str, np.ndarray],
             seed: int) -> dict[str, object]:
    """The ISIC 2016 block: how many photos are in the pool, each model's figures."""
    return {"in_pool": int(sum(f is not None for f in folds)),
            **{name: summary(y, p, None, seed) for name, p in scores.items()}}


def emit(report: dict, tables: str, json_path: Path | None, md_path: Path | None) -> None:
    """Print the report as JSON; write it and the card's tables where asked."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
    if md_path:
        md_path.write_text(tables)


NAMES = {"gap": "pooled baseline (`vgg16-gap`)", "attnmel": "AttnMel-CNN (`attnmel`)",
         "lesion": "AttnMel-CNN-Lesion (`attnmel --roi lesion`)", COLOUR: "colour baseline",
         "whole": "AttnMel-CNN on the whole image (`prepare --crop-fraction 1`)"}


def _name(key: str) -> str:
    base, _, tta = key.partition("+")
    return NAMES.get(base, base) + (" + TTA" if tta else "")


def _ci(entry: dict, what: str) -> str:
    lo, hi = entry[f"pooled_{what}_ci"]
    return f"{entry[f'pooled_{what}']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(report: dict) -> str:
    """The cross-validation and ISIC 2016 tables of the model card."""
    first = report.get("delong_reference", "gap")
    lines = [
        f"| model | AUC, mean ± sd over {report['folds']} folds | AP, mean ± sd | pooled "
        f"out-of-fold AUC [95 % CI] | pooled AP [95 % CI] | DeLong p vs {_name(first)} |",
        "|---|---|---|---|---|---|",
    ]
    for key, e in report["cv"].items():
        d = e.get(f"delong_vs_{first}")
        p_value = "—" if d is None else f"{d['p_value']:.3g}"
        lines.append(
            f"| {_name(key)} | {e['auc_mean']:.3f} ± {e['auc_sd']:.3f} | {e['ap_mean']:.3f} ± "
            f"{e['ap_sd']:.3f} | {_ci(e, 'auc')} | {_ci(e, 'ap')} | {p_value} |")
    ext = report.get("isic2016_out_of_fold")
    if ext:
        lines += ["", f"ISIC 2016 test photos at full resolution ({ext['in_pool']} of them in the "
                  "ISIC 2017 pool, each scored by the fold model that did not train on it):", "",
                  "| model | AUC [95 % CI] | AP [95 % CI] |", "|---|---|---|"]
        lines += [f"| {_name(k)} | {_ci(e, 'auc')} | {_ci(e, 'ap')} |"
                  for k, e in ext.items() if isinstance(e, dict)]
    return "\n".join(lines) + "\n"


def _pick(per_fold: np.ndarray, folds: list[int | None]) -> np.ndarray:
    """Each image's score from the fold model that held it out (the mean where none did)."""
    return np.array([per_fold[f, i] if f is not None else per_fold[:, i].mean()
                     for i, f in enumerate(folds)])


if __name__ == "__main__":
    main()
