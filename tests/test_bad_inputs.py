"""Bad inputs: a corpus of awkward files through every command that reads images.

The corpus is built here, file by file (nothing downloaded): files that must be scored however odd
they are (alpha, 16 bits, palette, CMYK, EXIF rotation, tiny, animated, multi-page, names with
spaces, non-ASCII characters or Rich markup), and files that must fail (empty, truncated, text,
1×1, a decompression bomb, a folder, a missing path, no read permission). ``predict``,
``explain``, ``evaluate`` and ``prepare`` each run over it; every bad file gives one line on
stderr naming it and its problem, never a traceback, and the rest of the batch goes through.
Label files with missing ids, duplicate ids, wrong columns and bad values, and masks of the wrong
size are here too. Checkpoints are the tiny random-init ones of conftest.py.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from attnmel_cli.data.manifest import MANIFEST_NAME, read_manifest
from attnmel_cli.data.transforms import paper_crop
from attnmel_cli.io.default_model import DEFAULT_CHECKPOINT_ENV

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

pytestmark = pytest.mark.usefixtures("restore_logging")

# ── the corpus ────────────────────────────────────────────────────────────────────────────────


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random colour image (JPEG-friendly), centre darker like a lesion."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    arr = np.asarray(img).astype(np.int16)
    yy, xx = np.mgrid[:height, :width]
    inside = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(width, height) / 4) ** 2
    arr[inside] //= 2
    return Image.fromarray(arr.astype(np.uint8))


RED = (255, 0, 0)
CORNER = 16  # side of the red block in the stored top-left corner of the EXIF-rotated photo


def _exif_rotated(path: Path) -> None:
    """Stored 120×80 with a red top-left block; EXIF orientation 6 shows it 80×120, turned 90°
    clockwise, so that the red block is in the top-right corner of what a viewer displays."""
    img = _photo(120, 80, seed=5)
    img.paste(RED, (0, 0, CORNER, CORNER))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)


def _sixteen_bit(path: Path) -> None:
    arr = (np.asarray(_photo(72, 64, 2).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr).save(path)  # mode I;16
    with Image.open(path) as check:
        assert check.mode.startswith("I;16")


def _animated_gif(path: Path) -> None:
    frames = [_photo(64, 64, seed).convert("P") for seed in (10, 11, 12)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff(path: Path) -> None:
    pages = [_photo(64, 64, seed) for seed in (13, 14)]
    pages[0].save(path, save_all=True, append_images=pages[1:])


def _cmyk(path: Path) -> None:
    _photo(80, 64, 3).convert("CMYK").save(path, quality=95)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels and carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    _photo(96, 96, 4).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


Maker = Callable[[Path], None]

# Files attnmel must score, however unusual (name → maker).
GOOD: dict[str, Maker] = {
    "plain.jpg": lambda p: _photo(96, 72, 1).save(p, quality=92),
    "with spaces in name.jpg": lambda p: _photo(90, 90, 6).save(p, quality=92),
    "naïve ünïcode 皮膚.png": lambda p: _photo(70, 80, 7).save(p),
    "markup [bold]x[red] :smile:.png": lambda p: _photo(64, 64, 8).save(p),
    "alpha.png": lambda p: _photo(80, 80, 9).convert("RGBA").save(p),
    "sixteen-bit.png": _sixteen_bit,
    "grayscale.jpg": lambda p: _photo(80, 72, 15).convert("L").save(p, quality=92),
    "palette.png": lambda p: _photo(80, 72, 16).convert("P", palette=Image.ADAPTIVE).save(p),
    "cmyk.jpg": _cmyk,
    "exif-rotated.jpg": _exif_rotated,
    "smaller-than-crop.png": lambda p: _photo(24, 20, 17).save(p),  # network input is 64 px
    "animated.gif": _animated_gif,
    "multipage.tif": _multipage_tiff,
}
# Files with more than one frame: scored from the first, with one warning line naming them.
MULTI_FRAME = ("animated.gif", "multipage.tif")

# Files attnmel must refuse, one line each (name → (maker, what the line says)).
BAD: dict[str, tuple[Maker | None, str]] = {
    "zero-bytes.jpg": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated.jpg": (_truncated_jpeg, "cannot decode"),
    "text named.jpg": (lambda p: p.write_text("not a photo\n"), "not an image"),
    "one-pixel.png": (lambda p: Image.new("RGB", (1, 1), RED).save(p), "smaller than the minimum"),
    "bomb.png": (lambda p: p.write_bytes(_png_header_only(100_000, 100_000)), "--max-pixels"),
    "ünïcode brökën.jpg": (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0garbage"), "cannot decode"),
}
# A path that does not exist, given explicitly (argument or stdin); its folder's name is Rich
# markup, which must be printed as it is.
MISSING = "does not exist.jpg"


def missing_path(root: Path) -> Path:
    return root / "gone [/red]" / MISSING


def build_corpus(root: Path) -> Path:
    """Write every GOOD and BAD file into ``root``; return it."""
    root.mkdir(parents=True, exist_ok=True)
    for name, make in GOOD.items():
        make(root / name)
    for name, (make, _) in BAD.items():
        if make is not None:
            make(root / name)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "photos")


def _lines_naming(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if name in line]


def _check_one_line_each(stderr: str, expected: dict[str, str]) -> None:
    """Exactly one stderr line names each bad file, with its problem; no traceback."""
    assert "Traceback" not in stderr, stderr
    for name, problem in expected.items():
        lines = _lines_naming(stderr, name)
        assert len(lines) == 1, (name, stderr)
        assert problem in lines[0], (name, lines[0])


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _check_rotated_overlay(overlay: Path) -> None:
    """The overlay of the EXIF-rotated photo is the displayed photo: 80×120, red block top-right
    (dimmed by half outside the region the network saw)."""
    with Image.open(overlay) as img:
        rgb = img.convert("RGB")
    assert rgb.size == (80, 120)
    r, g, b = rgb.getpixel((80 - CORNER // 2, CORNER // 2))  # top-right: the red block
    assert r > 100 and g < 40 and b < 40, (r, g, b)
    r, g, b = rgb.getpixel((CORNER // 2, CORNER // 2))  # top-left: not red
    assert not (r > 100 and g < 40 and b < 40), (r, g, b)
    r, g, b = rgb.getpixel((CORNER // 2, 120 - CORNER // 2))  # bottom-left: not red
    assert not (r > 100 and g < 40 and b < 40), (r, g, b)


# ── predict ───────────────────────────────────────────────────────────────────────────────────


def test_predict_scores_the_good_and_names_each_bad_file_once(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    empty_dir = tmp_path / "empty folder"
    empty_dir.mkdir()
    # The folder, a missing path and an empty folder as arguments; two files again on stdin.
    stdin = f"{corpus / 'plain.jpg'}\n{corpus / 'bomb.png'}\n"
    overlays = tmp_path / "overlays"
    result = invoke(
        "predict", corpus, missing_path(tmp_path), empty_dir, "-", "-c", tiny_checkpoint,
        "-f", "jsonl", "-j", "0", "-b", "4", "--overlay-dir", overlays, stdin=stdin,
    )
    assert result.exit_code == 2, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_name: dict[str, list[dict]] = {}
    for rec in records:
        by_name.setdefault(Path(rec["path"]).name, []).append(rec)
    assert set(by_name) == set(GOOD) | set(BAD) | {MISSING}
    for name in GOOD:
        for rec in by_name[name]:
            assert "error" not in rec and 0 <= rec["p_melanoma"] <= 1, rec
    for name, (_, problem) in BAD.items():
        for rec in by_name[name]:
            assert rec["p_melanoma"] is None and problem in rec["error"], rec
    assert "no such file" in by_name[MISSING][0]["error"]
    # stderr: one line per failed record (bomb.png twice: once from the folder, once from stdin)
    bad = {**{n: p for n, (_, p) in BAD.items() if n != "bomb.png"}, MISSING: "no such file"}
    _check_one_line_each(result.stderr, bad)
    assert len(_lines_naming(result.stderr, "bomb.png")) == 2
    for name in MULTI_FRAME:
        (line,) = _lines_naming(result.stderr, name)
        assert "frames; using the first" in line
    (line,) = _lines_naming(result.stderr, "empty folder")
    assert "no image files found" in line
    for name in set(GOOD) - set(MULTI_FRAME):
        assert not _lines_naming(result.stderr, name), name
    # one overlay per scored image, at the size of the photo as displayed
    for name in GOOD:
        stem = Path(name).stem
        out = overlays / f"{stem}_attention.png"
        assert out.is_file(), name
        if name != "exif-rotated.jpg":
            with Image.open(corpus / name) as src:
                assert _size(out) == src.size, name
    _check_rotated_overlay(overlays / "exif-rotated_attention.png")
    assert not [p for p in overlays.iterdir() if Path(p.stem).stem in {Path(n).stem for n in BAD}]


def test_predict_table_format_shows_markup_in_names_literally(
    corpus: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, invoke
) -> None:
    monkeypatch.chdir(corpus)  # short paths: the table is as wide as a terminal
    name = "markup [bold]x[red] :smile:.png"
    result = invoke("predict", name, "zero-bytes.jpg", "-c", tiny_checkpoint, "-f", "table",
                    "-j", "0")
    assert result.exit_code == 2, result.stderr
    assert name in result.stdout and "Traceback" not in result.output
    _check_one_line_each(result.stderr, {"zero-bytes.jpg": "empty file"})


# ── explain ───────────────────────────────────────────────────────────────────────────────────


def test_explain_writes_the_good_and_names_each_bad_file_once(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    out = tmp_path / "explained"
    result = invoke("explain", corpus, missing_path(tmp_path), "-c", tiny_checkpoint, "-o", out,
                    "-j", "0", "-b", "4")
    assert result.exit_code == 2, result.stderr
    bad = {**{n: p for n, (_, p) in BAD.items()}, MISSING: "no such file"}
    _check_one_line_each(result.stderr, bad)
    scored = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(Path(path).name for path, _, _ in scored) == sorted(GOOD)
    for name in GOOD:
        stem = Path(name).stem
        for suffix in ("_pool3.png", "_pool4.png", "_composite.png", "_maps.npz"):
            assert (out / f"{stem}{suffix}").is_file(), (name, suffix)
    _check_rotated_overlay(out / "exif-rotated_pool4.png")
    assert _size(out / "exif-rotated_pool3.png") == (80, 120)
    assert not [p for p in out.iterdir() if p.name.startswith(tuple(Path(n).stem for n in BAD))]


# ── evaluate on a generic layout (a CSV of image,label beside the photos) ─────────────────────


def _labelled_source(root: Path, corpus: Path, names: list[str]) -> Path:
    """``root/photos/*`` copied from the corpus and ``root/labels.csv`` (image,label)."""
    (root / "photos").mkdir(parents=True)
    rows = [["image", "label"]]
    for i, name in enumerate(names):
        shutil.copy(corpus / name, root / "photos" / name)
        rows.append([f"photos/{name}", str(i % 2)])
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return root


def _mask(path: Path, size: tuple[int, int]) -> None:
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4] = 255
    Image.fromarray(arr).save(path)


def test_evaluate_generic_layout_scores_the_good_and_names_each_bad_file_once(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    names = [*GOOD, *BAD]
    src = _labelled_source(tmp_path / "src", corpus, names)
    masks = src / "masks"
    masks.mkdir()
    _mask(masks / "plain_segmentation.png", _size(corpus / "plain.jpg"))
    _mask(masks / "alpha_segmentation.png", (33, 17))  # not the photo's size
    out = tmp_path / "report"
    result = invoke("evaluate", "--data", src, "-c", tiny_checkpoint, "-f", "json",
                    "--bootstrap", "0", "-j", "0", "--device", "cpu", "--out", out)
    assert result.exit_code == 2, result.stderr
    bad = {
        **{n: p for n, (_, p) in BAD.items()},
        "alpha_segmentation.png": "lesion mask is 33×17 px",
    }
    _check_one_line_each(result.stderr, bad)
    report = json.loads(result.stdout)
    failed = {Path(f["path"]).name for f in report["failed"]}
    assert failed == set(BAD) | {"alpha.png"}
    assert report["checkpoints"][0]["n_images"] == len(GOOD) - 1
    assert report["checkpoints"][0]["attention_jaccard"]["pool4"]["n_images"] == 1
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        ids = {row["image_id"] for row in csv.DictReader(fh)}
    assert ids == {Path(n).stem for n in GOOD if n != "alpha.png"}


def test_label_files_with_missing_or_duplicate_ids_bad_values_or_columns_are_refused(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    """evaluate (on data never prepared) and prepare read label files alike: every problem
    listed with its line, exit 1, nothing written."""
    src = _labelled_source(tmp_path / "src", corpus, ["plain.jpg", "alpha.png", "cmyk.jpg"])
    with (src / "labels.csv").open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([
            ["photos/gone.jpg", "1"],  # no such image
            ["photos/plain.jpg", "0"],  # duplicate id
            ["photos/cmyk.jpg", "maybe"],  # bad label
            ["", "1"],  # empty id
        ])
    evaluate = ["evaluate", "--data", src, "-c", tiny_checkpoint, "--bootstrap", "0", "-j", "0"]
    prepare = ["prepare", src, "--out", tmp_path / "prepared"]
    for args in (evaluate, prepare):
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        for needle in ("label without image (1): gone", "duplicate id in labels (1): plain",
                       "bad label (2): cmyk (labels.csv:7: 'maybe'), (empty id) (labels.csv:8"):
            assert needle in result.stderr, (args[0], needle, result.stderr)
    # the wrong columns: no label file recognised at all
    (src / "labels.csv").write_text("file,diagnosis\nphotos/plain.jpg,melanoma\n")
    for args in (evaluate, prepare):
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        (line,) = _lines_naming(result.stderr, "labels.csv")
        assert "not a label file" in line and "image,label" in line, (args[0], result.stderr)
    assert not (tmp_path / "prepared").exists()


def test_prepared_mask_of_the_wrong_size_is_one_failed_image(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    names = ["plain.jpg", "alpha.png", "cmyk.jpg", "palette.png"]
    src = _labelled_source(tmp_path / "src", corpus, names)
    for name in names:
        _mask(src / "photos" / f"{Path(name).stem}_segmentation.png", _size(corpus / name))
    prepared = tmp_path / "prepared"
    assert invoke("prepare", src, "--out", prepared, "--val-fraction", "0").exit_code == 0
    bad_mask = prepared / "masks" / "lesion" / "cmyk.png"
    _mask(bad_mask, (100, 100))  # no longer the prepared 256×256
    result = invoke("evaluate", "--data", prepared, "--split", "train", "-c", tiny_checkpoint,
                    "-f", "json", "--bootstrap", "0", "-j", "0")
    assert result.exit_code == 2, result.stderr
    _check_one_line_each(result.stderr, {"cmyk.png": "lesion mask is 100×100 px"})
    assert json.loads(result.stdout)["checkpoints"][0]["n_images"] == 3


# ── prepare ───────────────────────────────────────────────────────────────────────────────────


def test_prepare_takes_every_odd_but_good_photo(corpus: Path, tmp_path: Path, invoke) -> None:
    src = _labelled_source(tmp_path / "src", corpus, list(GOOD))
    out = tmp_path / "prepared"
    result = invoke("prepare", src, "--out", out, "--val-fraction", "0")
    assert result.exit_code == 0, result.stderr
    rows = read_manifest(out)
    assert sorted(r.image_id for r in rows) == sorted(Path(n).stem for n in GOOD)
    for row in rows:
        assert _size(out / row.image) == (256, 256)
    with Image.open(corpus / "exif-rotated.jpg") as img:  # turned upright independently
        upright = ImageOps.exif_transpose(img).convert("RGB")
    assert upright.size == (80, 120)
    expected = np.asarray(paper_crop(upright), dtype=int)
    with Image.open(out / "images" / "exif-rotated.png") as img:
        assert np.abs(np.asarray(img.convert("RGB"), dtype=int) - expected).max() <= 1


def test_prepare_names_every_unusable_file_and_writes_no_manifest(
    corpus: Path, tmp_path: Path, invoke
) -> None:
    # files whose header cannot be read are found by the checks (nothing written)…
    src = _labelled_source(tmp_path / "src", corpus, ["plain.jpg", "cmyk.jpg", "zero-bytes.jpg",
                                                      "text named.jpg", "ünïcode brökën.jpg",
                                                      "bomb.png"])
    out = tmp_path / "out"
    result = invoke("prepare", src, "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    for name, problem in (("zero-bytes.jpg", "unreadable image"),
                          ("text named.jpg", "unreadable image"),
                          ("ünïcode brökën.jpg", "unreadable image"),
                          ("bomb.png", "--max-pixels")):
        (line,) = _lines_naming(result.stderr, name)
        assert problem in line, (name, result.stderr)
    assert not out.exists()
    # …files that only fail to decode, when writing: listed, and no manifest.csv
    src2 = _labelled_source(tmp_path / "src2", corpus, ["plain.jpg", "cmyk.jpg", "truncated.jpg",
                                                        "one-pixel.png"])
    result = invoke("prepare", src2, "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    for name, problem in (("truncated.jpg", "cannot decode"),
                          ("one-pixel.png", "smaller than the minimum")):
        (line,) = _lines_naming(result.stderr, name)
        assert problem in line, (name, result.stderr)
    assert not (out / MANIFEST_NAME).exists()


# ── the pixel limit, an option of every command that decodes photos ───────────────────────────


def test_max_pixels_refuses_then_accepts_a_genuine_large_image(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path, invoke
) -> None:
    photo = corpus / "plain.jpg"  # 96×72 = 6912 pixels; the others below have fewer than 6000
    small_limit = ["--max-pixels", "6000"]
    low = invoke("predict", photo, "-c", tiny_checkpoint, "-f", "csv", "-j", "0", *small_limit)
    assert low.exit_code == 2
    (line,) = _lines_naming(low.stderr, "plain.jpg")
    assert "pixel limit" in line and "--max-pixels" in line
    high = invoke("predict", photo, "-c", tiny_checkpoint, "-f", "csv", "-j", "0",
                  "--max-pixels", "6912")
    assert high.exit_code == 0, high.stderr
    low = invoke("explain", photo, "-c", tiny_checkpoint, "-o", tmp_path / "e", "-j", "0",
                 *small_limit)
    assert low.exit_code == 2 and "--max-pixels" in low.stderr
    names = ["plain.jpg", "markup [bold]x[red] :smile:.png", "smaller-than-crop.png",
             "palette.png"]
    src = _labelled_source(tmp_path / "src", corpus, names)
    low = invoke("prepare", src, "--out", tmp_path / "p", *small_limit)
    assert low.exit_code == 1 and "--max-pixels" in low.stderr and "plain.jpg" in low.stderr
    assert invoke("prepare", src, "--out", tmp_path / "p", "--max-pixels", "7000",
                  "--val-fraction", "0").exit_code == 0
    low = invoke("evaluate", "--data", src, "-c", tiny_checkpoint, "-f", "json", "--bootstrap",
                 "0", "-j", "0", *small_limit)
    assert low.exit_code == 2, low.stderr
    (line,) = _lines_naming(low.stderr, "plain.jpg")
    assert "--max-pixels" in line
    assert json.loads(low.stdout)["checkpoints"][0]["n_images"] == 3
    high = invoke("evaluate", "--data", src, "-c", tiny_checkpoint, "-f", "json", "--bootstrap",
                  "0", "-j", "0", "--max-pixels", "6912")
    assert high.exit_code == 0, high.stderr


# ── permissions ───────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A photo that cannot be opened for reading (EACCES).

    chmod 000 does not stop root; as root, opening that one file raises PermissionError as
    the kernel would for another user (the code paths from there on are the same)."""
    path = tmp_path / "locked.jpg"
    _photo(64, 64).save(path)
    if not IS_ROOT:
        path.chmod(0)
        yield path
        path.chmod(0o644)
        return
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).name == path.name:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    yield path


def test_unreadable_file_is_one_line(
    corpus: Path, tiny_checkpoint: Path, unreadable: Path, invoke
) -> None:
    result = invoke("predict", unreadable, corpus / "plain.jpg", "-c", tiny_checkpoint,
                    "-f", "csv", "-j", "0")
    assert result.exit_code == 2, result.stderr
    _check_one_line_each(result.stderr, {"locked.jpg": "permission denied"})
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [bool(r["error"]) for r in rows] == [True, False]


# ── a real process: decoding in worker processes, stdout a pipe ───────────────────────────────


def test_subprocess_with_workers_over_the_corpus(
    corpus: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(corpus, folder)
    odd = os.fsdecode(b"latin1 \xe9t\xe9.jpg")  # not UTF-8: a surrogate-escaped name
    shutil.copy(corpus / "plain.jpg", folder / odd)
    env = {k: v for k, v in os.environ.items() if k != DEFAULT_CHECKPOINT_ENV}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # strict, as under a UTF-8 locale such as en_US.UTF-8
    proc = subprocess.run(
        [sys.executable, "-m", "attnmel_cli", "predict", str(folder), "-",
         "-c", str(tiny_checkpoint), "-j", "2", "-b", "3"],
        input=os.fsencode(f"{missing_path(tmp_path)}\n"), capture_output=True, env=env, timeout=180,
    )
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", "surrogateescape"))))
    names = [Path(r["path"]).name for r in rows]
    assert sorted(names) == sorted([*GOOD, *BAD, odd, MISSING])
    failed = [bool(r["error"]) for r in rows]
    assert failed == [n in BAD or n == MISSING for n in names]
    bad = {**{n: p for n, (_, p) in BAD.items()}, MISSING: "no such file"}
    _check_one_line_each(stderr, bad)
