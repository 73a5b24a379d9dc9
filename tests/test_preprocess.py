"""Decoding and the paper's preprocessing (§3.1): crop boxes, every image mode, bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnmel_cli.config import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig, resize_size
from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.tensors import normalize, photo_to_input, to_uint8_tensor
from attnmel_cli.data.transforms import network_box, paper_crop_box
from attnmel_cli.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FULLRES = SHARED_DATA / "isic2016-test-fullres" / "ISBI2016_ISIC_Part3_Test_Data"
LARGE_PHOTO = FULLRES / "ISIC_0000420.jpg"  # 3072×2304, the largest size in the folder


@pytest.mark.parametrize(
    ("size", "box"),
    [
        ((1000, 800), (180, 80, 820, 720)),  # side 0.8·800 = 640
        ((800, 1000), (80, 180, 720, 820)),  # portrait
        ((100, 100), (10, 10, 90, 90)),
        ((101, 50), (30, 5, 70, 45)),  # side 40; odd margins round down
        ((3072, 2304), (614, 230, 2457, 2073)),  # side round(1843.2) = 1843
        ((1, 1), (0, 0, 1, 1)),
    ],
)
def test_paper_crop_box(size, box) -> None:
    assert paper_crop_box(*size) == box
    left, top, right, bottom = box
    assert right - left == bottom - top  # square


def test_network_box_by_hand() -> None:
    # 1000×800: paper crop (180, 80)–(820, 720), side 640, resized to 256 (scale 2.5 px per
    # input pixel); S = 224 is the centre 224 of 256, i.e. 16 px in: 40 photo px from each edge.
    assert resize_size(224) == 256
    box = network_box(1000, 800, PreprocessConfig(224))
    assert box == pytest.approx((220.0, 120.0, 780.0, 680.0))
    # S = 64: resized to R = round(64·256/224) = 73, centre crop offset (73 − 64) // 2 = 4.
    scale = 640 / 73
    assert network_box(1000, 800, PreprocessConfig(64)) == pytest.approx(
        (180 + 4 * scale, 80 + 4 * scale, 180 + 68 * scale, 80 + 68 * scale)
    )


def test_network_box_is_what_the_network_sees() -> None:
    """Cropping the photo to network_box and resizing gives (nearly) the network input."""
    yy, xx = np.mgrid[0:400, 0:500].astype(np.float32)
    rgb = np.stack([xx / 500 * 255, yy / 400 * 255, (xx + yy) / 900 * 255], axis=-1)
    photo = Image.fromarray(rgb.astype(np.uint8), "RGB")
    for size in (64, 224):
        pre = PreprocessConfig(size)
        view = photo.resize((size, size), Image.BILINEAR, box=network_box(500, 400, pre))
        direct = normalize(to_uint8_tensor(view), pre.mean, pre.std)
        assert (photo_to_input(photo, pre) - direct).abs().mean() < 0.03


def test_photo_to_input_shape_and_normalisation() -> None:
    for size in (64, 224):
        x = photo_to_input(Image.new("RGB", (300, 200), (255, 255, 255)), PreprocessConfig(size))
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
        assert x.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-5)
    pre = PreprocessConfig(64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1))
    black = photo_to_input(Image.new("RGB", (64, 64)), pre)
    assert black.mean(dim=(1, 2)).tolist() == pytest.approx([-2.0, -1.0, -0.5])


def test_photo_to_input_crops_the_centre() -> None:
    """Only the centre 0.8 square reaches the network: a border outside it changes nothing."""
    photo = Image.new("RGB", (500, 400), (0, 0, 255))
    framed = photo.copy()
    framed.paste((255, 0, 0), (0, 0, 500, 35))  # paper crop starts at y = 40
    framed.paste((255, 0, 0), (0, 0, 85, 400))  # … and at x = 90
    pre = PreprocessConfig(64)
    assert torch.equal(photo_to_input(photo, pre), photo_to_input(framed, pre))


# --- decoding ---------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path) -> None:
    img = Image.new("RGB", (60, 30), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 30))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    photo = load_photo(path)
    assert photo.size == (30, 60)  # width and height swapped
    top, bottom = photo.getpixel((15, 5)), photo.getpixel((15, 55))
    assert top[0] > 200 and top[2] < 60  # the left edge is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    values = np.full((20, 20), 30000, np.uint16)
    values[:5] = 1000
    values[15:] = 65535
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    photo = load_photo(path)
    assert photo.mode == "RGB"
    assert photo.getpixel((0, 0)) == (4, 4, 4)  # 1000 / 257
    assert photo.getpixel((0, 10)) == (117, 117, 117)  # 30000 / 257, not clipped to 255
    assert photo.getpixel((0, 19)) == (255, 255, 255)


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (20, 20), 1)
    img.putpalette([0, 0, 0, 200, 30, 40] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 10, 20))
    img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    ("name", "make", "pixel"),
    [
        ("palette.png", _palette_with_transparency, ((15, 5), (200, 30, 40))),
        ("gray.png", lambda: Image.new("L", (20, 20), 90), ((3, 3), (90, 90, 90))),
        ("gray.jpg", lambda: Image.new("L", (20, 20), 90), ((3, 3), (90, 90, 90))),
        ("graya.png", lambda: Image.new("LA", (20, 20), (90, 128)), ((3, 3), (90, 90, 90))),
        (
            "rgba.png",
            lambda: Image.new("RGBA", (20, 20), (10, 200, 30, 0)),
            ((3, 3), (10, 200, 30)),
        ),
        ("bilevel.png", lambda: Image.new("1", (20, 20), 1), ((3, 3), (255, 255, 255))),
        ("cmyk.jpg", lambda: Image.new("CMYK", (20, 20), (0, 255, 255, 0)), ((3, 3), (255, 0, 0))),
        ("rgb.webp", lambda: Image.new("RGB", (20, 20), (10, 200, 30)), ((3, 3), (10, 200, 30))),
        ("rgb.tif", lambda: Image.new("RGB", (20, 20), (10, 200, 30)), ((3, 3), (10, 200, 30))),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, name, make, pixel) -> None:
    path = tmp_path / name
    source = make()
    kwargs = {"quality": 100} if name.endswith((".jpg", ".webp")) else {}
    if name.endswith(".webp"):
        kwargs["lossless"] = True
    source.save(path, **kwargs)
    photo = load_photo(path)
    assert photo.mode == "RGB" and photo.size == (20, 20)
    where, colour = pixel
    assert np.abs(np.subtract(photo.getpixel(where), colour)).max() <= 3


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _truncated_jpeg(path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
        ("notes.jpg", lambda p: p.write_text("not an image\n"), "not an image"),
        ("cut.jpg", _truncated_jpeg, "cannot decode"),
        ("folder.jpg", lambda p: p.mkdir(), "is a directory"),
        ("missing.jpg", lambda p: None, "no such file"),
        ("dot.png", lambda p: Image.new("RGB", (1, 1)).save(p), "smaller than the minimum"),
        (
            "bomb.png",
            lambda p: p.write_bytes(_png_header_only(200_000, 200_000)),
            "decompression bomb",
        ),
    ],
)
def test_unusable_files_raise_input_error_naming_the_file(tmp_path, name, make, expected) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError, match=expected) as info:
        load_photo(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_pixel_limit_is_adjustable(tmp_path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(path)
    with pytest.raises(InputError, match="pixel limit"):
        load_photo(path, max_pixels=64 * 64 - 1)
    assert load_photo(path, max_pixels=64 * 64).size == (64, 64)
    bomb = tmp_path / "header.png"
    bomb.write_bytes(_png_header_only(5000, 5000))  # 25 MP declared, almost no data
    with pytest.raises(InputError, match="decompression bomb"):
        load_photo(bomb, max_pixels=10**6)
    with pytest.raises(InputError, match="cannot decode"):  # under the limit: the data is short
        load_photo(bomb)


# --- draft decoding on a real full-resolution photograph -------------------------------------


@pytest.fixture(scope="module")
def large_photo() -> Path:
    if not LARGE_PHOTO.is_file():
        pytest.skip(f"real full-resolution photo not available ({LARGE_PHOTO})")
    return LARGE_PHOTO


def test_draft_decoding_keeps_enough_pixels_and_the_same_input(large_photo) -> None:
    full = load_photo(large_photo)
    draft = load_photo(large_photo, draft_min_side=256)
    assert full.size == (3072, 2304)
    assert draft.size[0] < full.size[0] and draft.size[0] / draft.size[1] == pytest.approx(
        4 / 3, 0.01
    )
    left, _, right, _ = paper_crop_box(*draft.size)
    assert right - left >= 256
    for size in (64, 224):
        pre = PreprocessConfig(size)
        diff = (photo_to_input(full, pre) - photo_to_input(draft, pre)).abs()
        assert float(diff.mean()) < 0.05  # normalised units: ≈ 3/255 per pixel at most on average
