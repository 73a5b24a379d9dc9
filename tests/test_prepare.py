"""`attnmel prepare`: the official ISIC formats on real files, every check on broken copies,
synthetic ISIC 2017 Part 2 superpixels, idempotent re-runs, generic layouts, the manifest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from attnmel_cli.cli import app
from attnmel_cli.config import PREPARED_SIZE
from attnmel_cli.data.checks import Job, carve_val
from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.dermo import dermo_map
from attnmel_cli.data.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    Problems,
    Row,
    read_manifest,
    write_manifest,
)
from attnmel_cli.data.prepare import (
    META_NAME,
    PrepareResult,
    prepare_dataset,
    prepared_crop_fraction,
)
from attnmel_cli.data.sources import read_source
from attnmel_cli.data.transforms import paper_crop, paper_crop_box
from attnmel_cli.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ISIC2017 = DATA / "isic2017-256"
FULLRES = DATA / "isic2016-test-fullres"
LABELS = DATA / "label-files"


def need(path: Path) -> Path:
    """``path``, or skip the test when the shared real data is not on this machine."""
    if not path.exists():
        pytest.skip(f"real ISIC data not found at {path} (see shared/data/README.md)")
    return path


def expected_mask(mask: Path, photo_size: tuple[int, int], crop: float = 0.8) -> np.ndarray:
    """A source mask put on the prepared grid independently: paper crop box, nearest, 0/255."""
    with Image.open(mask) as m:
        m = m.convert("L")
        sx, sy = m.width / photo_size[0], m.height / photo_size[1]
        corners = paper_crop_box(*photo_size, crop)
        box = [c * s for c, s in zip(corners, (sx, sy, sx, sy), strict=True)]
        out = m.resize((PREPARED_SIZE, PREPARED_SIZE), Image.NEAREST, box=box)
    return np.where(np.asarray(out) > 0, 255, 0)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def copy_2017(dst: Path, per_split: dict[str, tuple[int, int]]) -> Path:
    """A small ISIC 2017 layout copied from the real data: (melanoma, other) per split."""
    for split, (mel, other) in per_split.items():
        src_csv = need(ISIC2017) / f"ISIC-2017_{split}_Part3_GroundTruth.csv"
        with src_csv.open(newline="") as fh:
            rows = list(csv.reader(fh))
        body = rows[1:]
        chosen = [r for r in body if r[1] == "1.0"][:mel] + [r for r in body if r[1] != "1.0"][
            :other
        ]
        for folder in (f"ISIC-2017_{split}_Data", f"ISIC-2017_{split}_Part1_GroundTruth"):
            (dst / folder).mkdir(parents=True)
        for image_id, *_ in chosen:
            shutil.copy(
                ISIC2017 / f"ISIC-2017_{split}_Data/{image_id}.jpg", dst / f"ISIC-2017_{split}_Data"
            )
            mask = f"ISIC-2017_{split}_Part1_GroundTruth/{image_id}_segmentation.png"
            shutil.copy(ISIC2017 / mask, dst / mask)
        with (dst / src_csv.name).open("w", newline="") as fh:
            csv.writer(fh).writerows([rows[0], *chosen])
    return dst


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """ISIC 2017 layout: 6 train (2 melanoma), 3 val (1 melanoma)."""
    return copy_2017(tmp_path / "src", {"Training": (2, 4), "Validation": (1, 2)})


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


# ── the real ISIC 2017 data, prepared once ─────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def prepared2017(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PrepareResult]:
    out = tmp_path_factory.mktemp("prepared") / "isic2017"
    return out, prepare_dataset(need(ISIC2017), out, workers=2)


def test_isic2017_counts_and_manifest(prepared2017: tuple[Path, PrepareResult]) -> None:
    out, result = prepared2017
    train, val = read_manifest(out, "train"), read_manifest(out, "val")
    assert (len(train), len(val)) == (2000, 150)
    assert (sum(r.label for r in train), sum(r.label for r in val)) == (374, 30)
    diagnoses = {d: sum(r.diagnosis == d for r in train) for d in ("seborrheic_keratosis", "nevus")}
    assert diagnoses == {"seborrheic_keratosis": 254, "nevus": 1372}
    assert all(r.lesion_mask and r.dermo_mask is None for r in train + val)
    assert result.layout == "isic2017" and not result.carved_val and result.written == 2150
    meta = json.loads((out / META_NAME).read_text())
    assert meta["complete"] and meta["counts"]["val"]["melanoma"] == 30
    with (out / MANIFEST_NAME).open(newline="") as fh:
        assert tuple(next(csv.reader(fh))) == MANIFEST_COLUMNS


def test_isic2017_images_and_masks_aligned(prepared2017: tuple[Path, PrepareResult]) -> None:
    out, _ = prepared2017
    rows = read_manifest(out)
    for row in rows[::300]:
        source = ISIC2017 / row.source
        photo = load_photo(source)
        assert np.array_equal(pixels(out / row.image), np.asarray(paper_crop(photo)))
        folder = source.parent.name.replace("_Data", "_Part1_GroundTruth")
        mask = ISIC2017 / folder / f"{row.image_id}_segmentation.png"
        got = pixels(out / row.lesion_mask)
        assert got.shape == (256, 256) and set(np.unique(got)) <= {0, 255}
        assert np.array_equal(got, expected_mask(mask, photo.size))


def test_rerun_is_idempotent(prepared2017: tuple[Path, PrepareResult]) -> None:
    out, _ = prepared2017
    before = (out / MANIFEST_NAME).read_bytes(), (out / META_NAME).read_bytes()
    again = prepare_dataset(ISIC2017, out, workers=2)
    assert (again.written, again.skipped) == (0, 2150)
    assert ((out / MANIFEST_NAME).read_bytes(), (out / META_NAME).read_bytes()) == before


# ── ISIC 2016 ────────────────────────────────────────────────────────────────────────────────


def test_isic2016_label_formats(tmp_path: Path) -> None:
    train_csv = need(LABELS) / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    shutil.copy(train_csv, tmp_path)  # CRLF, no final newline, no header: benign/malignant
    src = read_source(tmp_path, Problems("t"))
    assert src.layout == "isic2016" and len(src.entries) == 900
    assert sum(e.label for e in src.entries) == 173 and {e.split for e in src.entries} == {"train"}
    test = read_source(need(FULLRES), Problems("t"))  # 0.0/1.0
    assert len(test.entries) == 131 and sum(e.label for e in test.entries) == 35
    assert {e.split for e in test.entries} == {"test"}
    assert {e.diagnosis for e in test.entries} == {"melanoma", "benign"}


def test_isic2016_layout_prepared(tmp_path: Path) -> None:
    """Training CSV (benign/malignant) + Part 1 `_Segmentation.png` masks + full-resolution test
    images with `0.0/1.0` labels: val carved from train, test kept, masks aligned."""
    src = tmp_path / "isic2016"
    train_rows = csv_rows(need(LABELS) / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv")
    have = {p.stem for p in need(ISIC2017).glob("ISIC-2017_Training_Data/*.jpg")}
    rows = [r for r in train_rows if r[0] in have and r[1] == "malignant"][:5]
    rows += [r for r in train_rows if r[0] in have and r[1] == "benign"][:10]
    (src / "ISBI2016_ISIC_Part3_Training_Data").mkdir(parents=True)
    (src / "ISBI2016_ISIC_Part1_Training_GroundTruth").mkdir()
    for image_id, _ in rows:
        shutil.copy(
            ISIC2017 / f"ISIC-2017_Training_Data/{image_id}.jpg",
            src / "ISBI2016_ISIC_Part3_Training_Data",
        )
        shutil.copy(
            ISIC2017 / f"ISIC-2017_Training_Part1_GroundTruth/{image_id}_segmentation.png",
            src / f"ISBI2016_ISIC_Part1_Training_GroundTruth/{image_id}_Segmentation.png",
        )
    write_csv(src / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", rows)
    test_rows = csv_rows(need(FULLRES) / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv")
    test_rows = [
        r for r in test_rows if (FULLRES / f"lesion_masks/{r[0]}_segmentation.png").exists()
    ][:2]
    (src / "ISBI2016_ISIC_Part3_Test_Data").mkdir()
    (src / "lesion_masks").mkdir()
    for image_id, _ in test_rows:
        shutil.copy(
            FULLRES / f"ISBI2016_ISIC_Part3_Test_Data/{image_id}.jpg",
            src / "ISBI2016_ISIC_Part3_Test_Data",
        )
        shutil.copy(FULLRES / f"lesion_masks/{image_id}_segmentation.png", src / "lesion_masks")
    write_csv(src / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", test_rows)

    result = prepare_dataset(src, tmp_path / "out", val_fraction=0.2, seed=3, workers=2)
    assert result.layout == "isic2016" and result.carved_val
    counts = {k: (v.images, v.melanoma, v.lesion_masks) for k, v in result.counts.items()}
    test_melanoma = sum(r[1] == "1.0" for r in test_rows)
    assert counts == {"train": (12, 4, 12), "val": (3, 1, 3), "test": (2, test_melanoma, 2)}
    meta = json.loads((tmp_path / "out" / META_NAME).read_text())
    assert meta["seed"] == 3 and meta["carved_val"]
    for row in read_manifest(tmp_path / "out", "test"):
        photo = load_photo(src / row.source)
        mask = src / f"lesion_masks/{row.image_id}_segmentation.png"
        assert np.array_equal(
            pixels(tmp_path / "out" / row.lesion_mask), expected_mask(mask, photo.size)
        )


def test_carve_val_is_stratified_and_seeded(tmp_path: Path) -> None:
    rows = csv_rows(need(LABELS) / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv")
    jobs = [Job(i, "train", int(v == "malignant"), v, Path(i), None, None, None) for i, v in rows]
    val = carve_val(jobs, 0.2, 0)
    assert len(val) == round(0.2 * 727) + round(0.2 * 173)
    assert sum(v == "malignant" for i, v in rows if i in val) == round(0.2 * 173)
    assert carve_val(jobs, 0.2, 0) == val and carve_val(jobs, 0.2, 1) != val


# ── ISIC 2018 / 2019 / 2020 label files ──────────────────────────────────────────────────────


def test_isic2019_and_2020_label_files(tmp_path: Path) -> None:
    for name, layout, melanomas, rows in (
        ("ISIC_2019_Training_GroundTruth.csv", "isic2019", 4522, 25331),
        ("ISIC_2020_Training_GroundTruth.csv", "isic2020", 584, 33126),
    ):
        folder = tmp_path / layout
        folder.mkdir()
        shutil.copy(need(LABELS) / name, folder)
        src = read_source(folder, Problems("t"))
        assert src.layout == layout and len(src.entries) == rows
        assert sum(e.label for e in src.entries) == melanomas
        assert {e.split for e in src.entries} == {"train"}
        assert all(
            (e.diagnosis == ("MEL" if layout == "isic2019" else "melanoma")) == bool(e.label)
            for e in src.entries
        )
    nevi = [e for e in src.entries if e.diagnosis == "nevus"]
    assert len(nevi) == 5193  # ISIC 2020 keeps its diagnosis column


def test_isic2018_one_hot_and_bad_rows(tmp_path: Path) -> None:
    header = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    write_csv(
        tmp_path / "ISIC2018_Task3_Validation_GroundTruth.csv",
        [
            header,
            ["ISIC_1", "1.0", *["0.0"] * 6],
            ["ISIC_2", "0.0", "0.0", "1.0", *["0.0"] * 4],
            ["ISIC_3", "1.0", "1.0", *["0.0"] * 5],
            ["ISIC_4", "0.0", *["0.0"] * 6],
        ],
    )
    problems = Problems("t")
    src = read_source(tmp_path, problems)
    assert src.layout == "isic2018"
    assert [(e.image_id, e.label, e.diagnosis, e.split) for e in src.entries] == [
        ("ISIC_1", 1, "MEL", "val"),
        ("ISIC_2", 0, "BCC", "val"),
    ]
    with pytest.raises(DataError, match=r"bad label \(2\): ISIC_3 .*ISIC_4"):
        problems.raise_if_any()


# ── ISIC 2017 Part 2: superpixels + features JSON → dermo map ─────────────────────────────────


def superpixel_png(index: np.ndarray, path: Path) -> None:
    """Encode a superpixel index map as ISIC 2017 does: R + (G << 8) + (B << 16)."""
    rgb = np.stack([index & 0xFF, (index >> 8) & 0xFF, (index >> 16) & 0xFF], -1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)


def part2_case(
    rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, dict, set[int]]:
    """A superpixel map using indices that need all three channels, its JSON and the marked set."""
    used = np.array([0, 5, 7, 256, 300, 65537, 65600])
    index = used[rng.integers(0, len(used), size=shape)]
    n = int(used.max()) + 1
    features = {
        k: [0] * n for k in ("pigment_network", "negative_network", "streaks", "milia_like_cyst")
    }
    features["pigment_network"][5] = 1
    features["streaks"][256] = 1
    features["milia_like_cyst"][65537] = 1
    features["negative_network"][5] = 1  # overlaps: the union counts it once
    return index, features, {5, 256, 65537}


def test_dermo_map_is_the_union_of_the_four_features(tmp_path: Path) -> None:
    index, features, marked = part2_case(np.random.default_rng(0), (30, 40))
    superpixel_png(index, tmp_path / "ISIC_0000001_superpixels.png")
    (tmp_path / "f.json").write_text(json.dumps(features))
    got = np.asarray(dermo_map(tmp_path / "ISIC_0000001_superpixels.png", tmp_path / "f.json"))
    assert np.array_equal(got, np.where(np.isin(index, list(marked)), 255, 0))
    features["streaks"] = features["streaks"][:100]  # lists of unequal length
    (tmp_path / "f.json").write_text(json.dumps(features))
    with pytest.raises(Exception, match="equal length"):
        dermo_map(tmp_path / "ISIC_0000001_superpixels.png", tmp_path / "f.json")


def test_part2_prepared_with_aligned_dermo_maps(tmp_path: Path) -> None:
    """Three images: features marked, no feature at all (a valid all-zero map), no JSON (none)."""
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    data, part2 = src / "ISIC-2017_Training_Data", src / "ISIC-2017_Training_Part2_GroundTruth"
    data.mkdir(parents=True)
    part2.mkdir()
    shape = (48, 64)  # H, W
    expected = {}
    for i, image_id in enumerate(["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]):
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(
            data / f"{image_id}.png"
        )
        index, features, marked = part2_case(rng, shape)
        superpixel_png(index, data / f"{image_id}_superpixels.png")
        if i == 1:
            features = {k: [0] * len(v) for k, v in features.items()}
            marked = set()
        if i < 2:
            (part2 / f"{image_id}_features.json").write_text(json.dumps(features))
            full = Image.fromarray(np.where(np.isin(index, list(marked)), 255, 0).astype(np.uint8))
            crop = full.resize((256, 256), Image.NEAREST, box=paper_crop_box(shape[1], shape[0]))
            expected[image_id] = np.asarray(crop)
    write_csv(
        src / "ISIC-2017_Training_Part3_GroundTruth.csv",
        [
            ["image_id", "melanoma", "seborrheic_keratosis"],
            ["ISIC_0000001", "1.0", "0.0"],
            ["ISIC_0000002", "0.0", "1.0"],
            ["ISIC_0000003", "0.0", "0.0"],
        ],
    )
    result = prepare_dataset(src, tmp_path / "out", val_fraction=0, workers=2)
    assert result.counts["train"].dermo_maps == 2
    rows = {r.image_id: r for r in read_manifest(tmp_path / "out")}
    assert [rows[i].diagnosis for i in sorted(rows)] == [
        "melanoma",
        "seborrheic_keratosis",
        "nevus",
    ]
    assert rows["ISIC_0000003"].dermo_mask is None
    for image_id, want in expected.items():
        assert np.array_equal(pixels(tmp_path / "out" / rows[image_id].dermo_mask), want)
    assert pixels(tmp_path / "out" / rows["ISIC_0000002"].dermo_mask).max() == 0
    assert pixels(tmp_path / "out" / rows["ISIC_0000001"].dermo_mask).max() == 255


def test_exif_rotated_photo_keeps_its_mask_aligned(tmp_path: Path) -> None:
    """A JPEG with EXIF orientation 6 and a mask on its stored pixel grid: the bright square the
    mask marks must still lie under the prepared mask."""
    src = tmp_path / "src" / "melanoma"
    src.mkdir(parents=True)
    (tmp_path / "src" / "nevus").mkdir()
    raw = np.full((80, 120, 3), 30, np.uint8)
    raw[10:40, 70:100] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(src / "a.jpg", exif=exif, quality=95)
    Image.fromarray(np.where(raw[..., 0] > 128, 255, 0).astype(np.uint8)).save(
        src / "a_segmentation.png"
    )
    Image.fromarray(raw).save(tmp_path / "src" / "nevus" / "b.jpg")
    prepare_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0, workers=1)
    row = next(r for r in read_manifest(tmp_path / "out") if r.image_id == "a")
    image, mask = (
        pixels(tmp_path / "out" / row.image).mean(-1),
        pixels(tmp_path / "out" / row.lesion_mask),
    )
    assert 0 < (mask > 0).mean() < 0.5
    assert ((image > 128) == (mask > 0)).mean() > 0.97


# ── every check fires on a broken copy, before anything is written ────────────────────────────


def _fails(src: Path, out: Path, *patterns: str) -> str:
    with pytest.raises(DataError) as info:
        prepare_dataset(src, out, workers=2)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, message
    assert not out.exists(), "nothing may be written when a check fails"
    return message


def test_missing_image(small: Path, tmp_path: Path) -> None:
    victim = sorted((small / "ISIC-2017_Training_Data").iterdir())[0]
    victim.unlink()
    _fails(small, tmp_path / "out", "label without image (1)", victim.stem)


def test_extra_image(small: Path, tmp_path: Path) -> None:
    victim = sorted((small / "ISIC-2017_Validation_Data").iterdir())[0]
    shutil.copy(victim, victim.with_name("ISIC_9999999.jpg"))
    _fails(small, tmp_path / "out", "image without label (1)", "ISIC_9999999.jpg")


def test_unlabelled_folder_is_ignored_not_an_error(small: Path, tmp_path: Path) -> None:
    (small / "ISIC-2017_Test_v2_Data").mkdir()
    shutil.copy(
        next((small / "ISIC-2017_Validation_Data").iterdir()),
        small / "ISIC-2017_Test_v2_Data/ISIC_9999999.jpg",
    )
    result = prepare_dataset(small, tmp_path / "out", workers=2)
    assert result.ignored == {"ISIC-2017_Test_v2_Data": 1}


def test_duplicate_ids(small: Path, tmp_path: Path) -> None:
    labels = small / "ISIC-2017_Training_Part3_GroundTruth.csv"
    rows = csv_rows(labels)
    write_csv(labels, [*rows, rows[1]])
    image = small / f"ISIC-2017_Training_Data/{rows[2][0]}.jpg"
    Image.open(image).save(small / f"ISIC-2017_Validation_Data/{rows[2][0]}.png")
    _fails(
        small,
        tmp_path / "out",
        "duplicate id in labels (1)",
        rows[1][0],
        "duplicate image id (1)",
        rows[2][0],
    )


def test_bad_labels(small: Path, tmp_path: Path) -> None:
    labels = small / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    rows = csv_rows(labels)
    rows[1][1] = "maybe"
    rows[2][1:3] = ["1.0", "1.0"]  # melanoma and seborrheic keratosis at once
    write_csv(labels, rows)
    _fails(small, tmp_path / "out", "bad label (2)", rows[1][0], rows[2][0])


def test_mask_of_wrong_size(small: Path, tmp_path: Path) -> None:
    mask = sorted((small / "ISIC-2017_Training_Part1_GroundTruth").iterdir())[0]
    Image.open(mask).resize((100, 80)).save(mask)
    _fails(
        small,
        tmp_path / "out",
        "lesion mask size differs from image (1)",
        mask.name.split("_seg")[0],
        "100×80 vs 256×256",
    )


def test_all_problems_reported_together_with_counts(small: Path, tmp_path: Path) -> None:
    data = small / "ISIC-2017_Training_Data"
    for image in sorted(data.iterdir()):
        image.unlink()  # 6 labels without images
    spare = next((small / "ISIC-2017_Validation_Data").iterdir())
    for i in range(12):  # in a folder that also holds labelled images
        shutil.copy(spare, spare.with_name(f"ISIC_99990{i:02d}.jpg"))
    _fails(
        small, tmp_path / "out", "label without image (6)", "image without label (12)", "(2 more)"
    )


def test_unreadable_image(small: Path, tmp_path: Path) -> None:
    (small / "ISIC-2017_Validation_Data" / "ISIC_0001769.jpg").write_bytes(b"not a jpeg")
    _fails(small, tmp_path / "out", "unreadable image (1)", "ISIC_0001769")


def test_image_failing_to_decode_aborts_before_the_manifest(small: Path, tmp_path: Path) -> None:
    victim = sorted((small / "ISIC-2017_Training_Data").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:3000])  # header intact, data truncated
    with pytest.raises(DataError, match=rf"cannot decode \(1\).*{victim.name}"):
        prepare_dataset(small, tmp_path / "out", workers=2)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
    assert len(list((tmp_path / "out" / "images").iterdir())) == 8  # the others are kept


# ── re-runs and the output dir ─────────────────────────────────────────────────────────────────


def test_rerun_skips_unchanged_and_redoes_changed(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare_dataset(small, out, workers=2)
    assert (first.written, first.skipped) == (9, 0)
    manifest = (out / MANIFEST_NAME).read_bytes()
    victim = sorted((small / "ISIC-2017_Training_Data").iterdir())[0]
    Image.open(victim).rotate(90).save(victim, quality=90)
    second = prepare_dataset(small, out, workers=2)
    assert (second.written, second.skipped) == (1, 8)
    changed = [
        line
        for line in (out / MANIFEST_NAME).read_bytes().splitlines()
        if line not in manifest.splitlines()
    ]
    assert len(changed) == 1 and victim.stem.encode() in changed[0]


def test_crop_fraction_is_applied_recorded_and_redoes_every_file(
    small: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "whole"
    first = prepare_dataset(small, out, workers=2, crop_fraction=1.0)
    meta = json.loads((out / META_NAME).read_text())
    assert meta["crop_fraction"] == 1.0 and "crop=1.0" in meta["recipe"]
    assert prepared_crop_fraction(out) == 1.0
    for row in read_manifest(out):
        photo = load_photo(small / row.source)
        whole = np.asarray(paper_crop(photo, crop_fraction=1.0))
        assert np.array_equal(pixels(out / row.image), whole)
        assert not np.array_equal(whole, np.asarray(paper_crop(photo)))
        folder = (small / row.source).parent.name.replace("_Data", "_Part1_GroundTruth")
        mask = small / folder / f"{row.image_id}_segmentation.png"
        assert np.array_equal(pixels(out / row.lesion_mask),
                              expected_mask(mask, photo.size, 1.0))
    again = prepare_dataset(small, out, workers=2)  # back to the paper's crop: all redone
    assert (first.written, again.written, again.skipped) == (9, 9, 0)
    assert prepared_crop_fraction(out) == 0.8
    with pytest.raises(DataError, match="--crop-fraction must be in"):
        prepare_dataset(small, tmp_path / "none", crop_fraction=0.0)
    result = CliRunner().invoke(app, ["prepare", str(small), "--out", str(tmp_path / "x"),
                                      "--crop-fraction", "1.5"])
    assert result.exit_code == 2 and "crop-fraction" in result.output


def test_out_dir_of_another_dataset_is_refused_without_force(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(small, out, workers=2)
    other = copy_2017(tmp_path / "other", {"Validation": (1, 1)})
    with pytest.raises(DataError, match="--force"):
        prepare_dataset(other, out, workers=2)
    result = prepare_dataset(other, out, workers=2, force=True)
    assert sum(c.images for c in result.counts.values()) == 2
    assert len(read_manifest(out)) == 2
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not an attnmel prepared dir"):
        prepare_dataset(small, stranger, workers=2)


def test_out_inside_source_is_not_indexed(small: Path) -> None:
    prepare_dataset(small, small / "prepared", workers=2)
    again = prepare_dataset(small, small / "prepared", workers=2)
    assert again.skipped == 9


# ── generic layouts ───────────────────────────────────────────────────────────────────────────


def _some_images(n: int) -> list[Path]:
    return sorted(need(ISIC2017).glob("ISIC-2017_Validation_Data/*.jpg"))[:n]


def test_class_folders_with_carved_val(tmp_path: Path) -> None:
    images = _some_images(15)
    for i, image in enumerate(images):
        folder = tmp_path / "src" / ("Melanoma" if i < 5 else "benign")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"lesion{i}.jpg")
    result = prepare_dataset(tmp_path / "src", tmp_path / "out", workers=2)
    assert result.layout == "folder" and result.carved_val
    assert {k: (v.images, v.melanoma) for k, v in result.counts.items()} == {
        "train": (12, 4),
        "val": (3, 1),
    }
    rows = read_manifest(tmp_path / "out")
    assert {r.diagnosis for r in rows} == {"Melanoma", "benign"}


def test_class_folders_inside_split_folders(tmp_path: Path) -> None:
    for i, image in enumerate(_some_images(6)):
        folder = (
            tmp_path / "src" / ("train" if i < 4 else "test") / ("melanoma" if i % 2 else "nevus")
        )
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder)
    result = prepare_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0, workers=2)
    assert {k: (v.images, v.melanoma) for k, v in result.counts.items()} == {
        "train": (4, 2),
        "test": (2, 1),
    }


def test_class_folders_need_a_melanoma_folder(tmp_path: Path) -> None:
    for i, image in enumerate(_some_images(2)):
        (tmp_path / "src" / f"class{i}").mkdir(parents=True)
        shutil.copy(image, tmp_path / "src" / f"class{i}")
    with pytest.raises(DataError, match="no melanoma class folder"):
        prepare_dataset(tmp_path / "src", tmp_path / "out")


def test_generic_csv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "photos").mkdir(parents=True)
    rows = [["image", "label", "split"]]
    for i, image in enumerate(_some_images(6)):
        shutil.copy(image, src / "photos" / f"p{i}.jpg")
        rows.append([f"photos/p{i}.jpg", str(i % 2), "validation" if i >= 4 else "train"])
    write_csv(src / "labels.csv", rows)
    result = prepare_dataset(src, tmp_path / "out", workers=2)
    assert result.layout == "csv" and not result.carved_val
    assert {k: (v.images, v.melanoma) for k, v in result.counts.items()} == {
        "train": (4, 2),
        "val": (2, 1),
    }
    rows[1][2], rows[2][1] = "holdout", "yes"
    write_csv(src / "labels.csv", rows)
    with pytest.raises(DataError) as info:
        prepare_dataset(src, tmp_path / "out2")
    assert "bad label (1): p1 " in str(info.value) and "bad split (1): p0 " in str(info.value)


def test_layout_detection_and_dataset_flag(small: Path, tmp_path: Path) -> None:
    shutil.copy(need(LABELS) / "ISIC_2019_Training_GroundTruth.csv", small)
    with pytest.raises(DataError, match=r"several layouts.*--dataset"):
        prepare_dataset(small, tmp_path / "out")
    assert (
        prepare_dataset(small, tmp_path / "out", dataset="isic2017", workers=2).layout == "isic2017"
    )
    with pytest.raises(DataError, match="no isic2018 label file"):
        prepare_dataset(small, tmp_path / "out", dataset="isic2018")


# ── the manifest contract ─────────────────────────────────────────────────────────────────────


def test_manifest_round_trip_and_checks(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for i in range(3):
        (tmp_path / "images" / f"{i}.png").write_bytes(b"x")
    rows = [
        Row(str(i), "train", i % 2, "d", f"images/{i}.png", None, None, f"s/{i}.jpg", "ab")
        for i in range(3)
    ]
    write_manifest(tmp_path, rows)
    assert read_manifest(tmp_path) == rows and read_manifest(tmp_path, "val") == []
    text = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    text[1] = text[1].replace(",train,0,", ",training,2,")
    text[2] = text[2].replace("images/1.png", "images/gone.png")
    text.append(text[3])  # duplicate id 2
    (tmp_path / MANIFEST_NAME).write_text("\n".join(text) + "\n")
    with pytest.raises(DataError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    for part in (
        "manifest.csv",
        "line 2 0 'training'",
        "line 2 0 '2'",
        "line 3 1 images/gone.png",
        "line 5 2 (first on line 4)",
    ):
        assert part in message, message
    (tmp_path / MANIFEST_NAME).write_text("image_id,split,label\n")
    with pytest.raises(DataError, match="missing columns diagnosis, image"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="not a complete prepared dir"):
        read_manifest(tmp_path / "images")


# ── the command ───────────────────────────────────────────────────────────────────────────────


def test_cli_prepare_exit_codes(small: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["prepare", str(small), "--out", str(tmp_path / "out"), "-j", "2"])
    assert ok.exit_code == 0, ok.output
    assert "melanoma" in ok.output and len(read_manifest(tmp_path / "out")) == 9
    sorted((small / "ISIC-2017_Training_Data").iterdir())[0].unlink()
    bad = runner.invoke(app, ["prepare", str(small), "--out", str(tmp_path / "out2")])
    assert bad.exit_code == 1 and "label without image" in bad.output
    usage = runner.invoke(
        app, ["prepare", str(small), "--out", str(tmp_path / "o3"), "--val-fraction", "1"]
    )
    assert usage.exit_code == 1 and "val-fraction" in usage.output
