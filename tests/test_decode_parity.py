"""The same pixels score the same whatever the file: scoring decodes every photo at full
resolution (no reduced-scale JPEG decode), so p_melanoma of a JPEG equals that of a lossless PNG of
its pixels, and predict's fast path agrees with the full decode on the ISIC 2016 photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnmel_cli.data.decode import load_photo
from attnmel_cli.data.transforms import photo_to_array
from attnmel_cli.engine.scored import ScoringOptions, ScoringSession, load_input

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
FULLRES = REPO.parent / "shared/data/isic2016-test-fullres/ISBI2016_ISIC_Part3_Test_Data"
# The bundled photo that moved most (0.671 vs 0.603 for a PNG of its pixels) and the largest
# size in the ISIC 2016 folder (3072×2304, where a draft decode reduced most).
QUICK = [REPO / "examples" / "ISIC_0000279.jpg", REPO / "examples" / "ISIC_0000115.jpg",
         FULLRES / "ISIC_0000420.jpg"]


def _onnx_default() -> ScoringSession:
    pytest.importorskip("onnxruntime")
    from attnmel_cli.deploy.runtime import OnnxSession

    model = WEIGHTS / "attnmel-default.onnx"
    if not model.is_file():
        pytest.skip(f"the default model's ONNX export is not here ({model})")
    return OnnxSession.load(model, "cpu")


def _full_decode_probs(session: ScoringSession, paths: list[Path]) -> np.ndarray:
    """p_melanoma of each photo decoded at full resolution, preprocessed by hand."""
    pre = session.meta.preprocess
    x = np.stack([photo_to_array(load_photo(p), pre) for p in paths])
    if hasattr(session, "model"):  # PyTorch
        from attnmel_cli.engine.inference import forward_batch

        with torch.inference_mode():
            probs, _ = forward_batch(session.model, torch.from_numpy(x), session.device)
    else:
        probs, _ = session.forward(x)  # type: ignore[attr-defined]
    return probs[:, 1]


def _scored(session: ScoringSession, paths: list[Path]) -> np.ndarray:
    out = [s.p_melanoma for s in session.score([str(p) for p in paths], ScoringOptions(workers=0))]
    assert None not in out
    return np.array(out, dtype=np.float64)


def test_a_jpeg_and_a_png_of_its_pixels_score_the_same(tmp_path: Path) -> None:
    paths = [p for p in QUICK if p.is_file()]
    session = _onnx_default()
    pre = session.meta.preprocess
    pngs = []
    for p in paths:
        png = tmp_path / f"{p.stem}.png"
        load_photo(p).save(png)
        pngs.append(png)
        assert np.array_equal(load_input(p, pre), load_input(png, pre)), p.name
    jpeg_p, png_p = _scored(session, paths), _scored(session, pngs)
    assert np.abs(jpeg_p - png_p).max() < 1e-6
    assert np.abs(jpeg_p - _full_decode_probs(session, paths)).max() < 1e-6


@pytest.mark.parametrize("path_kind", ["onnx", pytest.param("pytorch", marks=pytest.mark.slow)])
def test_predict_agrees_with_the_full_decode_on_every_isic2016_photo(path_kind: str) -> None:
    """All 131 full-resolution photos, both default model paths (PyTorch's: ``-m slow``, 10–20 s
    each on 2 cores): within 0.01 of the full decode (in fact equal)."""
    photos = sorted(FULLRES.glob("*.jpg"))
    if len(photos) != 131:
        pytest.skip(f"the 131 ISIC 2016 full-resolution photos are not here ({FULLRES})")
    if path_kind == "onnx":
        session = _onnx_default()
    else:
        from attnmel_cli.engine.inference import Session

        checkpoint = WEIGHTS / "attnmel-default.safetensors"
        if not checkpoint.is_file():
            pytest.skip(f"the default model is not here ({checkpoint})")
        session = Session.load(checkpoint, torch.device("cpu"))
    got, full = _scored(session, photos), _full_decode_probs(session, photos)
    assert np.abs(got - full).max() <= 0.01
