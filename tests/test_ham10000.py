"""HAM10000 ingestion on real images: lesion ids and metadata in the manifest, carved splits and
folds grouped by lesion, the metadata file alone as a label file, and the resolution note."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from attnmel_cli.data.folds import fold_of
from attnmel_cli.data.manifest import read_manifest
from attnmel_cli.data.prepare import prepare_dataset
from attnmel_cli.errors import DataError


def _sides(rows: list, key: dict[str, int] | None = None) -> dict[str, set]:
    """lesion_id → the splits (or folds) its photographs are in."""
    where: dict[str, set] = defaultdict(set)
    for row in rows:
        where[row.lesion_id].add(key[row.image_id] if key else row.split)
    return where


@pytest.mark.parametrize("with_ground_truth", [True, False])
def test_prepare_keeps_lesions_on_one_side(
    tmp_path: Path, with_ground_truth: bool, ham_subset, ham_metadata,
) -> None:
    src = ham_subset(tmp_path / "ham", with_ground_truth=with_ground_truth)
    result = prepare_dataset(src, tmp_path / "out", val_fraction=0.3, workers=1)
    rows = read_manifest(tmp_path / "out")
    assert result.layout == ("isic2018" if with_ground_truth else "ham10000")
    assert result.carved_val and {r.split for r in rows} == {"train", "val"}
    assert all(r.lesion_id and r.lesion_id.startswith("HAM_") for r in rows)
    assert result.lesions == len({r.lesion_id for r in rows}) == 48
    assert all(len(splits) == 1 for splits in _sides(rows).values())
    # several photographs of one lesion exist, so the grouping was put to the test
    assert max(sum(r.lesion_id == lid for r in rows) for lid in _sides(rows)) > 1
    by_id = {rec["image_id"]: rec for rec in ham_metadata()}
    for row in rows:
        rec = by_id[row.image_id]
        assert row.attributes == {k: rec[k] for k in ("lesion_id", "dx", "dx_type", "age", "sex",
                                                      "localization") if rec[k]}
        assert row.label == (rec["dx"] == "mel")
        assert row.lesion_mask is not None
    folds = fold_of(rows, 3)
    assert set(folds.values()) == {0, 1, 2}
    assert all(len(f) == 1 for f in _sides(rows, folds).values())


def test_resolution_note_and_ground_truth_checked(tmp_path: Path, ham_subset) -> None:
    src = ham_subset(tmp_path / "ham", lesions=4)
    result = prepare_dataset(src, tmp_path / "out", val_fraction=0, workers=1)
    assert result.resolution is not None
    assert (result.resolution.median, result.resolution.upsampled) == (120, result.counts[
        "train"].images)
    assert "120 px" in (result.resolution.note(0.8) or "")
    # a ground-truth class that contradicts the metadata's dx is reported, nothing written
    gt = src / "ISIC2018_Task3_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    cells = lines[1].split(",")
    hot = cells[1:].index("1.0")
    cells[1 + hot], cells[1 + (hot + 1) % 7] = "0.0", "1.0"
    gt.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"disagrees with HAM10000_metadata\.csv"):
        prepare_dataset(src, tmp_path / "out2", workers=1)


def test_cli_prepare_reports_lesions(tmp_path: Path, invoke, ham_subset) -> None:
    src = ham_subset(tmp_path / "ham", lesions=4)
    result = invoke("prepare", src, "--out", tmp_path / "out", "-j", "1")
    assert result.exit_code == 0, result.output
    assert "lesions: every carved split and fold keeps" in result.output
    assert "upsampled to 256" in result.output
