"""Cross-validation report of the HAM10000 rows (issue 21) on the default model card's folds.

Reads the fold runs of ``scripts/reproduce_ham_model.sh`` (``RUNS/<row>-f<I>/last.safetensors``,
fold I of K of ISIC 2017 train + val held out; HAM10000 only ever trained on), scores every
held-out ISIC 2017 image with its fold's model and reports per row: AUC and AP (mean ± sd over
the folds; pooled out-of-fold with 95 % bootstrap intervals), the attention maps' Table 3
Jaccard against the lesion masks (pool-3 and pool-4 analogues, mean over the held-out images),
DeLong's paired test against the first row (today's recipe), the best row (by mean AUC) again
with 8-view TTA, the colour baseline on the same folds, and the 131 ISIC 2016 photos at full
resolution scored out of fold (each by the fold model that did not train on it).

    python scripts/cv_report_ham.py --data PREPARED_ISIC2017 --runs RUNS --rows today,twostage

``--cache FILE.json`` keeps every row's out-of-fold scores, Jaccard and ISIC 2016 scores, so a
later run (more rows finished) scores only what is new.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_report import (
    COLOUR,
    _ci,
    _pick,
    arguments,
    cv_entries,
    cv_pool,
    emit,
    external,
    isic2016_colour,
    score,
    summary,
)

from attnmel_cli.engine.inference import Session
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.evaluation.colour_baseline import (
    colour_classifier,
    features_of_file,
)
from attnmel_cli.evaluation.results import EvalData, Item
from attnmel_cli.evaluation.scoring import score as score_items
from attnmel_cli.evaluation.uncertainty import delong_test

NAMES = {
    "today": "today's recipe (ISIC 2017 only)",
    "twostage": "HAM10000 first, then ISIC 2017 (`--init`)",
    "mixed": "ISIC 2017 + HAM10000 × 0.1 (`--source-weights`)",
    "twostage-lesion": "two-stage + `--roi lesion`",
    "mixed-lesion": "mixed + `--roi lesion`",
    COLOUR: "colour baseline",
}


def held_out(data: Path, pool: list, fold: np.ndarray, runs: Path, row: str, k: int,
             tta: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """p_melanoma and per-map Jaccard of fold ``k``'s held-out images with its model."""
    items = [Item(r.image_id, data / r.image, r.label,
                  data / r.lesion_mask if r.lesion_mask else None, r.diagnosis)
             for r, f in zip(pool, fold, strict=True) if f == k]
    checkpoint = runs / f"{row}-f{k}" / "last.safetensors"
    session = Session.load(checkpoint, torch.device("cpu"))
    scores = score_items(session, EvalData(data, None, items, prepared=True), checkpoint, row,
                         ScoringOptions(batch_size=32, workers=1, tta=tta))
    if scores.failed:
        raise SystemExit(f"{checkpoint}: {len(scores.failed)} images could not be scored")
    return scores.probs, scores.jaccard


def main() -> None:
    ap = arguments(__doc__, "folder of <row>-f<I> runs")
    ap.add_argument("--rows", default="today,twostage,mixed")
    ap.add_argument("--cache", type=Path, help="reuse and keep the scores of finished rows here")
    args = ap.parse_args()
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.is_file() else {}
    cache.setdefault("oof", {})
    cache.setdefault("jaccard", {})
    cache.setdefault("isic2016", {})

    def keep() -> None:
        if args.cache:
            args.cache.write_text(json.dumps(cache))

    torch.set_num_threads(2)
    pool, assignment = cv_pool(args.data, args.folds, args.seed)
    y = np.array([r.label for r in pool])
    fold = np.array([assignment[r.image_id] for r in pool])
    rows = [r for r in args.rows.split(",") if (args.runs / f"{r}-f0").is_dir()]

    x = np.stack([features_of_file(args.data / r.image) for r in pool])
    oof = {COLOUR: np.zeros(len(pool))}
    colour_models = []
    for k in range(args.folds):
        model = colour_classifier(args.seed).fit(x[fold != k], y[fold != k])
        colour_models.append(model)
        oof[COLOUR][fold == k] = model.predict_proba(x[fold == k])[:, 1]
    jaccard: dict[str, dict[str, float]] = {}

    def run(row: str, tta: bool) -> None:
        key = f"{row}+tta" if tta else row
        if key in cache["oof"]:
            oof[key], jaccard[key] = np.array(cache["oof"][key]), cache["jaccard"][key]
            return
        p, maps = np.zeros(len(pool)), {}
        for k in range(args.folds):
            p[fold == k], jac = held_out(args.data, pool, fold, args.runs, row, k, tta)
            for name, values in jac.items():
                maps.setdefault(name, []).extend(values.tolist())
        oof[key] = p
        jaccard[key] = {n: float(np.nanmean(v)) for n, v in maps.items()}
        cache["oof"][key], cache["jaccard"][key] = p.tolist(), jaccard[key]
        keep()
        print(f"{key}: {summary(y, p, fold, args.seed)['auc_mean']:.4f}", file=sys.stderr)

    for row in rows:
        run(row, tta=False)
    best = max(rows, key=lambda r: summary(y, oof[r], fold, args.seed)["auc_mean"])
    run(best, tta=True)

    entries = cv_entries(y, oof, fold, rows[0], args.seed)
    for name, entry in entries.items():
        entry["jaccard"] = jaccard.get(name, {})
    report: dict[str, object] = {"folds": args.folds, "seed": args.seed, "best": best,
                                 "delong_reference": rows[0], "cv": entries,
                                 "delong_vs_best": versus(y, oof, best, rows)}
    if args.isic2016:
        photos, y16, folds16, ext = isic2016_colour(args.isic2016, assignment, colour_models)
        for row in [*rows, f"{best}+tta"]:
            name, _, tta = row.partition("+")
            if row not in cache["isic2016"]:
                cache["isic2016"][row] = np.stack([
                    score(args.runs / f"{name}-f{k}" / "last.safetensors", photos,
                          prepared=False, tta=bool(tta)) for k in range(args.folds)]).tolist()
                keep()
            ext[row] = _pick(np.array(cache["isic2016"][row]), folds16)
        report["isic2016_out_of_fold"] = external(y16, folds16, ext, args.seed)
    emit(report, markdown(report), args.json, args.markdown)


def versus(y: np.ndarray, oof: dict[str, np.ndarray], best: str, rows: list[str]
           ) -> dict[str, float]:
    """DeLong's p of the best row against every other trained row (is it ahead by more than
    noise?), over the pooled out-of-fold scores."""
    return {r: delong_test(y, oof[best], oof[r]).p_value for r in rows if r != best}


def _name(key: str) -> str:
    base, _, tta = key.partition("+")
    return NAMES.get(base, base) + (" + TTA" if tta else "")


def markdown(report: dict) -> str:
    """The model card's cross-validation and ISIC 2016 tables."""
    first = report["delong_reference"]
    lines = [
        f"| row | AUC, mean ± sd over {report['folds']} folds | AP, mean ± sd | pooled AUC "
        "[95 % CI] | pooled AP [95 % CI] | Jaccard pool-3 | Jaccard pool-4 | DeLong p vs "
        f"{_name(first)} |", "|---|---|---|---|---|---|---|---|"]
    for key, e in report["cv"].items():
        d = e.get(f"delong_vs_{first}")
        jac = e.get("jaccard", {})
        cells = [f"{jac[n]:.3f}" if n in jac else "—" for n in ("pool3", "pool4")]
        lines.append(
            f"| {_name(key)} | {e['auc_mean']:.3f} ± {e['auc_sd']:.3f} | {e['ap_mean']:.3f} ± "
            f"{e['ap_sd']:.3f} | {_ci(e, 'auc')} | {_ci(e, 'ap')} | {cells[0]} | {cells[1]} | "
            f"{'—' if d is None else format(d['p_value'], '.3g')} |")
    vs = report.get("delong_vs_best", {})
    if vs:
        lines += ["", f"DeLong's paired test, {_name(report['best'])} (the best mean AUC) against "
                  + "; ".join(f"{_name(k)}: p = {p:.3g}" for k, p in vs.items()) + "."]
    ext = report.get("isic2016_out_of_fold")
    if ext:
        lines += ["", f"ISIC 2016 test photos at full resolution (131 of the 379 test images; "
                  f"{ext['in_pool']} of them in the ISIC 2017 pool, each scored by the fold "
                  "model that did not train on it, the rest by the mean of the fold models):", "",
                  "| row | AUC [95 % CI] | AP [95 % CI] |", "|---|---|---|"]
        lines += [f"| {_name(k)} | {_ci(e, 'auc')} | {_ci(e, 'ap')} |"
                  for k, e in ext.items() if isinstance(e, dict)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
