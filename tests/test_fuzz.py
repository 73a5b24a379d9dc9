"""Property-based tests (hypothesis): arbitrary bytes into the CSV and manifest parsers, the
image loader and the checkpoint reader. Whatever comes in, the only exceptions that come out
are attnmel's own (AttnMelError and its kinds), which the CLI prints as one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.checks import Job, inspect_job
from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.manifest import MANIFEST_COLUMNS, MANIFEST_NAME, Problems, read_manifest
from attnmel_cli.data.masks import load_mask
from attnmel_cli.data.sources import read_source
from attnmel_cli.data.sources.files import read_csv
from attnmel_cli.errors import AttnMelError, DataError, InputError
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.model_checkpoint import load_checkpoint, save_checkpoint
from attnmel_cli.models.registry import build_model

# 150 fixed examples per test in the suite (repeatable, ~15 s); ATTNMEL_FUZZ_EXAMPLES=5000 explores
# new random ones for as long as one cares to wait.
_LONG = int(os.environ.get("ATTNMEL_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG or 150, deadline=None, derandomize=not _LONG, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_PIXELS = 2_000_000  # keep decoding cheap: mutated headers may declare large images


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ── strategies ────────────────────────────────────────────────────────────────────────────────

CELLS = st.sampled_from([
    "", "0", "1", "0.0", "1.0", "2", "-1", "nan", "inf", "1e309", "yes", "benign", "malignant",
    "train", "val", "validation", "test", "holdout", "ISIC_0000000", "a.jpg", "../x.jpg",
    "/etc/passwd", "images/a.png", " ", '"', "\x00", "é", "\ufeff", "a,b", "line\nbreak",
])
HEADERS = st.sampled_from([
    ["image", "label"], ["image", "label", "split"], ["image", "label", "split", "diagnosis"],
    ["image_id", "melanoma", "seborrheic_keratosis"], ["image_name", "target"],
    ["image_name", "diagnosis", "benign_malignant", "target"],
    ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"],
    ["ISIC_0000000", "benign"], list(MANIFEST_COLUMNS), ["file", "diagnosis"], [],
])


@st.composite
def csv_text(draw: st.DrawFn) -> bytes:
    """A CSV that is nearly right (a known header, plausible cells) or plain garbage."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    header = draw(HEADERS)
    rows = draw(st.lists(st.lists(CELLS, max_size=len(header) + 2), max_size=8))
    quote = draw(st.sampled_from(['"', "", "'"]))
    lines = [",".join(header)] + [",".join(quote + c + quote for c in row) for row in rows]
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def _image_bytes(fmt: str, mode: str, size: tuple[int, int], **kw: object) -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, size, 128 if mode in ("L", "P") else (200, 40, 30)[: len(mode)])
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


SEEDS = [
    _image_bytes("PNG", "RGB", (24, 20)),
    _image_bytes("PNG", "RGBA", (20, 20)),
    _image_bytes("PNG", "P", (20, 20)),
    _image_bytes("JPEG", "RGB", (32, 24), quality=80),
    _image_bytes("JPEG", "CMYK", (24, 24)),
    _image_bytes("GIF", "P", (20, 20)),
    _image_bytes("TIFF", "RGB", (20, 20)),
    _image_bytes("BMP", "RGB", (20, 20)),
    _image_bytes("WEBP", "RGB", (20, 20)),
    b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    + _png_chunk(b"IEND", b""),
]


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """A small valid image of some format with bytes overwritten, cut or appended; or noise."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[: cut if draw(st.booleans()) else len(data)]) + draw(st.binary(max_size=20))


# ── the parsers ───────────────────────────────────────────────────────────────────────────────


@FUZZ
@given(content=csv_text())
def test_manifest_reader_raises_only_data_errors(folder: Path, content: bytes) -> None:
    (folder / "images").mkdir(exist_ok=True)
    (folder / "images" / "a.png").write_bytes(b"x")
    (folder / MANIFEST_NAME).write_bytes(content)
    try:
        rows = read_manifest(folder)
    except DataError as exc:
        assert str(folder / MANIFEST_NAME) in str(exc) or "split" in str(exc)
    else:
        assert all(r.label in (0, 1) and r.split in ("train", "val", "test") for r in rows)


@FUZZ
@given(content=csv_text(), name=st.sampled_from(["labels.csv", "ISIC-2017_Training_Part3.csv"]))
def test_label_file_readers_raise_only_data_errors(
    folder: Path, content: bytes, name: str
) -> None:
    source = folder / "source"
    source.mkdir(exist_ok=True)
    for old in source.glob("*.csv"):
        old.unlink()
    (source / "a.jpg").write_bytes(b"x")
    (source / name).write_bytes(content)
    try:
        read_csv(source / name)
        src = read_source(source, Problems(str(source)))
    except DataError:
        return
    assert all(e.label in (0, 1) for e in src.entries)


# ── the image loader and the other decoders of user files ─────────────────────────────────────


@FUZZ
@given(data=image_bytes(), suffix=st.sampled_from([".jpg", ".png", ".gif", ".tif"]))
def test_load_photo_gives_rgb_or_an_input_error(folder: Path, data: bytes, suffix: str) -> None:
    path = folder / f"photo{suffix}"
    path.write_bytes(data)
    try:
        img = load_photo(path, max_pixels=MAX_PIXELS, draft_min_side=8)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert img.mode == "RGB" and min(img.size) >= 16


@FUZZ
@given(data=image_bytes())
def test_mask_and_header_checks_raise_only_input_errors(folder: Path, data: bytes) -> None:
    mask = folder / "mask.png"
    mask.write_bytes(data)
    photo = folder / "photo.jpg"
    photo.write_bytes(data[::-1] if len(data) % 2 else data)
    with contextlib.suppress(InputError):
        load_mask(mask, PreprocessConfig(64), prepared=False, photo=photo,
                  max_pixels=MAX_PIXELS)
    job = Job("x", "train", 0, "nevus", photo, mask, None, None)
    _, found = inspect_job(job, folder, MAX_PIXELS)  # problems are returned, never raised
    assert all(isinstance(kind, str) for kind, _ in found)


# ── checkpoints: the safetensors header and its attnmel metadata ──────────────────────────────


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    meta = CheckpointMeta(arch="vgg16", width=0.0625, image_size=32)
    save_checkpoint(path, build_model("vgg16", "vgg16_bn", 0.0625), meta)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_checkpoint_loader_raises_only_attnmel_errors(
    folder: Path, checkpoint_bytes: bytes, data: st.DataObject
) -> None:
    (size,) = struct.unpack("<Q", checkpoint_bytes[:8])
    header = bytearray(checkpoint_bytes[8 : 8 + size])
    for _ in range(data.draw(st.integers(1, 4))):  # mostly the JSON header: the metadata
        pos = data.draw(st.integers(0, len(header) - 1))
        header[pos] = data.draw(st.sampled_from(b'0123456789.,:{}[]"e-aZ \\'))
    cut = data.draw(st.sampled_from([None, 0, 7, 8, 100, len(checkpoint_bytes) - 1]))
    blob = checkpoint_bytes[:8] + bytes(header) + checkpoint_bytes[8 + size :]
    path = folder / "fuzzed.safetensors"
    path.write_bytes(blob[:cut])
    try:
        load_checkpoint(path)
    except AttnMelError as exc:
        assert str(path) in str(exc)
