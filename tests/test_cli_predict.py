"""``attnmel predict`` and ``attnmel explain`` on real photographs, in-process and as subprocesses.

The checkpoints are tiny random-init models (``tiny_checkpoint``, ``tiny_gap_checkpoint`` in
conftest.py): the numbers mean nothing, the plumbing is what is tested.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.transforms import network_box
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.default_model import DEFAULT_CHECKPOINT_ENV
from attnmel_cli.io.model_checkpoint import save_checkpoint
from attnmel_cli.models.registry import build_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FULLRES = SHARED_DATA / "isic2016-test-fullres" / "ISBI2016_ISIC_Part3_Test_Data"
# The three smallest photographs (about 720×540): real files, quick to decode.
PHOTO_NAMES = ("ISIC_0000213.jpg", "ISIC_0000160.jpg", "ISIC_0000212.jpg")
HEADER = "path,p_melanoma,prediction,checkpoint,error"

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    paths = [FULLRES / name for name in PHOTO_NAMES]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(
            f"real ISIC photographs not available ({missing[0]}); see shared/data/README.md"
        )
    return paths


@pytest.fixture
def predict(invoke):
    """``predict(ckpt, *args, stdin=None)``: ``attnmel predict`` in-process, decoding in the main
    process (no worker fork in pytest)."""

    def run(ckpt: Path, *args: str | Path, stdin: str | None = None):
        return invoke("predict", *args, "-c", ckpt, "-j", "0", stdin=stdin)

    return run


def _csv_rows(stdout: str) -> list[dict[str, str]]:
    assert stdout.splitlines()[0] == HEADER
    return list(csv.DictReader(io.StringIO(stdout)))


def _jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _bad_file(folder: Path) -> Path:
    bad = folder / "broken.jpg"
    bad.write_text("this is not a JPEG\n")
    return bad


def _assert_scored(rec: dict, ckpt: Path) -> None:
    p = float(rec["p_melanoma"])
    assert 0.0 <= p <= 1.0
    assert rec["prediction"] == ("melanoma" if p >= 0.5 else "other")
    assert "label" not in rec  # ground truth only (the deprecated copy is gone)
    assert rec["checkpoint"] == ckpt.name
    assert not rec.get("error")


# --- predict, in-process ----------------------------------------------------------------------


def test_single_file_csv(tiny_checkpoint, photos, predict) -> None:
    result = predict(tiny_checkpoint, photos[0], "-f", "csv")
    assert result.exit_code == 0, result.stderr
    (row,) = _csv_rows(result.stdout)
    assert row["path"] == str(photos[0])
    _assert_scored(row, tiny_checkpoint)
    assert "scored 1 of 1" in result.stderr
    assert "attnmel:" not in result.stdout  # logs go to stderr only


def test_default_format_when_piped_is_csv_and_threshold_applies(
    tiny_checkpoint, photos, predict
) -> None:
    low = _csv_rows(predict(tiny_checkpoint, photos[0], "--threshold", "0").stdout)
    high = _csv_rows(predict(tiny_checkpoint, photos[0], "--threshold", "1").stdout)
    assert low[0]["prediction"] == "melanoma" and high[0]["prediction"] == "other"
    assert low[0]["p_melanoma"] == high[0]["p_melanoma"]


def test_folder_lists_photos_only_recursive_on_request(
    tiny_checkpoint, photos, tmp_path, predict
) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for p in photos[:2]:
        shutil.copy(p, folder / p.name)
    shutil.copy(photos[2], folder / "sub" / photos[2].name)
    (folder / "notes.txt").write_text("not a photo")
    Image.new("L", (64, 64)).save(folder / "ISIC_0000213_segmentation.png")  # a mask, skipped
    flat = predict(tiny_checkpoint, folder, "-f", "jsonl")
    assert flat.exit_code == 0, flat.stderr
    assert [r["path"] for r in _jsonl(flat.stdout)] == sorted(
        str(folder / p.name) for p in photos[:2]
    )
    deep = predict(tiny_checkpoint, folder, "-f", "jsonl", "--recursive")
    assert deep.exit_code == 0, deep.stderr
    assert len(_jsonl(deep.stdout)) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    none = predict(tiny_checkpoint, empty)
    assert none.exit_code == 1 and "no images to score" in none.stderr


def test_paths_from_stdin(tiny_checkpoint, photos, predict) -> None:
    listing = f"{photos[2]}\n\n{photos[0]}\n"
    result = predict(tiny_checkpoint, "-", "-f", "csv", stdin=listing)
    assert result.exit_code == 0, result.stderr
    assert [r["path"] for r in _csv_rows(result.stdout)] == [str(photos[2]), str(photos[0])]


def test_bad_file_in_the_batch(tiny_checkpoint, photos, tmp_path, invoke) -> None:
    bad = _bad_file(tmp_path)
    result = invoke(  # --quiet: stderr keeps errors only
        "--quiet",
        "predict",
        photos[0],
        bad,
        photos[1],
        "-c",
        tiny_checkpoint,
        "-j",
        "0",
        "-f",
        "jsonl",
        "-b",
        "2",
    )
    assert result.exit_code == 2
    records = _jsonl(result.stdout)
    assert [r["path"] for r in records] == [str(photos[0]), str(bad), str(photos[1])]
    _assert_scored(records[0], tiny_checkpoint)
    _assert_scored(records[2], tiny_checkpoint)
    failed = records[1]
    assert failed["p_melanoma"] is None and failed["prediction"] is None
    assert str(bad) in failed["error"] and failed["checkpoint"] == tiny_checkpoint.name
    # stderr: exactly one line, naming the file; no traceback.
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "error" in lines[0]
    assert "Traceback" not in result.output


def test_bad_file_in_csv_and_missing_file(tiny_checkpoint, photos, tmp_path, predict) -> None:
    missing = tmp_path / "gone.jpg"
    result = predict(tiny_checkpoint, missing, photos[0], "-f", "csv")
    assert result.exit_code == 2
    rows = _csv_rows(result.stdout)
    assert rows[0]["path"] == str(missing)
    assert rows[0]["p_melanoma"] == "" and rows[0]["prediction"] == ""
    assert "no such file" in rows[0]["error"]
    _assert_scored(rows[1], tiny_checkpoint)
    assert "Traceback" not in result.output


def test_records_follow_input_order_whatever_the_batch_size(
    tiny_checkpoint, photos, predict
) -> None:
    order = [photos[2], photos[0], photos[1], photos[0]]
    runs = []
    for batch in ("1", "3"):
        result = predict(tiny_checkpoint, *order, "-f", "jsonl", "-b", batch)
        assert result.exit_code == 0, result.stderr
        runs.append(_jsonl(result.stdout))
    for records in runs:
        assert [r["path"] for r in records] == [str(p) for p in order]
    one, three = ([r["p_melanoma"] for r in records] for records in runs)
    assert one == pytest.approx(three, abs=1e-5)
    assert one[1] == pytest.approx(one[3], abs=1e-6)  # the same photo twice
    assert len({round(p, 6) for p in one[:3]}) == 3  # different photos, different scores


def test_table_format(tiny_checkpoint, photos, predict) -> None:
    result = predict(tiny_checkpoint, photos[0], "-f", "table")
    assert result.exit_code == 0, result.stderr
    assert "p_melanoma" in result.stdout and "prediction" in result.stdout
    assert str(photos[0])[:20] in result.stdout  # the path column (Rich may shorten it to fit)
    bad = predict(tiny_checkpoint, photos[0], "-f", "xml")
    assert bad.exit_code == 1 and "unknown --format" in bad.stderr


def test_overlay_has_the_input_size(tiny_checkpoint, photos, tmp_path, predict) -> None:
    out = tmp_path / "out.png"
    result = predict(tiny_checkpoint, photos[0], "--overlay", out, "-f", "csv")
    assert result.exit_code == 0, result.stderr
    assert _size(out) == _size(photos[0])
    assert len(_csv_rows(result.stdout)) == 1


def test_overlay_follows_exif_orientation(tiny_checkpoint, photos, tmp_path, predict) -> None:
    """A photo stored sideways with EXIF orientation 6: the overlay matches what a viewer shows."""
    rotated = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(photos[0]) as img:
        img.save(rotated, exif=exif, quality=90)
        width, height = img.size
    out = tmp_path / "sideways_overlay.png"
    result = predict(tiny_checkpoint, rotated, "--overlay", out)
    assert result.exit_code == 0, result.stderr
    assert _size(out) == (height, width)


def test_overlay_needs_one_input_and_a_map(tiny_checkpoint, photos, tmp_path, predict) -> None:
    result = predict(tiny_checkpoint, *photos[:2], "--overlay", tmp_path / "o.png")
    assert result.exit_code == 1 and "exactly one" in result.stderr
    assert not (tmp_path / "o.png").exists()
    torch.manual_seed(0)
    plain = save_checkpoint(
        tmp_path / "mel-cnn.safetensors",
        build_model("mel-cnn", "vgg16_bn", 0.0625),
        CheckpointMeta(arch="mel-cnn", width=0.0625, image_size=64),
    )
    result = predict(plain, photos[0], "--overlay", tmp_path / "o.png")
    assert result.exit_code == 1 and "no attention map" in result.stderr


def test_overlay_dir_writes_one_per_image(tiny_checkpoint, photos, tmp_path, predict) -> None:
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    twin = twin_dir / photos[0].name  # same file name as photos[0], another folder
    shutil.copy(photos[1], twin)
    out = tmp_path / "overlays"
    result = predict(tiny_checkpoint, *photos, twin, "--overlay-dir", out, "-f", "csv")
    assert result.exit_code == 0, result.stderr
    stems = [p.stem for p in photos]
    expected = {f"{s}_attention.png" for s in stems} | {f"{stems[0]}-2_attention.png"}
    assert {p.name for p in out.iterdir()} == expected
    for photo in photos:
        assert _size(out / f"{photo.stem}_attention.png") == _size(photo)
    assert _size(out / f"{stems[0]}-2_attention.png") == _size(photos[1])


def test_gap_checkpoint_overlays_its_cam(tiny_gap_checkpoint, photos, tmp_path, predict) -> None:
    out = tmp_path / "cam.png"
    result = predict(tiny_gap_checkpoint, photos[1], "--overlay", out)
    assert result.exit_code == 0, result.stderr
    assert _size(out) == _size(photos[1])


def test_existing_overlay_is_not_overwritten_without_force(
    tiny_checkpoint, photos, tmp_path, predict
) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    result = predict(tiny_checkpoint, photos[0], "--overlay", out)
    assert (
        result.exit_code == 1 and "already exists" in result.stderr and "--force" in result.stderr
    )
    assert out.read_bytes() == b"precious"
    forced = predict(tiny_checkpoint, photos[0], "--overlay", out, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert _size(out) == _size(photos[0])

    out_dir = tmp_path / "dir"
    out_dir.mkdir()
    taken = out_dir / f"{photos[0].stem}_attention.png"
    taken.write_bytes(b"precious")
    result = predict(
        tiny_checkpoint, photos[0], photos[1], "--overlay-dir", out_dir, "-f", "jsonl"
    )
    assert result.exit_code == 2
    first, second = _jsonl(result.stdout)
    assert "already exists" in first["error"] and "error" not in second
    assert taken.read_bytes() == b"precious"
    assert (out_dir / f"{photos[1].stem}_attention.png").is_file()


def test_no_default_model(photos, tmp_path, monkeypatch, invoke) -> None:
    monkeypatch.setenv(DEFAULT_CHECKPOINT_ENV, str(tmp_path / "nothing-here.safetensors"))
    result = invoke("predict", photos[0], "-j", "0")
    assert result.exit_code == 1
    assert "no default model" in result.stderr and "--checkpoint" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_pickle_checkpoint_refused_by_the_cli(photos, tmp_path, predict) -> None:
    evil = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, evil)
    result = predict(evil, photos[0])
    assert result.exit_code == 1 and "never unpickles" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


# --- explain, in-process ----------------------------------------------------------------------


def test_explain_writes_maps_at_photo_size(tiny_checkpoint, photos, tmp_path, invoke) -> None:
    out = tmp_path / "explained"
    result = invoke("explain", photos[0], photos[1], "-c", tiny_checkpoint, "-o", out, "-j", "0")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(photos[0]), str(photos[1])]
    for photo in photos[:2]:
        stem, size = photo.stem, _size(photo)
        assert _size(out / f"{stem}_pool3.png") == size
        assert _size(out / f"{stem}_pool4.png") == size
        assert (out / f"{stem}_composite.png").is_file()
        raw = np.load(out / f"{stem}_maps.npz")
        assert raw["pool3"].shape == (8, 8) and raw["pool4"].shape == (4, 4)  # 64 / 8, 64 / 16
        for name in ("pool3", "pool4"):
            assert raw[name].min() >= 0 and raw[name].max() <= 1
        assert raw["box"] == pytest.approx(network_box(*size, PreprocessConfig(64)), abs=1e-3)
        assert 0 <= float(raw["p_melanoma"]) <= 1
    again = invoke("explain", photos[0], "-c", tiny_checkpoint, "-o", out, "-j", "0")
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_explain_cam_for_vgg16_gap(tiny_gap_checkpoint, photos, tmp_path, invoke) -> None:
    out = tmp_path / "cam"
    result = invoke("explain", photos[2], "-c", tiny_gap_checkpoint, "-o", out, "-j", "0")
    assert result.exit_code == 0, result.stderr
    stem = photos[2].stem
    assert _size(out / f"{stem}_cam.png") == _size(photos[2])
    assert not (out / f"{stem}_pool3.png").exists()
    raw = np.load(out / f"{stem}_maps.npz")
    assert raw["cam"].shape == (2, 2) and "pool3" not in raw


def test_explain_refuses_a_model_without_maps(photos, tmp_path, invoke) -> None:
    torch.manual_seed(0)
    plain = save_checkpoint(
        tmp_path / "mel-cnn.safetensors",
        build_model("mel-cnn", "vgg16_bn", 0.0625),
        CheckpointMeta(arch="mel-cnn", width=0.0625, image_size=64),
    )
    result = invoke("explain", photos[0], "-c", plain, "-o", tmp_path / "out", "-j", "0")
    assert result.exit_code == 1
    assert "neither attention maps nor a CAM" in result.stderr
    assert "Traceback" not in result.output


def test_explain_bad_file_in_the_batch(tiny_checkpoint, photos, tmp_path, invoke) -> None:
    bad = _bad_file(tmp_path)
    out = tmp_path / "out"
    result = invoke("explain", bad, photos[0], "-c", tiny_checkpoint, "-o", out, "-j", "0")
    assert result.exit_code == 2
    assert str(bad) in result.stderr and "Traceback" not in result.output
    assert (out / f"{photos[0].stem}_composite.png").is_file()
    assert not list(out.glob("broken*"))


# --- the same as a user runs it: real subprocesses, decoding in worker processes --------------


@pytest.fixture(scope="module")
def cli_runs(tiny_checkpoint, photos, tmp_path_factory) -> dict[str, tuple[Path, int, str, str]]:
    """Three real ``python -m attnmel_cli`` runs, started together (each spends seconds importing
    torch); name → (working dir, exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != DEFAULT_CHECKPOINT_ENV}
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny model on a small shared machine
    root = tmp_path_factory.mktemp("subprocess")
    folder = root / "folder"
    folder.mkdir()
    for p in photos[1:]:
        shutil.copy(p, folder / p.name)
    _bad_file(root)
    ckpt = str(tiny_checkpoint)
    jobs = {
        # stdin list, a folder, a bad file and a single file; CSV by default when piped.
        "batch": (
            [
                "predict",
                "-",
                "folder",
                "broken.jpg",
                str(photos[1]),
                "-c",
                ckpt,
                "-b",
                "2",
                "--overlay-dir",
                "overlays",
            ],
            f"{photos[0]}\n",
        ),
        "single": (
            ["predict", str(photos[2]), "-c", ckpt, "-f", "jsonl", "--overlay", "out.png"],
            "",
        ),
        "explain": (["explain", str(photos[0]), str(photos[1]), "-c", ckpt, "-o", "maps"], ""),
    }
    procs = {}
    for name, (args, _) in jobs.items():
        cwd = root / name
        cwd.mkdir()
        if name == "batch":
            shutil.move(str(folder), cwd / "folder")
            shutil.move(str(root / "broken.jpg"), cwd / "broken.jpg")
        procs[name] = (
            cwd,
            subprocess.Popen(
                [sys.executable, "-m", "attnmel_cli", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=cwd,
            ),
        )
    results = {}
    for name, (cwd, proc) in procs.items():
        out, err = proc.communicate(jobs[name][1], timeout=180)
        results[name] = (cwd, proc.returncode, out, err)
    return results


def test_subprocess_stdin_folder_file_and_bad_file(cli_runs, tiny_checkpoint, photos) -> None:
    cwd, code, stdout, stderr = cli_runs["batch"]
    assert code == 2, stderr
    rows = _csv_rows(stdout)  # stdout holds only the records
    names = [photos[1].name, photos[2].name]
    expected = [
        str(photos[0]),
        *(f"folder/{n}" for n in sorted(names)),
        "broken.jpg",
        str(photos[1]),
    ]
    assert [r["path"] for r in rows] == expected
    for row in rows:
        if row["path"] == "broken.jpg":
            assert "broken.jpg" in row["error"] and row["p_melanoma"] == ""
        else:
            _assert_scored(row, tiny_checkpoint)
    assert rows[1]["p_melanoma"] == rows[4]["p_melanoma"]  # the same photo via folder and argument
    error_lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "broken.jpg" in error_lines[0]
    assert "Traceback" not in stderr and "scored 4 of 5" in stderr
    overlays = cwd / "overlays"
    assert _size(overlays / f"{photos[0].stem}_attention.png") == _size(photos[0])
    assert _size(overlays / f"{photos[2].stem}_attention.png") == _size(photos[2])
    assert _size(overlays / f"{photos[1].stem}-2_attention.png") == _size(photos[1])
    assert len(list(overlays.iterdir())) == 4


def test_subprocess_single_file_jsonl_overlay(cli_runs, tiny_checkpoint, photos) -> None:
    cwd, code, stdout, stderr = cli_runs["single"]
    assert code == 0, stderr
    (rec,) = _jsonl(stdout)
    assert rec["path"] == str(photos[2]) and set(rec) == {
        "path",
        "p_melanoma",
        "prediction",
        "checkpoint",
    }
    _assert_scored(rec, tiny_checkpoint)
    assert _size(cwd / "out.png") == _size(photos[2])


def test_subprocess_explain(cli_runs, photos) -> None:
    cwd, code, stdout, stderr = cli_runs["explain"]
    assert code == 0, stderr
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [str(p) for p in photos[:2]]
    for photo in photos[:2]:
        for name in ("pool3", "pool4"):
            assert _size(cwd / "maps" / f"{photo.stem}_{name}.png") == _size(photo)
        assert (cwd / "maps" / f"{photo.stem}_composite.png").is_file()
        assert (cwd / "maps" / f"{photo.stem}_maps.npz").is_file()
