"""Cross-validated ensembles: what averaging fold models (and 8-view TTA) would give.

Reads the fold runs of several variants (``RUNS/<variant>-f<I>/last.safetensors``, as
``scripts/cv_report.py`` does), scores every held-out fold with each variant, plain and with
test-time augmentation, and reports each variant and every average of two or more of them (the
mean of their ``p_melanoma``): mean ± sd over the folds, pooled AUC/AP with 95 % bootstrap
intervals, DeLong's test against the first variant. Each image is scored only by models that did
not train on it, so the figures estimate an ensemble of models trained on all the data.
``--cache FILE.npz`` keeps the out-of-fold scores, so a second run (say with ``--tta``) only scores
what is new.

    python scripts/cv_ensemble.py --data PREPARED --runs RUNS --variants attnmel,3class,whole \\
        --variant-data whole=PREPARED_WHOLE --tta --cache oof.npz --markdown ensembles.md
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from cv_report import add_variant_data, arguments, cv_pool, data_dirs, emit, score, summary

from attnmel_cli.evaluation.uncertainty import delong_test


def main() -> None:
    ap = arguments(__doc__, "folder of <variant>-f<I> runs")
    ap.add_argument("--variants", required=True, help="comma list; the first is the reference")
    add_variant_data(ap)
    ap.add_argument("--tta", action="store_true", help="also score each variant with TTA")
    ap.add_argument("--cache", type=Path, help="npz of out-of-fold scores, read and updated")
    args = ap.parse_args()
    torch.set_num_threads(2)

    pool, assignment = cv_pool(args.data, args.folds, args.seed)
    y = np.array([r.label for r in pool])
    fold = np.array([assignment[r.image_id] for r in pool])
    variants = args.variants.split(",")
    data_of = data_dirs(args.data, variants, args.variant_data)

    oof: dict[str, np.ndarray] = {}
    if args.cache and args.cache.exists():
        oof = dict(np.load(args.cache))
    for tta in (False, True) if args.tta else (False,):
        for variant in variants:
            key = variant + ("+tta" if tta else "")
            if key in oof:
                continue
            p = np.zeros(len(pool))
            for k in range(args.folds):
                held = [data_of[variant] / r.image for r, f in zip(pool, fold, strict=True)
                        if f == k]
                p[fold == k] = score(args.runs / f"{variant}-f{k}" / "last.safetensors", held,
                                     prepared=True, tta=tta)
            oof[key] = p
            if args.cache:
                np.savez(args.cache, **oof)
            print(f"{key}: scored", flush=True)

    report: dict[str, object] = {"folds": args.folds, "seed": args.seed,
                                 "delong_reference": variants[0], "cv": {}}
    for tta in (False, True) if args.tta else (False,):
        keys = [v + ("+tta" if tta else "") for v in variants]
        groups = [c for n in range(1, len(keys) + 1) for c in combinations(keys, n)]
        for group in groups:
            p = np.mean([oof[k] for k in group], axis=0)
            entry = summary(y, p, fold, args.seed)
            d = delong_test(y, oof[variants[0]], p)
            entry["delong_vs_" + variants[0]] = {"auc1": d.auc1, "auc2": d.auc2,
                                                 "p_value": d.p_value}
            report["cv"][" + ".join(group)] = entry  # type: ignore[index]
    emit(report, markdown(report), args.json, args.markdown)


def markdown(report: dict) -> str:
    """One table row per variant or average."""
    first = report["delong_reference"]
    lines = [f"| models averaged | AUC, mean ± sd over {report['folds']} folds | AP, mean ± sd | "
             f"pooled AUC [95 % CI] | DeLong p vs {first} |", "|---|---|---|---|---|"]
    for name, e in report["cv"].items():
        lo, hi = e["pooled_auc_ci"]
        p_value = "—" if name == first else f"{e[f'delong_vs_{first}']['p_value']:.3g}"
        lines.append(f"| {name} | {e['auc_mean']:.3f} ± {e['auc_sd']:.3f} | {e['ap_mean']:.3f} ± "
                     f"{e['ap_sd']:.3f} | {e['pooled_auc']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{p_value} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
