"""Multi-class models (``train --classes``, ``--class-weights``) and their records in ``predict``
and ``explain``: every arch trained one step on synthetic prepared dirs, the ``p_<class>``
columns, the binary records unchanged, ONNX parity, ``--init``/``--resume`` with classes."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmel_cli.data.classes import ISIC2017_CLASSES, class_weights, resolve_classes
from attnmel_cli.data.manifest import Row
from attnmel_cli.data.prepare import prepare_dataset
from attnmel_cli.errors import DataError
from attnmel_cli.io.checkpoint import read_metadata, read_tensors
from attnmel_cli.io.records import (
    FIELDS,
    predicted_index,
    prediction_caption,
    record,
    record_fields,
)
from attnmel_cli.losses import focal_loss
from attnmel_cli.models.attnmel import ARCHS
from attnmel_cli.models.names import CLASSES

pytestmark = pytest.mark.usefixtures("restore_logging")

BINARY_HEADER = "path,p_melanoma,prediction,checkpoint,error"
EXPLICIT = "melanoma,nevus,other"  # seborrheic keratoses and dermatofibromas → other


def tiny(epochs: int = 1) -> tuple[str, ...]:
    """``train`` options of a tiny CPU run: one step per epoch (every sampled image in a batch)."""
    return ("--no-pretrained", "--width", "0.0625", "--image-size", "64", "--epochs",
            str(epochs), "-b", "32", "-j", "0", "--device", "cpu", "--seed", "1")


def _source(root: Path, diagnoses: tuple[str, ...], make_photo: Callable[[Path, int], Path]
            ) -> Path:
    """A generic layout: 2 training and 1 validation photo per diagnosis, labels.csv with
    ``image,label,split,diagnosis``."""
    root.mkdir(parents=True)
    lines, i = ["image,label,split,diagnosis"], 0
    for split, n in (("train", 2), ("val", 1)):
        for diagnosis in diagnoses:
            for _ in range(n):
                make_photo(root / f"im{i}.jpg", i)
                lines.append(f"im{i}.jpg,{int(diagnosis == 'melanoma')},{split},{diagnosis}")
                i += 1
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, make_photo) -> dict[str, Path]:
    """Prepared dirs: ``isic2017`` (melanoma, seborrheic keratosis, nevus) and ``extra`` (those
    and dermatofibroma)."""
    root = tmp_path_factory.mktemp("multiclass")
    out = {}
    for name, diagnoses in (("isic2017", ISIC2017_CLASSES),
                            ("extra", (*ISIC2017_CLASSES, "dermatofibroma"))):
        prepare_dataset(_source(root / f"{name}-src", diagnoses, make_photo), root / name,
                        workers=0)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory, make_photo) -> list[Path]:
    root = tmp_path_factory.mktemp("photos")
    return [make_photo(root / f"photo{i}.jpg", 100 + i) for i in range(3)]


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory, invoke) -> Callable[[str, str], Path]:
    """``trained(arch, spec)``: the best checkpoint of a one-step run (trained once per module);
    ``isic2017`` on the isic2017 dir, the explicit list (with balanced weights) on the other."""

    @cache
    def run(arch: str, spec: str) -> Path:
        data = prepared["isic2017" if spec == "isic2017" else "extra"]
        weights = "none" if spec == "isic2017" else "balanced"
        out = tmp_path_factory.mktemp("runs") / f"{arch}-{spec.replace(',', '-')}"
        result = invoke("train", "-d", data, "-o", out, "--arch", arch, "--classes", spec,
                        "--class-weights", weights, *tiny())
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(out / "best.safetensors")
        return out / "best.safetensors"

    return run


def _csv(stdout: str) -> tuple[list[str], list[dict[str, str]]]:
    rows = list(csv.reader(io.StringIO(stdout)))
    return rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def _class_probs(rec: dict, classes: tuple[str, ...]) -> np.ndarray:
    return np.array([float(rec[f"p_{c}"]) for c in classes])


def _assert_multiclass(rec: dict, classes: tuple[str, ...]) -> None:
    """p_<class> sum to 1, p_melanoma is the melanoma class's, prediction the arg-max."""
    probs = _class_probs(rec, classes)
    assert abs(probs.sum() - 1) < 1e-5 and (probs >= 0).all()
    assert float(rec["p_melanoma"]) == probs[classes.index("melanoma")]
    assert rec["prediction"] == classes[int(np.argmax(probs))]
    assert "label" not in rec  # the deprecated binary field is not carried over


# ── every arch, both kinds of class list ─────────────────────────────────────────────────────


@pytest.mark.parametrize("spec", ("isic2017", EXPLICIT))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_trains_and_predicts_each_class(
    trained, arch, spec, photos, invoke
) -> None:
    classes = ISIC2017_CLASSES if spec == "isic2017" else tuple(EXPLICIT.split(","))
    best = trained(arch, spec)
    assert read_metadata(best).classes == classes
    result = invoke("predict", "-c", best, *photos, "-f", "csv", "-j", "0")
    assert result.exit_code == 0, result.output
    header, rows = _csv(result.stdout)
    per_class = [f"p_{c}" for c in classes if c != "melanoma"]
    assert header == ["path", "p_melanoma", *per_class, "prediction", "checkpoint", "error"]
    assert [r["path"] for r in rows] == [str(p) for p in photos]
    for row in rows:
        _assert_multiclass(row, classes)
        assert row["checkpoint"] == best.name and row["error"] == ""
    assert "deprecated" not in result.stderr


def test_jsonl_table_threshold_and_bad_file(trained, photos, tmp_path, invoke) -> None:
    best = trained("attnmel", "isic2017")
    bad = tmp_path / "broken.jpg"
    bad.write_text("not a JPEG\n")
    result = invoke("predict", "-c", best, photos[0], bad, "-f", "jsonl", "-j", "0")
    assert result.exit_code == 2
    good, failed = (json.loads(line) for line in result.stdout.splitlines())
    assert list(good) == ["path", "p_melanoma", "p_seborrheic_keratosis", "p_nevus",
                          "prediction", "checkpoint"]
    _assert_multiclass(good, ISIC2017_CLASSES)
    assert failed["error"] and failed["prediction"] is None
    assert failed["p_melanoma"] is failed["p_nevus"] is failed["p_seborrheic_keratosis"] is None
    # --threshold: melanoma when p_melanoma ≥ it, else the most probable other class
    low = invoke("predict", "-c", best, photos[0], "-f", "jsonl", "-j", "0", "--threshold", "0")
    high = invoke("predict", "-c", best, photos[0], "-f", "jsonl", "-j", "0", "--threshold", "1")
    assert json.loads(low.stdout)["prediction"] == "melanoma"
    rec = json.loads(high.stdout)
    others = {c: rec[f"p_{c}"] for c in ISIC2017_CLASSES[1:]}
    assert rec["prediction"] == max(others, key=others.__getitem__)
    table = invoke("predict", "-c", best, photos[0], "-f", "table", "-j", "0",
                   env={"COLUMNS": "200"})
    assert table.exit_code == 0
    shown = good["prediction"]
    assert f"{shown} {good[f'p_{shown}']:.3f}" in table.stdout


def test_predict_subprocess(trained, photos) -> None:
    best = trained("vgg16-gap", "isic2017")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "attnmel_cli", "predict", "-", "-c", str(best)],
        input="".join(f"{p}\n" for p in photos), capture_output=True, text=True, env=env,
        timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    header, rows = _csv(proc.stdout)  # CSV when piped
    assert header == ["path", "p_melanoma", "p_seborrheic_keratosis", "p_nevus", "prediction",
                      "checkpoint", "error"]
    assert len(rows) == len(photos)
    for row in rows:
        _assert_multiclass(row, ISIC2017_CLASSES)


def test_binary_records_name_the_class(tiny_checkpoint, photos, invoke) -> None:
    result = invoke("predict", "-c", tiny_checkpoint, photos[0], "-f", "csv", "-j", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == BINARY_HEADER
    (row,) = _csv(result.stdout)[1]
    assert row["prediction"] == ("melanoma" if float(row["p_melanoma"]) >= 0.5 else "other")
    assert "label" not in row and "deprecated" not in result.stderr
    rec = json.loads(
        invoke("predict", "-c", tiny_checkpoint, photos[0], "-f", "jsonl", "-j", "0").stdout)
    assert list(rec) == ["path", "p_melanoma", "prediction", "checkpoint"]
    assert rec["prediction"] in ("melanoma", "other")
    assert record_fields(CLASSES) == FIELDS


# ── records, prediction rule, caption ────────────────────────────────────────────────────────


def test_record_fields_and_values() -> None:
    assert record_fields(("MEL", "NV", "other")) == (
        "path", "p_melanoma", "p_MEL", "p_NV", "p_other", "prediction", "checkpoint", "error")
    assert record_fields(("nevus", "melanoma")) == (
        "path", "p_melanoma", "p_nevus", "prediction", "checkpoint", "error")
    rec = record("a.jpg", 0.2, None, "m", None, classes=("MEL", "NV", "other"),
                 probs=(0.2, 0.5, 0.3))
    assert rec == {"path": "a.jpg", "p_melanoma": 0.2, "p_MEL": 0.2, "p_NV": 0.5, "p_other": 0.3,
                   "prediction": "NV", "checkpoint": "m"}
    binary = record("a.jpg", 0.5, None, "m", None, probs=(0.5, 0.5))
    assert binary["prediction"] == "melanoma" and "label" not in binary and "p_other" not in binary
    assert record("a.jpg", 0.4, None, "m", None)["prediction"] == "other"


def test_predicted_index() -> None:
    classes = ("nevus", "melanoma", "seborrheic_keratosis")
    assert predicted_index(classes, (0.3, 0.3, 0.4)) == 2
    assert predicted_index(classes, (0.4, 0.2, 0.4)) == 0  # the first of a tie
    assert predicted_index(classes, (0.5, 0.2, 0.3), threshold=0.2) == 1
    assert predicted_index(classes, (0.3, 0.5, 0.2), threshold=0.6) == 0
    assert predicted_index(CLASSES, (0.5, 0.5)) == 1  # binary: p_melanoma ≥ 0.5
    assert predicted_index(CLASSES, (0.7, 0.3), threshold=0.25) == 1
    assert prediction_caption(classes, (0.1, 0.19, 0.71)) == "seborrheic keratosis 0.71"
    assert prediction_caption(CLASSES, (0.83, 0.17)) == "other 0.83"
    assert prediction_caption(CLASSES, (0.83, 0.17), threshold=0.1) == "melanoma 0.17"


# ── explain ──────────────────────────────────────────────────────────────────────────────────


def test_explain_writes_class_probabilities(trained, photos, tmp_path, invoke) -> None:
    best = trained("attnmel", EXPLICIT)
    result = invoke("explain", "-c", best, photos[0], "-o", tmp_path / "ex", "-j", "0")
    assert result.exit_code == 0, result.output
    path, p, composite = result.stdout.strip().split("\t")
    assert path == str(photos[0])
    classes = tuple(EXPLICIT.split(","))
    with np.load(tmp_path / "ex" / f"{photos[0].stem}_maps.npz") as raw:
        probs = np.array([raw[f"p_{c}"] for c in classes])
        assert abs(probs.sum() - 1) < 1e-5 and float(raw["p_melanoma"]) == probs[0]
        assert str(raw["prediction"]) == classes[int(np.argmax(probs))]
        assert raw["pool3"].shape == (8, 8)
    assert abs(float(p) - probs[0]) < 1e-6 and Path(composite).is_file()


# ── ONNX ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("arch", ("attnmel", "vgg16-gap"))
def test_onnx_export_gives_the_same_class_columns(trained, arch, photos, tmp_path, invoke):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    best = trained(arch, "isic2017")
    model = tmp_path / "m.onnx"
    assert invoke("export", best, "--out", model).exit_code == 0
    from attnmel_cli.deploy.runtime import OnnxSession

    assert OnnxSession.load(model, "cpu").meta.classes == ISIC2017_CLASSES
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(props["classes"]) == list(ISIC2017_CLASSES)
    assert "threshold" not in props  # p_melanoma ≥ 0.5 is the binary models' rule only
    by_torch = invoke("predict", "-c", best, *photos, "-f", "csv", "-j", "0", "--tta")
    by_onnx = invoke("predict", "-c", model, *photos, "-f", "csv", "-j", "0", "--tta")
    (ht, a), (ho, b) = _csv(by_torch.stdout), _csv(by_onnx.stdout)
    assert ht == ho and "p_nevus" in ho
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_allclose(_class_probs(ra, ISIC2017_CLASSES),
                                   _class_probs(rb, ISIC2017_CLASSES), atol=2e-6)
        assert ra["prediction"] == rb["prediction"] and rb["checkpoint"] == "m.onnx"


# ── train options ────────────────────────────────────────────────────────────────────────────


def test_classes_errors_are_one_line(prepared, tmp_path, invoke) -> None:
    out = tmp_path / "run"
    unknown = invoke("train", "-d", prepared["extra"], "-o", out, "--classes", "isic2017", *tiny())
    assert unknown.exit_code == 1
    (line,) = unknown.stderr.strip().splitlines()
    assert "dermatofibroma" in line and "'other'" in line
    no_melanoma = invoke("train", "-d", prepared["extra"], "-o", out, "--classes",
                         "nevus,other", *tiny())
    assert no_melanoma.exit_code == 1
    (line,) = no_melanoma.stderr.strip().splitlines()
    assert "no melanoma class" in line
    weights = invoke("train", "-d", prepared["isic2017"], "-o", out, "--classes", "isic2017",
                     "--class-weights", "1,2", *tiny())
    assert weights.exit_code == 1 and "3 non-negative numbers" in weights.stderr
    assert not out.exists()  # refused before the run dir was claimed


def test_class_weights_parsing() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    assert class_weights("none", labels, 3) is None
    assert class_weights("balanced", labels, 3) == pytest.approx((6 / 9, 6 / 3, 6 / 6))
    assert class_weights("1,2.5,0", labels, 3) == (1.0, 2.5, 0.0)
    for bad in ("1,2", "1,-1,1", "0,0,0", "a,b,c"):
        with pytest.raises(DataError, match="one per class"):
            class_weights(bad, labels, 3)
    with pytest.raises(DataError, match="class 1 has no training image"):
        class_weights("balanced", np.array([0, 2]), 3)


def test_resolve_classes_by_diagnosis() -> None:
    def row(image_id: str, diagnosis: str) -> Row:
        return Row(image_id, "train", int(diagnosis == "MEL"), diagnosis, "", None, None, "", "")

    rows = [row("b", "MEL"), row("a", "NV"), row("c", "BCC"), row("d", "NV")]
    assert resolve_classes("diagnosis", rows) == ("NV", "MEL", "BCC")  # first seen by image id
    assert resolve_classes("melanoma", rows) == CLASSES


def test_weighted_focal_loss_matches_hand_computation() -> None:
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [math.log(4.0), 0.0, 0.0]])
    labels = torch.tensor([1, 2])
    weight = torch.tensor([0.5, 2.0, 3.0])
    # softmax rows: (1/5, 3/5, 1/5) and (4/6, 1/6, 1/6): p_t = 3/5 and 1/6
    terms = [-(1 - 0.6) ** 2 * math.log(0.6), -(1 - 1 / 6) ** 2 * math.log(1 / 6)]
    expected = (2.0 * terms[0] + 3.0 * terms[1]) / (2.0 + 3.0)
    assert focal_loss(logits, labels, weight=weight).item() == pytest.approx(expected, rel=1e-6)
    assert focal_loss(logits, labels, weight=torch.ones(3)).item() == pytest.approx(
        focal_loss(logits, labels).item(), rel=1e-6)


def test_train_help_shows_the_class_options(invoke) -> None:
    result = invoke("train", "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--classes" in result.stdout and "isic2017" in result.stdout
    assert "--class-weights" in result.stdout and "balanced" in result.stdout


def test_init_across_classes_keeps_all_but_the_classifier(trained, prepared, tmp_path,
                                                          invoke) -> None:
    """A 3-class checkpoint --init a binary run (and back): every tensor but the classifier's
    comes from it (lr ~0: unchanged after a step), the classifier is the run's own shape."""
    source = trained("attnmel", "isic2017")
    before, _ = read_tensors(source)
    binary = invoke("train", "-d", prepared["isic2017"], "-o", tmp_path / "binary",
                    "--init", source, "--lr", "1e-12", *tiny())
    assert binary.exit_code == 0, binary.output
    assert "the classifier starts afresh" in binary.stderr
    after, _ = read_tensors(tmp_path / "binary" / "last.safetensors")
    assert after["classifier.weight"].shape[0] == 2 != before["classifier.weight"].shape[0]
    kept = [k for k in before if not k.startswith("classifier.") and k.endswith("weight")]
    assert kept and all(torch.allclose(after[k], before[k], atol=1e-6) for k in kept)
    back = invoke("train", "-d", prepared["isic2017"], "-o", tmp_path / "tuned", "--init",
                  tmp_path / "binary" / "last.safetensors", "--classes", "isic2017", *tiny())
    assert back.exit_code == 0, back.output
    assert read_metadata(tmp_path / "tuned" / "best.safetensors").classes == ISIC2017_CLASSES
    other = invoke("train", "-d", prepared["isic2017"], "-o", tmp_path / "other",
                   "--init", source, "--arch", "mel-cnn", *tiny())
    assert other.exit_code == 1 and "same model" in other.stderr


def test_resume_keeps_the_classes(prepared, tmp_path, invoke) -> None:
    out = tmp_path / "run"
    first = invoke("train", "-d", prepared["extra"], "-o", out, "--classes", EXPLICIT, *tiny())
    assert first.exit_code == 0, first.output
    changed = invoke("train", "-d", prepared["extra"], "-o", out, "--classes",
                     "melanoma,seborrheic_keratosis,other", "--resume", *tiny(2))
    assert changed.exit_code == 1
    assert f"classes: {EXPLICIT!r} → 'melanoma,seborrheic_keratosis,other'" in changed.stderr
    resumed = invoke("train", "-d", prepared["extra"], "-o", out, "--classes", EXPLICIT,
                     "--resume", *tiny(2))
    assert resumed.exit_code == 0, resumed.output
    meta = read_metadata(out / "last.safetensors")
    assert meta.classes == ("melanoma", "nevus", "other") and meta.metrics["epoch"] == 2


def test_overlays_carry_a_legend_in_their_corner_only() -> None:
    from PIL import Image

    from attnmel_cli.viz.legend import add_legend
    from attnmel_cli.viz.overlay import colorize

    grey = Image.new("RGB", (600, 400), (128, 128, 128))
    out = np.asarray(add_legend(grey, "pool-4 attention", "seborrheic keratosis 0.71", colorize))
    assert out.shape == (400, 600, 3)  # the overlay keeps the photo's size
    changed = np.argwhere((out != 128).any(axis=2))
    (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
    assert left < 20 and bottom > 380 and right < 300 and top > 250  # the bottom-left corner
    # the colour bar runs from JET's blue (0) on the left to its red (1)
    blue = np.argwhere((out[:, :, 2] > 200) & (out[:, :, 0] < 60))
    red = np.argwhere((out[:, :, 0] > 200) & (out[:, :, 2] < 60))
    assert len(blue) and len(red) and blue[:, 1].mean() < red[:, 1].mean()
    tiny = Image.new("RGB", (40, 30), (128, 128, 128))  # too small for a legend: unchanged
    assert (np.asarray(add_legend(tiny, "pool-4 attention", None, colorize)) == 128).all()
