"""Colour-statistics baseline for the model card: HSV histograms + logistic regression.

Scores the same prepared images the network sees (the central 224/256 of each prepared image)
under the same protocol as the shipped model: fit on the train split, report validation AP/AUC
with 95 % bootstrap intervals, and 5-fold stratified cross-validation over train+val.

    python scripts/colour_baseline.py --data prepared/isic2017 [--json baseline.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from attnmel_cli.data.manifest import read_manifest
from attnmel_cli.evaluation.colour_baseline import colour_classifier as classifier
from attnmel_cli.evaluation.colour_baseline import features_of_file as hsv_features
from attnmel_cli.evaluation.metrics import average_precision, roc_auc
from attnmel_cli.evaluation.uncertainty import bootstrap_ci


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared dir (attnmel prepare)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    rows = [r for r in read_manifest(args.data) if r.split in ("train", "val")]
    x = np.stack([hsv_features(args.data / r.image) for r in rows])
    y = np.array([r.label for r in rows])
    is_val = np.array([r.split == "val" for r in rows])

    model = classifier().fit(x[~is_val], y[~is_val])
    p_val = model.predict_proba(x[is_val])[:, 1]
    yv = y[is_val]
    report: dict[str, object] = {
        "val_ap": average_precision(yv, p_val),
        "val_ap_ci": bootstrap_ci(yv, p_val, average_precision, seed=args.seed),
        "val_auc": roc_auc(yv, p_val),
        "val_auc_ci": bootstrap_ci(yv, p_val, roc_auc, seed=args.seed),
    }
    aucs, aps = [], []
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    for fit_idx, test_idx in folds.split(x, y):
        p = classifier().fit(x[fit_idx], y[fit_idx]).predict_proba(x[test_idx])[:, 1]
        aucs.append(roc_auc(y[test_idx], p))
        aps.append(average_precision(y[test_idx], p))
    report.update(
        cv_auc_mean=float(np.mean(aucs)), cv_auc_sd=float(np.std(aucs, ddof=1)),
        cv_ap_mean=float(np.mean(aps)), cv_ap_sd=float(np.std(aps, ddof=1)),
        n_train=int((~is_val).sum()), n_val=int(is_val.sum()), folds=args.folds,
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
