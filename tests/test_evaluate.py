"""``attnmel evaluate`` end to end on the real ISIC 2017 validation split, and its parts."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from attnmel_cli.cli import app
from attnmel_cli.cli.render import report_table
from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.id_set import encode_ids
from attnmel_cli.data.manifest import Row, write_manifest
from attnmel_cli.data.masks import load_mask
from attnmel_cli.data.prepare import prepare_dataset
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.evaluation.inputs import load_data
from attnmel_cli.evaluation.outputs import check_outputs, parse_threshold
from attnmel_cli.evaluation.rendering import report_json
from attnmel_cli.evaluation.report import checkpoint_report, display_names, run_evaluation
from attnmel_cli.evaluation.results import Scores
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors, save_file

ZERO = ScoringOptions(workers=0)  # decoded in the test's process

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ISIC2017 = DATA / "isic2017-256"
VAL_PARTS = ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth")
VAL_LABELS = "ISIC-2017_Validation_Part3_GroundTruth.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--bootstrap", "50", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def val_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official ISIC 2017 validation download (150 images, masks, labels), as links."""
    if not (ISIC2017 / VAL_LABELS).is_file():
        pytest.skip(f"real ISIC 2017 data not found at {ISIC2017}")
    src = tmp_path_factory.mktemp("isic2017-val")
    for part in VAL_PARTS:
        (src / part).mkdir()
        for f in (ISIC2017 / part).iterdir():
            os.symlink(f, src / part / f.name)
    os.symlink(ISIC2017 / VAL_LABELS, src / VAL_LABELS)
    return src


@pytest.fixture(scope="module")
def prepared_val(val_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``val_source`` through ``attnmel prepare``."""
    out = tmp_path_factory.mktemp("prepared") / "isic2017-val"
    prepare_dataset(val_source, out, workers=2)
    return out


def _read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_end_to_end_on_real_validation_split(
    prepared_val: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--data", str(prepared_val), "--split", "val", "-c", str(tiny_checkpoint)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--format", "json", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (ck,) = report["checkpoints"]
    assert (ck["n_images"], ck["n_melanoma"]) == (150, 30)
    assert ck["metadata"]["arch"] == "attnmel" and ck["metadata"]["image_size"] == 64
    assert json.loads((out / "report.json").read_text()) == report

    rows = _read_predictions(out / "predictions.csv")
    assert len(rows) == 150
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["p_melanoma"]) for r in rows])
    # The paper's metrics (§3.1), recomputed by scikit-learn from the CSV, equal the report.
    assert ck["average_precision"]["value"] == average_precision_score(y, p)
    assert ck["roc_auc"]["value"] == roc_auc_score(y, p)
    for key in ("average_precision", "roc_auc"):
        low, high = ck[key]["ci95"]
        assert low <= ck[key]["value"] <= high
    cm = ck["at_threshold"]["confusion_matrix"]
    assert cm["tp"] == int(np.sum((p >= 0.5) & (y == 1)))
    assert sum(cm.values()) == 150
    assert set(ck["sensitivity_at_specificity"]) == {"0.80", "0.90", "0.95"}
    # Table 3: every validation image has a lesion mask; the mean is the CSV's mean.
    for name in ("pool3", "pool4"):
        jac = np.array([float(r[f"jaccard_{name}"]) for r in rows])
        assert ((jac >= 0) & (jac <= 1)).all()
        assert ck["attention_jaccard"][name] == {
            "mean": pytest.approx(jac.mean()),
            "n_images": 150,
        }
    for name in ("roc.png", "pr.png", "reliability.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        with Image.open(out / name) as img:
            img.verify()

    again = CliRunner().invoke(app, [*args, "--out", str(out), *FAST])
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_unprepared_source_gives_the_prepared_results(
    val_source: Path, prepared_val: Path, tiny_checkpoint: Path
) -> None:
    device = torch.device("cpu")
    kwargs = {"n_boot": 0}
    raw = run_evaluation(load_data(val_source, "val"), [tiny_checkpoint], device, ZERO, **kwargs)
    prep = run_evaluation(load_data(prepared_val, "val"), [tiny_checkpoint], device, ZERO, **kwargs)
    a, b = raw.scores[0], prep.scores[0]
    order = np.argsort(a.ids)
    assert np.array(a.ids)[order].tolist() == sorted(b.ids)
    assert a.probs[order] == pytest.approx(b.probs[np.argsort(b.ids)], abs=1e-5)
    for name in ("pool3", "pool4"):
        assert a.jaccard[name][order] == pytest.approx(b.jaccard[name][np.argsort(b.ids)], abs=1e-6)


def test_a_checkpoint_trained_on_the_evaluated_images_is_flagged_everywhere(
    val_source: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    """Its training image ids overlap the data (never prepared: no fingerprint): stderr, the
    JSON report (a field a script can test) and the terminal table say so."""
    tensors, header = read_tensors(tiny_checkpoint)
    ids = [p.stem for p in sorted((val_source / VAL_PARTS[0]).glob("*.jpg"))[:40]]
    header = {**header, "train_image_ids": encode_ids([*ids, "ISIC_9999999"])}
    leaky = tmp_path / "leaky.safetensors"
    save_file(tensors, str(leaky), header)
    args = ["evaluate", "--data", val_source, "-c", leaky, "--compare", tiny_checkpoint, *FAST]
    result = invoke(*args, "-f", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["trained_on_evaluated_images"] is True
    first, other = (r["training_overlap"] for r in report["checkpoints"])
    assert (first["trained_on_evaluated_images"], first["images"], first["of"]) == (True, 40, 150)
    assert "image ids" in first["evidence"] and first["known"]
    assert not other["trained_on_evaluated_images"] and not other["known"]  # records no ids
    assert "train_image_ids" not in report["checkpoints"][0]["metadata"]
    assert "leaky.safetensors trained on 40 of these 150 images" in result.stderr
    assert f"{tiny_checkpoint.name} records no training image ids" in result.stderr
    table = invoke(*args, env={"COLUMNS": "200"})
    assert "TRAINED ON THESE IMAGES" in table.stderr and "40 of these 150" in table.stderr


def test_three_class_checkpoint_on_the_prepared_and_the_raw_validation_split(
    val_source: Path, prepared_val: Path, tiny_isic2017_checkpoint: Path
) -> None:
    """The true class of each image: the manifest's diagnosis, or the official label file's
    melanoma / seborrheic_keratosis columns; both give the same per-class section."""
    sections = [
        run_evaluation(load_data(data, "val"), [tiny_isic2017_checkpoint], torch.device("cpu"),
                       ZERO, n_boot=0).report.as_record()["checkpoints"][0]["multiclass"]
        for data in (prepared_val, val_source)
    ]
    prepared, raw = sections
    counts = {name: c["n_images"] for name, c in prepared["per_class"].items()}
    assert counts == {"melanoma": 30, "seborrheic_keratosis": 42, "nevus": 78}  # the README's
    assert np.array(prepared["confusion_matrix"]["counts"]).sum(axis=1).tolist() == [30, 42, 78]
    assert raw["per_class"].keys() == prepared["per_class"].keys()
    for name, c in raw["per_class"].items():
        expected = prepared["per_class"][name]["roc_auc"]["value"]
        assert c["roc_auc"]["value"] == pytest.approx(expected, abs=1e-3)


def test_compare_with_delong_cam_and_val_threshold(
    prepared_val: Path, tiny_checkpoint: Path, tiny_gap_checkpoint: Path
) -> None:
    data = load_data(prepared_val, "val")
    ev = run_evaluation(
        data,
        [tiny_checkpoint, tiny_gap_checkpoint],
        torch.device("cpu"),
        ZERO,
        threshold=None,
        val_data=data,
        n_boot=0,
    )
    record = ev.report.as_record()
    first, gap = record["checkpoints"]
    assert "Youden" in first["threshold"]["source"]
    assert set(gap["attention_jaccard"]) == {"cam"}
    (cmp,) = record["comparisons"]
    assert (cmp["auc_a"], cmp["auc_b"]) == pytest.approx(
        (first["roc_auc"]["value"], gap["roc_auc"]["value"])
    )
    assert 0 <= cmp["p_value"] <= 1 and cmp["n_images"] == 150
    console = Console(record=True, width=200)
    console.print(report_table(ev.report))
    text = console.export_text()
    for needle in ("AUC (95 % CI)", "Jaccard pool4", "Jaccard cam", "DeLong", gap["name"]):
        assert needle in text


def test_failed_image_is_reported_and_exit_code_2(
    prepared_val: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    items = load_data(prepared_val, "val").items
    subset = [it for it in items if it.label][:4] + [it for it in items if not it.label][:8]
    small = tmp_path / "small"
    (small / "images").mkdir(parents=True)
    manifest = []
    for it in subset:
        shutil.copy(it.path, small / "images" / it.path.name)
        name = f"images/{it.path.name}"
        manifest.append(Row(it.image_id, "test", it.label, "", name, None, None, "", ""))
    (small / "images" / subset[0].path.name).write_bytes(b"not a png")
    write_manifest(small, manifest)
    result = CliRunner().invoke(
        app, ["evaluate", "--data", str(small), "-c", str(tiny_checkpoint), "-f", "json", *FAST]
    )
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["checkpoints"][0]["n_images"] == 11
    assert "attention_jaccard" not in report["checkpoints"][0]  # no masks in this manifest
    (failure,) = report["failed"]
    assert subset[0].path.name in failure["path"] and subset[0].path.name in result.stderr


# The ISIC challenge scorer's melanoma figures, written out by hand on a table of ten images
# (isic-challenge-scoring: an image is positive when p > 0.5; rates are ratios of the confusion
# counts; AUC the probability that a melanoma outscores a non-melanoma; AP the mean, over the
# melanomas ranked by p, of the precision at each; the 2017 Part 3 rule: specificity at the
# first ROC point, from the highest threshold down, whose sensitivity reaches the target).
#   p      0.95 0.85 0.75 0.65 0.55 0.45 0.35 0.25 0.15 0.05
#   truth    1    0    1    0    1    0    0    1    0    0
HAND_P = (0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05)
HAND_Y = (1, 0, 1, 0, 1, 0, 0, 1, 0, 0)


def test_melanoma_figures_equal_the_isic_scorers_definitions_by_hand() -> None:
    sc = Scores(
        checkpoint=Path("hand.safetensors"), name="hand", meta=CheckpointMeta(),
        ids=[f"im{i}" for i in range(10)], labels=np.array(HAND_Y), probs=np.array(HAND_P),
        class_probs=np.stack([1 - np.array(HAND_P), np.array(HAND_P)], axis=1), jaccard={},
        failed=[],
    )
    rep = checkpoint_report(sc, 0.5, "fixed", n_boot=0).as_record()
    assert (rep["n_images"], rep["n_melanoma"]) == (10, 4)
    # called: 0.95 0.85 0.75 0.65 0.55 → TP 3, FP 2; not called: FN 1 (0.25), TN 4
    at = rep["at_threshold"]
    assert at["confusion_matrix"] == {"tn": 4, "fp": 2, "fn": 1, "tp": 3}
    assert at["n_at_threshold"] == 0
    assert at["sensitivity"] == pytest.approx(3 / 4)
    assert at["specificity"] == pytest.approx(4 / 6)
    assert at["precision"] == pytest.approx(3 / 5)
    assert at["npv"] == pytest.approx(4 / 5)
    assert at["accuracy"] == pytest.approx(7 / 10)
    assert at["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert at["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # melanomas outscore 6, 5, 4 and 2 of the 6 non-melanomas: 17 of 24 pairs
    assert rep["roc_auc"] == {"value": pytest.approx(17 / 24), "ci95": None}
    # melanomas at ranks 1, 3, 5, 8: precisions 1/1, 2/3, 3/5, 4/8
    assert rep["average_precision"]["value"] == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 8) / 4)
    # sensitivity 0.82, 0.89 and 0.95 are first reached at p 0.25 (all 4), with 4 of 6 called
    for target in ("0.82", "0.89", "0.95"):
        point = rep["specificity_at_sensitivity"][target]
        assert (point["sensitivity"], point["specificity"]) == pytest.approx((1.0, 2 / 6))
        assert point["threshold"] == pytest.approx(0.25)
    # specificity >= 0.80 allows one false positive (p >= 0.75: 2 of 4); >= 0.90 none (1 of 4)
    for target, (sens, spec, thr) in {
        "0.80": (2 / 4, 5 / 6, 0.75), "0.90": (1 / 4, 1.0, 0.95), "0.95": (1 / 4, 1.0, 0.95)
    }.items():
        point = rep["sensitivity_at_specificity"][target]
        assert (point["sensitivity"], point["specificity"], point["threshold"]) == pytest.approx(
            (sens, spec, thr)
        )


# --- parts, no data needed ----------------------------------------------------------------------


def test_parse_threshold() -> None:
    assert parse_threshold("0.3") == 0.3
    assert parse_threshold("VAL") is None
    for bad in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(AttnMelError, match="--threshold"):
            parse_threshold(bad)


def test_single_class_split_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(3):
        Image.new("RGB", (256, 256), (i * 40, 90, 90)).save(tmp_path / "images" / f"{i}.png")
        rows.append(Row(f"im{i}", "test", 0, "nevus", f"images/{i}.png", None, None, "", ""))
    write_manifest(tmp_path, rows)
    with pytest.raises(DataError, match="all 3 images of split 'test' are non-melanoma"):
        run_evaluation(load_data(tmp_path, "test"), [], torch.device("cpu"))
    with pytest.raises(DataError, match=r"no 'val' images \(splits present: test\)"):
        load_data(tmp_path, "val")


def test_load_mask_follows_the_image_geometry(tmp_path: Path) -> None:
    mask = np.zeros((256, 256), np.uint8)
    mask[:, 128:] = 255  # right half
    Image.fromarray(mask).save(tmp_path / "m.png")
    # Prepared, S = 224: resize to 256 (no-op), centre crop 224 → columns 112.. of 224 are lesion.
    m224 = load_mask(tmp_path / "m.png", PreprocessConfig(224), prepared=True)
    assert m224.shape == (224, 224) and m224.dtype == bool
    assert m224[:, 112:].all() and not m224[:, :112].any()
    m64 = load_mask(tmp_path / "m.png", PreprocessConfig(64), prepared=True)
    assert m64.shape == (64, 64) and m64[:, 33:].all() and not m64[:, :31].any()
    # A photo-sized mask (wider than tall) gets the paper's square crop first.
    wide = np.zeros((100, 200), np.uint8)
    wide[:, 100:] = 255
    Image.fromarray(wide).save(tmp_path / "w.png")
    mw = load_mask(tmp_path / "w.png", PreprocessConfig(224), prepared=False)
    assert mw[:, 113:].all() and not mw[:, :111].any()


def test_report_json_is_strict() -> None:
    text = report_json({"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}})
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": {"d": None}}
    assert "NaN" not in text and "Infinity" not in text


def test_check_outputs_refuses_existing_files(tmp_path: Path) -> None:
    check_outputs(tmp_path / "new")
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(AttnMelError, match="already exists; pass --force"):
        check_outputs(tmp_path)
    check_outputs(tmp_path, overwrite=True)
    with pytest.raises(AttnMelError, match="not a folder"):
        check_outputs(tmp_path / "report.json", overwrite=True)


def test_display_names_disambiguate() -> None:
    assert display_names([Path("a/x.st"), Path("b/y.st")]) == ["x.st", "y.st"]
    assert display_names([Path("r1/best.st"), Path("r2/best.st")]) == ["r1/best.st", "r2/best.st"]
