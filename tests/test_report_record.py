"""The typed report writes exactly the JSON ``evaluate`` wrote when the report was a dict:
``data/report_record.json`` is that JSON, recorded from the dict-building code on the same
hand-made scores (every block: intervals, operating points, a per-class section with and
without the ISIC 2017 Part 3 mean, a skipped one, attention Jaccard with an empty map, training
overlap, comparisons, a failed image, non-finite figures written as null)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from attnmel_cli import __version__
from attnmel_cli.data.classes import ISIC2017_CLASSES
from attnmel_cli.data.id_set import encode_ids
from attnmel_cli.evaluation.leakage import training_overlap
from attnmel_cli.evaluation.rendering import report_json
from attnmel_cli.evaluation.report import assemble_report, checkpoint_report
from attnmel_cli.evaluation.results import EvalData, Item, Scores
from attnmel_cli.io.checkpoint import CheckpointMeta

RECORDED = Path(__file__).parent / "data" / "report_record.json"
N_BOOT, SEED = 20, 3
# twelve images, the last of them failed; p 0.5 is scored exactly at the threshold
LABELS = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0])
P = np.array([0.9, 0.2, 0.5, 0.6, 0.1, 0.7, 0.3, 0.45, 0.35, 0.05, 0.8])
DIAGNOSES = ["melanoma", "nevus", "melanoma", "seborrheic_keratosis", "nevus", "melanoma",
             "nevus", "seborrheic_keratosis", "melanoma", "nevus", "nevus", "nevus"]
FAILED = ("data/hand/im11.png", "data/hand/im11.png: cannot identify image file")


def hand_data() -> EvalData:
    """The labelled images: eleven scored, one that fails, one more of score_weight 0."""
    items = [Item(f"im{i}", Path(f"data/hand/im{i}.png"), int(d == "melanoma"), diagnosis=d)
             for i, d in enumerate(DIAGNOSES)]
    return EvalData(Path("data/hand"), "test", items, prepared=False, score_weight_zero=1)


def _probs(true_class: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(true_class), k)) + 1.5 * np.eye(k)[true_class]
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).round(3)


def hand_scores() -> list[Scores]:
    """A binary checkpoint that trained on three of the images (with Jaccard, one map all
    nan), a three-class one, the same skipped (no class of the diagnoses), and one of other
    classes (no ISIC 2017 Part 3 mean; a class without images: no AUC)."""
    ids = [f"im{i}" for i in range(11)]
    base = {"ids": ids, "labels": LABELS, "failed": [FAILED]}
    binary = Scores(
        checkpoint=Path("runs/a/best.safetensors"), name="a/best.safetensors",
        meta=CheckpointMeta(attnmel_version="0.0-test", train_config={"epochs": 3},
                            train_image_ids=encode_ids(["im0", "im1", "im2", "elsewhere"])),
        probs=P, class_probs=np.stack([1 - P, P], axis=1),
        jaccard={"pool3": np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.25, 0.0, 1.0, 0.5, 0.2, 0.6]),
                 "pool4": np.full(11, np.nan)},
        **base,
    )
    order = {c: k for k, c in enumerate(ISIC2017_CLASSES)}
    true3 = np.array([order[d] for d in DIAGNOSES[:11]])
    p3 = _probs(true3, 3, 0)
    three_meta = CheckpointMeta(attnmel_version="0.0-test", classes=ISIC2017_CLASSES)
    three = Scores(checkpoint=Path("runs/b/best.safetensors"), name="b/best.safetensors",
                   meta=three_meta, probs=p3[:, 0], class_probs=p3, jaccard={},
                   true_class=true3, **base)
    skipped = Scores(checkpoint=Path("runs/c.safetensors"), name="c.safetensors",
                     meta=three_meta, probs=p3[:, 0], class_probs=p3, jaccard={},
                     class_problem="diagnoses outside --classes: other", **base)
    other_classes = ("melanoma", "nevus", "basal_cell_carcinoma")  # the last without images
    true_other = np.array([0 if d == "melanoma" else 1 for d in DIAGNOSES[:11]])
    p_other = _probs(true_other, 3, 1)
    other = Scores(checkpoint=Path("runs/d.safetensors"), name="d.safetensors",
                   meta=CheckpointMeta(attnmel_version="0.0-test", classes=other_classes),
                   probs=p_other[:, 0], class_probs=p_other, jaccard={}, true_class=true_other,
                   **base)
    return [binary, three, skipped, other]


def test_the_typed_report_writes_the_recorded_json() -> None:
    data, scores = hand_data(), hand_scores()
    thresholds = [(0.5, "given"), (0.3, "chosen on split 'val' (Youden's J)"),
                  (0.5, "given"), (0.5, "given")]
    reports = [
        replace(checkpoint_report(sc, t, source, n_boot=N_BOOT, seed=SEED),
                training_overlap=training_overlap(sc.meta, data, None, str(sc.checkpoint)))
        for sc, (t, source) in zip(scores, thresholds, strict=True)
    ]
    record = assemble_report(data, reports, scores, N_BOOT, SEED).as_record()
    assert record["attnmel_version"] == __version__
    record["attnmel_version"] = "0.0-test"  # as recorded, whatever this version
    assert report_json(record) == RECORDED.read_text(encoding="utf-8")
