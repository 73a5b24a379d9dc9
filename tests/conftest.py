"""Shared pytest fixtures (keep additive: several test files rely on these).

``tests`` is not a package, so what the test files share is handed to them as fixtures: the tiny
checkpoints (binary, and of the three ISIC 2017 classes), ``invoke`` (the CLI in-process),
``restore_logging``, ``make_photo`` and ``labelled`` (synthetic photos), ``isic2017_subset`` (a
prepared ISIC 2017 subset), ``ham_subset`` and ``ham_metadata`` (real HAM10000 images), and
``run_metrics`` and ``assert_same_run`` (a training run's results).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from attnmel_cli.cli import app
from attnmel_cli.config import TrainConfig
from attnmel_cli.data.classes import ISIC2017_CLASSES
from attnmel_cli.data.prepare import prepare_dataset
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors
from attnmel_cli.io.model_checkpoint import save_checkpoint
from attnmel_cli.io.run_dir import BEST, LAST, METRICS
from attnmel_cli.models.names import CLASSES
from attnmel_cli.models.registry import build_model

# Tiny models gain nothing from intra-op threads, and on a small shared machine OpenMP spinning
# makes a 4 ms forward pass take 0.5 s; OMP_NUM_THREADS still overrides this.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

TINY_WIDTH = 0.0625
TINY_SIZE = 64
ISIC2017 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic2017-256"


def _tiny(folder: Path, arch: str, seed: int, classes: tuple[str, ...] = CLASSES) -> Path:
    torch.manual_seed(seed)
    model = build_model(arch, "vgg16_bn", TINY_WIDTH, classes=classes)
    meta = CheckpointMeta(arch=arch, backbone="vgg16_bn", width=TINY_WIDTH, image_size=TINY_SIZE,
                          classes=classes)
    return save_checkpoint(folder / f"tiny-{arch}.safetensors", model, meta)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``attnmel`` checkpoint (vgg16_bn, width 1/16, 64 px input)."""
    return _tiny(tmp_path_factory.mktemp("ckpt"), "attnmel", 0)


@pytest.fixture(scope="session")
def tiny_gap_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``vgg16-gap`` checkpoint (its maps are a CAM), same size as above."""
    return _tiny(tmp_path_factory.mktemp("ckpt"), "vgg16-gap", 1)


@pytest.fixture(scope="session")
def tiny_isic2017_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``attnmel`` checkpoint of the three ISIC 2017 Part 3 classes (melanoma,
    seborrheic_keratosis, nevus), same size as above."""
    return _tiny(tmp_path_factory.mktemp("ckpt"), "attnmel", 7, ISIC2017_CLASSES)


# ── the command line in-process ───────────────────────────────────────────────────────────────


def _invoke(*args: str | Path, stdin: str | None = None, env: dict[str, str] | None = None,
            ) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin, env=env)


@pytest.fixture(scope="session")
def invoke() -> Callable[..., Result]:
    """``invoke(*args, stdin=None, env=None)``: ``attnmel ARGS`` through typer's CliRunner."""
    return _invoke


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI points the root logger at CliRunner's (then closed) stderr: undo that.

    Modules that run the CLI in-process use it for every test:
    ``pytestmark = pytest.mark.usefixtures("restore_logging")``.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# ── synthetic photos ──────────────────────────────────────────────────────────────────────────


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 230, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize((80, 72), Image.BILINEAR).save(path, quality=92)
    return path


@pytest.fixture(scope="session")
def make_photo() -> Callable[[Path, int], Path]:
    """``make_photo(path, seed)``: write a smooth random 80×72 colour photo there; return path."""
    return _photo


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic photos (three melanoma) and labels.csv (image,label): a generic layout."""
    root = tmp_path_factory.mktemp("labelled")
    rows = ["image,label"]
    for i in range(6):
        _photo(root / f"p{i}.jpg", i)
        rows.append(f"p{i}.jpg,{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


# ── a real ISIC 2017 subset, prepared ─────────────────────────────────────────────────────────


def _copy_split(split: str, out: Path, melanoma: int, other: int, masks: bool) -> None:
    """The first ``melanoma`` and ``other`` images of an ISIC 2017 split (with their lesion
    masks when ``masks``) and the matching rows of its labels file, in the official layout."""
    src_csv = ISIC2017 / f"ISIC-2017_{split}_Part3_GroundTruth.csv"
    with src_csv.open(newline="") as fh:
        rows = list(csv.reader(fh))
    chosen = ([r for r in rows[1:] if r[1] == "1.0"][:melanoma]
              + [r for r in rows[1:] if r[1] != "1.0"][:other])
    data = f"ISIC-2017_{split}_Data"
    names = [f"{data}/{image_id}.jpg" for image_id, *_ in chosen]
    if masks:
        truth = f"ISIC-2017_{split}_Part1_GroundTruth"
        names += [f"{truth}/{image_id}_segmentation.png" for image_id, *_ in chosen]
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ISIC2017 / name, out / name)
    with (out / src_csv.name).open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *chosen])


@pytest.fixture(scope="session")
def isic2017_subset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``isic2017_subset({split: (melanoma, other)}, masks=True)``: that many images of each
    ISIC 2017 split (``"Training"``, ``"Validation"``) through ``prepare``; returns the prepared
    folder. Skips the test when the real data is not on this machine."""

    def make(subset: dict[str, tuple[int, int]], *, masks: bool = True) -> Path:
        if not ISIC2017.is_dir():
            pytest.skip(f"real ISIC 2017 data not found at {ISIC2017}; see shared/data/README.md")
        root = tmp_path_factory.mktemp("isic2017-subset")
        for split, (melanoma, other) in subset.items():
            _copy_split(split, root / "source", melanoma, other, masks)
        prepare_dataset(root / "source", root / "prepared", workers=2)
        return root / "prepared"

    return make


# ── a real HAM10000 subset, in the Dataverse download layout ──────────────────────────────────

HAM10000 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000-200x150"
METADATA = "HAM10000_metadata.csv"


def _ham_metadata() -> list[dict[str, str]]:
    if not (HAM10000 / METADATA).is_file():
        pytest.skip(f"HAM10000 not found at {HAM10000} (see ../shared/data/README.md)")
    with (HAM10000 / METADATA).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _ham_subset(dst: Path, lesions: int = 24, with_ground_truth: bool = True) -> Path:
    """A HAM10000 download in the Dataverse layout (two image folders, the metadata, the masks
    folder; the ISIC 2018 Task 3 ground truth when asked) holding every photograph of the first
    ``lesions`` multi-photo lesions (half of them melanomas) and as many single-photo lesions."""
    by_lesion: dict[str, list[dict[str, str]]] = defaultdict(list)
    for rec in _ham_metadata():
        by_lesion[rec["lesion_id"]].append(rec)
    multi = [v for v in by_lesion.values() if len(v) > 1]
    mel = [v for v in multi if v[0]["dx"] == "mel"][: lesions // 2]
    other = [v for v in multi if v[0]["dx"] != "mel"][: lesions // 2]
    single = [v for v in by_lesion.values() if len(v) == 1][:lesions]
    chosen = [rec for group in mel + other + single for rec in group]
    for i, rec in enumerate(chosen):
        folder = dst / f"HAM10000_images_part_{1 + i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(HAM10000 / "HAM10000_images" / f"{rec['image_id']}.jpg", folder)
        masks = dst / "HAM10000_segmentations_lesion_tschandl"
        masks.mkdir(exist_ok=True)
        shutil.copy(HAM10000 / masks.name / f"{rec['image_id']}_segmentation.png", masks)
    with (dst / METADATA).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    if with_ground_truth:
        classes = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
        with (dst / "ISIC2018_Task3_Training_GroundTruth.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", *classes])
            for rec in chosen:
                writer.writerow([rec["image_id"],
                                 *(f"{float(c.lower() == rec['dx']):.1f}" for c in classes)])
    return dst


@pytest.fixture(scope="session")
def ham_metadata() -> Callable[[], list[dict[str, str]]]:
    """``ham_metadata()``: the rows of the real HAM10000_metadata.csv (skips where absent)."""
    return _ham_metadata


@pytest.fixture(scope="session")
def ham_subset() -> Callable[..., Path]:
    """``ham_subset(dst, lesions=24, with_ground_truth=True)``: a small real HAM10000 download
    (see :func:`_ham_subset`); skips where the data is absent."""
    return _ham_subset


# ── training runs ─────────────────────────────────────────────────────────────────────────────

TRAIN_SUBSET = {"Training": (12, 20), "Validation": (6, 10)}  # (melanoma, other) per split


@pytest.fixture(scope="session")
def prepared(isic2017_subset) -> Path:
    """32 training and 16 validation images of ISIC 2017, with lesion masks, via `prepare`."""
    return isic2017_subset(TRAIN_SUBSET)


def _tiny_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = {
        "data": data, "out": out, "pretrained": False, "width": TINY_WIDTH,
        "image_size": TINY_SIZE, "epochs": 1, "batch_size": 16, "seed": 3, "deterministic": True,
        "device": "cpu", "workers": 0,
    }
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., TrainConfig]:
    """``tiny_config(data, out, **overrides)``: a tiny deterministic CPU run (VGG-16-BN at width
    1/16, 64-px inputs, 1 epoch, batch 16, no workers)."""
    return _tiny_config


def _run_metrics(run: Path) -> list[dict[str, str]]:
    with (run / METRICS).open(newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _assert_same_run(a: Path, b: Path) -> None:
    assert _run_metrics(a) == _run_metrics(b)
    for name in (LAST, BEST):
        ta, _ = read_tensors(a / name)
        tb, _ = read_tensors(b / name)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name


@pytest.fixture(scope="session")
def run_metrics() -> Callable[[Path], list[dict[str, str]]]:
    """``run_metrics(run)``: the rows of a run dir's metrics.csv, without the ``seconds`` column."""
    return _run_metrics


@pytest.fixture(scope="session")
def assert_same_run() -> Callable[[Path, Path], None]:
    """``assert_same_run(a, b)``: the two run dirs hold identical final weights (last and best)
    and the same metrics.csv except ``seconds``."""
    return _assert_same_run


@pytest.fixture
def interrupt_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``interrupt_at(n)``: Ctrl-C (KeyboardInterrupt) in the training step that computes the
    loss for the ``n``-th time; ``monkeypatch.undo()`` ends it."""
    from attnmel_cli.engine import epoch as epoch_module

    def arm(n: int) -> None:
        calls, real_loss = {"n": 0}, epoch_module.attnmel_loss

        def interrupted(*args: object, **kwargs: object) -> object:
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real_loss(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(epoch_module, "attnmel_loss", interrupted)

    return arm

