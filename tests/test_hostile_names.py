"""Hostile names in a dataset (built here): file names with a CR or bytes that are not UTF-8,
class folders and ids a spreadsheet would run as formulas, a diagnosis matplotlib would parse as
mathtext, symlink loops; and a weights file that pickles code. Each is skipped or refused in
one line, the run goes on, CSV cells are neutralised and read back exactly."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import time
from pathlib import Path

import pytest

from attnmel_cli.data.manifest import MANIFEST_NAME, read_manifest
from attnmel_cli.io.atomic import remove_stale_temporaries, write_text_atomic

pytestmark = pytest.mark.usefixtures("restore_logging")
FORMULA = "=cmd|' -C calc'!A0"  # a folder name: no slash
MATH = r"$\frac{$"


@pytest.fixture(scope="module")
def hostile_source(tmp_path_factory: pytest.TempPathFactory, make_photo) -> Path:
    """Class folders: melanoma, other, one named like a formula and one like mathtext; a file
    name with a CR, one that is not UTF-8, and an id starting with '-'."""
    root = tmp_path_factory.mktemp("hostile") / "source"
    for folder, names in {"melanoma": ["m1", "m2", "m3"], "other": ["o1", "-x"],
                          FORMULA: ["c1"], MATH: ["d1"]}.items():
        (root / folder).mkdir(parents=True)
        for seed, name in enumerate(names):
            make_photo(root / folder / f"{name}.jpg", seed + len(folder))
    make_photo(root / "melanoma" / "bad\rname.jpg", 20)
    good = make_photo(root / "other" / "tmp.jpg", 21)
    os.rename(good, os.path.join(os.fsencode(root / "other"), b"\xff\xfe.jpg"))
    return root


@pytest.fixture(scope="module")
def prepared_hostile(hostile_source: Path) -> tuple[Path, str]:
    """``prepare`` of that source (no val carved): the prepared dir and prepare's stderr."""
    from typer.testing import CliRunner

    from attnmel_cli.cli import app

    out = hostile_source.parent / "prepared"
    result = CliRunner().invoke(app, ["prepare", str(hostile_source), "--out", str(out),
                                      "--val-fraction", "0", "-j", "0"])
    assert result.exit_code == 0, result.output
    return out, result.stderr


def test_prepare_skips_unusable_names_in_one_line_each_and_writes_the_manifest(
    prepared_hostile: tuple[Path, str],
) -> None:
    out, stderr = prepared_hostile
    skipped = [line for line in stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2, stderr
    assert any("bad\\rname.jpg" in line for line in skipped)
    assert any("\\xff\\xfe.jpg" in line for line in skipped)
    assert "\r" not in stderr
    rows = {r.image_id: r for r in read_manifest(out)}
    assert set(rows) == {"m1", "m2", "m3", "o1", "-x", "c1", "d1"}
    assert rows["c1"].diagnosis == FORMULA and rows["-x"].image == "images/-x.png"
    assert rows["d1"].diagnosis == MATH
    text = (out / MANIFEST_NAME).read_text(encoding="utf-8")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert "'" + FORMULA in cells and "'-x" in cells  # neutralised in the file
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))]


def test_evaluate_neutralises_csv_and_plots_labels_as_plain_text(
    prepared_hostile: tuple[Path, str], tiny_checkpoint: Path, tmp_path: Path, invoke,
) -> None:
    out, _ = prepared_hostile
    report = tmp_path / "report"
    result = invoke("evaluate", "--data", out, "--split", "train", "-c", tiny_checkpoint,
                    "-j", "0", "--bootstrap", "0", "--out", report, "-f", "jsonl",
                    "--gallery", "2")
    assert result.exit_code == 0, result.output
    assert "-x" in {json.loads(line)["image_id"] for line in result.stdout.splitlines()}
    with (report / "predictions.csv").open(newline="") as fh:
        ids = {row["image_id"] for row in csv.DictReader(fh)}
    assert "'-x" in ids and "-x" not in ids
    html = (report / "report.html").read_text(encoding="utf-8")  # the diagnosis chart drawn
    assert "Diagnoses" in html
    # a shared report names the data and the checkpoint, never this machine's folders
    assert str(out) not in html and str(tiny_checkpoint.parent) not in html


def test_symlink_loops_are_one_line_errors(tmp_path: Path, labelled: Path, invoke) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for args in (["prepare", loop, "--out", tmp_path / "out"],
                 ["prepare", labelled, "--out", loop]):
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        (line,) = result.stderr.strip().splitlines()
        assert str(loop) in line and "symlink loop" in line


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_train_refuses_pickled_weights_without_torchs_advice(
    prepared_hostile: tuple[Path, str], tmp_path: Path, invoke,
) -> None:
    out, _ = prepared_hostile
    evil = tmp_path / "weights.pt"
    evil.write_bytes(pickle.dumps({"features.0.weight": _Payload()}))
    result = invoke("train", "--data", out, "--out", tmp_path / "run",  # VGG at width 1
                    "--image-size", "64", "--epochs", "1", "-j", "0", "--device", "cpu",
                    "--pretrained-weights", evil, "--train-splits", "train")
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert str(evil) in line and "refused" in line
    assert "weights_only" not in result.output and "pickled code ran" not in result.output


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    dead = tmp_path / ".model.onnx.99999999.abcd1234.tmp"  # beyond any pid: its writer is gone
    legacy = tmp_path / ".model.onnx.k3j4h5g6.tmp"  # an older name, an hour old
    live = tmp_path / f".model.onnx.{os.getpid()}.zzzz9999.tmp"  # a write in progress
    other = tmp_path / ".model.onnx.backup.99999999.abcd1234.tmp"  # another target's
    for path in (dead, legacy, live, other):
        path.write_bytes(b"x" * 100)
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    write_text_atomic(target, "new")
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and other.exists() and target.read_text() == "new"
    assert remove_stale_temporaries(target) == []
    # an interruption (Ctrl-C, SIGTERM raising SystemExit) leaves no temporary either
    with pytest.raises(SystemExit):
        from attnmel_cli.io.atomic import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise SystemExit(143)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, other.name])
