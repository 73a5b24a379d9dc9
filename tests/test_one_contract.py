"""Each rule shared by the commands is one thing: prepared images are not cropped twice, one set
of image suffixes, one ``--workers``, one ``--format``, one mixed-precision default, one
"refuse unless --force", ``evaluate``'s default split, and ``prediction`` (not ``label``) in
``predict``'s records."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from attnmel_cli.cli import app
from attnmel_cli.data.manifest import read_manifest
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.evaluation.inputs import default_split
from attnmel_cli.io.atomic import refuse_unless_forced

pytestmark = pytest.mark.usefixtures("restore_logging")
SCORING = ("predict", "explain", "evaluate")


@pytest.fixture(scope="module")
def prepared(isic2017_subset) -> Path:
    """4 training and 6 validation ISIC 2017 images (no test split), via `prepare`."""
    return isic2017_subset({"Training": (2, 2), "Validation": (3, 3)}, masks=False)


def _scores(stdout: str) -> list[float]:
    return [float(r["p_melanoma"]) for r in csv.DictReader(io.StringIO(stdout))]


# ── prepared images are not cropped twice ─────────────────────────────────────────────────────


def test_predict_on_a_prepared_png_scores_the_photo_it_came_from(
    prepared: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    row = read_manifest(prepared, "val")[0]
    source = prepared.parent / "source" / row.source
    png = prepared / row.image
    unstamped = tmp_path / "unstamped.png"
    Image.open(png).save(unstamped)  # the same pixels without prepare's stamp: a photo
    result = invoke("predict", source, png, unstamped, "-c", tiny_checkpoint, "-j", "0",
                    "-f", "csv")
    assert result.exit_code == 0, result.output
    from_photo, from_png, from_unstamped = _scores(result.stdout)
    assert from_png == from_photo  # the very same network input
    assert from_unstamped != from_png  # a plain 256-px PNG is cropped like any photo


def test_explain_outlines_all_of_a_prepared_image_the_network_saw(
    prepared: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    png = prepared / read_manifest(prepared, "val")[0].image
    result = invoke("explain", png, "-c", tiny_checkpoint, "-o", tmp_path, "-j", "0")
    assert result.exit_code == 0, result.output
    box = np.load(tmp_path / f"{png.stem}_maps.npz")["box"]
    # A prepared 256-px image is resized to round(64 · 256/224) = 73 px and its central 64 px
    # taken (4 px off each side): in the image's pixels, 4 · 256/73 to 68 · 256/73.
    expected = (4 * 256 / 73, 4 * 256 / 73, 68 * 256 / 73, 68 * 256 / 73)
    assert box == pytest.approx(expected, abs=1e-3)
    assert box[0] < 0.1 * 256  # not the crop of a crop (which starts past 0.1 · 256)


def test_evaluate_takes_prepared_images_and_masks_found_elsewhere_as_they_are(
    isic2017_subset, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    prepared = isic2017_subset({"Validation": (2, 3)})
    rows = read_manifest(prepared)
    source = tmp_path / "copied"  # the prepared files as a generic image,label layout
    source.mkdir()
    for r in rows:
        shutil.copy(prepared / r.image, source / f"{r.image_id}.png")
        shutil.copy(prepared / r.lesion_mask, source / f"{r.image_id}_segmentation.png")
    (source / "labels.csv").write_text(
        "image,label\n" + "".join(f"{r.image_id}.png,{r.label}\n" for r in rows)
    )
    args = ["-c", tiny_checkpoint, "-j", "0", "--bootstrap", "0", "-f", "jsonl"]
    runs = [invoke("evaluate", "-d", data, *args) for data in (prepared, source)]
    assert all(run.exit_code == 0 for run in runs), [run.output for run in runs]
    as_prepared, as_copied = (
        sorted((json.loads(line) for line in run.stdout.splitlines()), key=lambda r: r["image_id"])
        for run in runs
    )
    assert len(as_copied) == 5 and as_copied == as_prepared  # scores and Jaccard alike


# ── one set of image suffixes ─────────────────────────────────────────────────────────────────


def test_prepare_and_predict_take_the_same_image_files(
    tiny_checkpoint: Path, tmp_path: Path, make_photo, invoke
) -> None:
    source = tmp_path / "source"
    for klass, names in {"melanoma": ("a.jfif", "b.jpg"), "nevus": ("c.ppm", "d.png")}.items():
        (source / klass).mkdir(parents=True)
        for i, name in enumerate(names):
            photo = make_photo(tmp_path / f"{klass}{i}.jpg", i)
            Image.open(photo).save(source / klass / name, format=Image.registered_extensions()[
                Path(name).suffix])
    out = tmp_path / "prepared"
    done = invoke("prepare", source, "--out", out, "--val-fraction", "0", "-j", "0")
    assert done.exit_code == 0, done.output
    assert sorted(r.image_id for r in read_manifest(out)) == ["a", "b", "c", "d"]
    scored = invoke("predict", source, "-r", "-c", tiny_checkpoint, "-j", "0", "-f", "csv")
    assert scored.exit_code == 0, scored.output
    names = [Path(r["path"]).name for r in csv.DictReader(io.StringIO(scored.stdout))]
    assert sorted(names) == ["a.jfif", "b.jpg", "c.ppm", "d.png"]


# ── one --workers, one --format, one --amp ────────────────────────────────────────────────────


def _option(command: str, name: str):
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    return next(p for p in params if p.name == name)


def test_workers_format_and_amp_are_one_option_each() -> None:
    workers = [_option(c, "workers") for c in (*SCORING, "prepare")]
    assert {(tuple(w.opts), w.help, w.min) for w in workers} == {
        (("--workers", "-j"), workers[0].help, 0)
    }
    formats = [_option(c, "fmt") for c in ("predict", "evaluate")]
    assert {(tuple(f.opts), f.help) for f in formats} == {(("--format", "-f"), formats[0].help)}
    amps = [_option(c, "amp") for c in SCORING]
    assert {(a.default, a.help) for a in amps} == {(True, amps[0].help)}


def test_evaluate_takes_every_format(prepared: Path, tiny_checkpoint: Path, invoke) -> None:
    args = ["evaluate", "-d", prepared, "-c", tiny_checkpoint, "-j", "0", "--bootstrap", "0"]
    as_csv = invoke(*args, "-f", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 6 and list(rows[0])[:4] == ["image_id", "label", "p_melanoma", "checkpoint"]
    as_jsonl = invoke(*args, "-f", "jsonl")
    records = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert [r["image_id"] for r in records] == [r["image_id"] for r in rows]
    assert [r["p_melanoma"] for r in records] == [float(r["p_melanoma"]) for r in rows]
    bad = invoke(*args, "-f", "xml")
    assert bad.exit_code == 1 and "unknown --format" in bad.stderr


def test_predict_json_is_one_document_of_the_records(
    prepared: Path, tiny_checkpoint: Path, invoke
) -> None:
    pngs = [prepared / r.image for r in read_manifest(prepared, "val")[:2]]
    args = ["predict", *pngs, "-c", tiny_checkpoint, "-j", "0"]
    document = json.loads(invoke(*args, "-f", "json").stdout)
    lines = [json.loads(line) for line in invoke(*args, "-f", "jsonl").stdout.splitlines()]
    assert document == lines and len(lines) == 2


# ── prediction, not label ─────────────────────────────────────────────────────────────────────


def test_predict_calls_its_output_prediction_a_class_name_and_writes_no_label(
    prepared: Path, tiny_checkpoint: Path, invoke
) -> None:
    png = prepared / read_manifest(prepared, "val")[0].image
    result = invoke("predict", png, "-c", tiny_checkpoint, "-j", "0", "-f", "csv",
                    "--threshold", "0")
    assert result.exit_code == 0, result.output
    header, _ = result.stdout.splitlines()
    assert header == "path,p_melanoma,prediction,checkpoint,error"
    (record,) = csv.DictReader(io.StringIO(result.stdout))
    assert record["prediction"] == "melanoma"
    assert "deprecated" not in result.stderr
    table = invoke("predict", png, "-c", tiny_checkpoint, "-j", "0", "-f", "table")
    assert "melanoma" in table.stdout


# ── evaluate's default split ──────────────────────────────────────────────────────────────────


def test_evaluate_defaults_to_test_else_val_and_says_which(
    prepared: Path, tiny_checkpoint: Path, invoke
) -> None:
    assert default_split({"train", "val", "test"}) == "test"
    assert default_split({"train", "val"}) == "val"
    result = invoke("evaluate", "-d", prepared, "-c", tiny_checkpoint, "-j", "0",
                    "--bootstrap", "0", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["split"] == "val"
    assert "evaluating split 'val'" in result.stderr
    test = invoke("evaluate", "-d", prepared, "-c", tiny_checkpoint, "--split", "test")
    assert test.exit_code == 1 and "no 'test' images" in test.stderr


# ── one "refuse unless --force" ───────────────────────────────────────────────────────────────


def test_refuse_unless_forced(tmp_path: Path) -> None:
    refuse_unless_forced(None, force=False)  # nothing in the way
    refuse_unless_forced(tmp_path, force=True)  # forced
    with pytest.raises(AttnMelError, match=r"x\.png: already exists; pass --force to overwrite"):
        refuse_unless_forced(tmp_path / "x.png", force=False)
    with pytest.raises(DataError, match="holds a run; pass --resume"):
        refuse_unless_forced(tmp_path, force=False, what="holds a run", hint="pass --resume",
                             error=DataError)
