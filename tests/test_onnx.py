"""ONNX export and ONNX Runtime scoring: parity with PyTorch on real photos for every arch (and
the default model), metadata, int8 calibration, the CLI paths, and start-up without torch."""

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

from attnmel_cli.deploy import export_match, onnx_deps
from attnmel_cli.deploy.onnx_deps import INPUT_NAME, LOGITS_NAME, require
from attnmel_cli.deploy.onnx_digest import digest_file
from attnmel_cli.deploy.runtime import OnnxSession, providers
from attnmel_cli.deploy.session import onnx_copy
from attnmel_cli.engine.inference import Session
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.checkpoint import CheckpointMeta, read_header
from attnmel_cli.io.default_model import (
    DEFAULT_CHECKPOINT_ENV,
    DEFAULT_CHECKPOINT_NAME,
    DEFAULT_ONNX_NAME,
    default_checkpoint,
)
from attnmel_cli.io.digest import file_sha256
from attnmel_cli.io.model_checkpoint import save_checkpoint
from attnmel_cli.models.registry import build_model
from attnmel_cli.parallel import parallel_map

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("restore_logging")

REPO = Path(__file__).resolve().parents[1]
ZERO = ScoringOptions(workers=0)  # decoded in the test's process
WEIGHTS = REPO / "weights"
EXAMPLES = [str(p) for p in sorted((REPO / "examples").glob("*.jpg"))]  # bundled photos
DATA = REPO.parent / "shared" / "data"
FULLRES = DATA / "isic2016-test-fullres" / "ISBI2016_ISIC_Part3_Test_Data"
SMALL = DATA / "isic2017-256" / "ISIC-2017_Validation_Data"
# (arch, backbone): every arch on VGG-16-BN at width 1/16, and the gated arch on a timm backbone.
TINY = [("attnmel", "vgg16_bn"), ("mel-cnn", "vgg16_bn"), ("vgg16-gap", "vgg16_bn"),
        ("vgg16", "vgg16_bn"), ("attnmel", "efficientnet_lite0")]


@pytest.fixture(scope="module")
def photos() -> list[str]:
    """Three full-resolution ISIC 2016 photos and two 256×256 ISIC 2017 images (real data)."""
    if not FULLRES.is_dir() or not SMALL.is_dir():
        pytest.skip(f"real ISIC data not found under {DATA}; see shared/data/README.md")
    return [str(p) for p in sorted(FULLRES.glob("*.jpg"))[:3] + sorted(SMALL.glob("*.jpg"))[:2]]


def tiny_checkpoint(folder: Path, arch: str, backbone: str) -> Path:
    torch.manual_seed(7)
    width = 0.0625 if backbone == "vgg16_bn" else 1.0
    model = build_model(arch, backbone, width)
    for m in model.modules():  # a random non-zero head, so that maps and logits mean something
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.05)
    # vgg16's 7×7 adaptive pooling exports where the pool-5 map is 7×7 (S = 224) only
    size = 224 if arch == "vgg16" else 64
    meta = CheckpointMeta(arch=arch, backbone=backbone, width=width, image_size=size,
                          metrics={"val_auc": 0.5})
    return save_checkpoint(folder / f"{arch}-{backbone}.safetensors", model, meta)


def export(invoke, checkpoint: Path, out: Path, *extra: str | Path) -> Path:
    result = invoke("export", checkpoint, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out


def assert_parity(checkpoint: Path, model: Path, photos: list[str], *, tta: bool = False) -> None:
    """fp32 ONNX vs PyTorch on the same photos: p_melanoma within 1e-4, maps within 1e-3."""
    torch_session = Session.load(checkpoint, torch.device("cpu"))
    onnx_session = OnnxSession.load(model, "cpu")
    assert onnx_session.map_names() == torch_session.map_names()
    expected = list(torch_session.score(
        photos, ScoringOptions(batch_size=2, workers=0, keep_maps=True, tta=tta)
    ))
    got = list(onnx_session.score(
        photos, ScoringOptions(batch_size=3, workers=2, keep_maps=True, tta=tta)
    ))
    assert [g.path for g in got] == [e.path for e in expected]
    for e, g in zip(expected, got, strict=True):
        assert e.error is None and g.error is None
        assert abs(e.p_melanoma - g.p_melanoma) <= 1e-4, (e.path, e.p_melanoma, g.p_melanoma)
        assert e.maps.keys() == g.maps.keys() == set(torch_session.map_names())
        for name in e.maps:
            assert e.maps[name].shape == g.maps[name].shape
            assert np.abs(e.maps[name] - g.maps[name]).max() <= 1e-3, (e.path, name)


@pytest.mark.parametrize(("arch", "backbone"), TINY)
def test_tiny_parity_every_arch(invoke, tmp_path, photos, arch, backbone) -> None:
    checkpoint = tiny_checkpoint(tmp_path, arch, backbone)
    model = export(invoke, checkpoint, tmp_path / "model.onnx")
    assert_parity(checkpoint, model, photos, tta=arch == "attnmel" and backbone == "vgg16_bn")


THREE_CLASS = "attnmel-isic2017-3class.safetensors"
CC0 = "attnmel-isic2017-cc0.safetensors"


@pytest.mark.parametrize("name", [DEFAULT_CHECKPOINT_NAME, THREE_CLASS, CC0])
def test_each_shipped_onnx_is_the_export_of_its_checkpoint(name: str) -> None:
    """weights/X.onnx is the export of weights/X.safetensors (the default model, the three-class
    model, the ISIC-2017-only model): the checkpoint's header and SHA-256 in its metadata, the
    same scores and maps on the examples (re-export it with `attnmel export … --force` whenever
    the checkpoint changes)."""
    checkpoint = WEIGHTS / name
    model = checkpoint.with_suffix(".onnx")
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    header = read_header(checkpoint)
    assert {k: props.get(k) for k in header} == header
    assert props["source_checkpoint"] == checkpoint.name
    assert props["source_sha256"] == file_sha256(checkpoint)
    assert props["onnx_precision"] == "fp32"
    assert_parity(checkpoint, model, EXAMPLES)


@pytest.fixture
def no_override(monkeypatch) -> None:
    """Neither $ATTNMEL_CHECKPOINT nor torchrun: the default model is resolved."""
    monkeypatch.delenv(DEFAULT_CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_the_default_is_the_onnx_export_where_onnx_runtime_serves(
    monkeypatch, no_override
) -> None:
    shipped = WEIGHTS / DEFAULT_ONNX_NAME
    monkeypatch.setattr(onnx_deps, "gpu_present", lambda: False)
    assert default_checkpoint() == WEIGHTS / DEFAULT_CHECKPOINT_NAME
    assert onnx_copy(None, "auto") == onnx_copy(None, "cpu") == shipped
    assert onnx_copy(WEIGHTS / THREE_CLASS, "cpu") == WEIGHTS / "attnmel-isic2017-3class.onnx"
    assert onnx_copy(THREE_CLASS, "cpu") == WEIGHTS / "attnmel-isic2017-3class.onnx"  # by name
    assert onnx_copy(None, "mps") is None  # PyTorch's device
    ort = require("onnxruntime")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_copy(None, "cuda") is None and onnx_copy(None, "cuda:1") is None
    monkeypatch.setattr(onnx_deps, "gpu_present", lambda: True)  # PyTorch's auto: that GPU
    assert onnx_copy(None, "auto") is None and onnx_copy(None, "cpu") == shipped
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_copy(None, "auto") == onnx_copy(None, "cuda:1") == shipped
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: PyTorch splits the work
    assert onnx_copy(None, "cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed: import fails
    assert onnx_copy(None, "cpu") is None


def test_gpu_present_is_judged_without_torch(monkeypatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    assert onnx_deps.gpu_present()  # Apple silicon: PyTorch's auto is MPS
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert not onnx_deps.gpu_present()
    monkeypatch.setattr(sys, "platform", "linux")
    if torch.cuda.is_available():  # a driver PyTorch uses is seen without torch
        assert onnx_deps.gpu_present()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not onnx_deps.gpu_present()  # every GPU hidden


def test_a_checkpoint_scores_through_its_export_where_onnx_runtime_serves(
    monkeypatch, no_override, invoke, tmp_path
) -> None:
    """The default model's checkpoint named by --checkpoint or $ATTNMEL_CHECKPOINT scores through
    the export beside it, as without either; PyTorch scores it without onnxruntime, or a copy
    with no export beside it."""
    monkeypatch.setattr(onnx_deps, "gpu_present", lambda: False)
    checkpoint = str(WEIGHTS / DEFAULT_CHECKPOINT_NAME)
    alone = tmp_path / DEFAULT_CHECKPOINT_NAME
    alone.symlink_to(checkpoint)
    args = (EXAMPLES[0], "-f", "csv", "-j", "0")
    runs = {DEFAULT_ONNX_NAME: [invoke("predict", *args, "-c", checkpoint),
                                invoke("predict", *args, env={DEFAULT_CHECKPOINT_ENV: checkpoint}),
                                invoke("predict", *args)],
            DEFAULT_CHECKPOINT_NAME: [invoke("predict", *args, "-c", alone)]}
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed: import fails
    runs[DEFAULT_CHECKPOINT_NAME].append(invoke("predict", *args))
    for scored_by, results in runs.items():
        for result in results:
            assert result.exit_code == 0, result.output
            assert parse_csv(result.stdout)[0]["checkpoint"] == scored_by


@pytest.fixture
def own_cache(monkeypatch, tmp_path) -> Path:
    """A user cache of this test's own (where export checks are remembered)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "attnmel"


def test_a_stale_export_is_not_used(monkeypatch, no_override, own_cache, tmp_path, tiny,
                                    caplog) -> None:
    """A checkpoint replaced without exporting it again: PyTorch scores it, with a warning."""
    monkeypatch.setattr(onnx_deps, "gpu_present", lambda: False)
    (tmp_path / DEFAULT_ONNX_NAME).symlink_to(WEIGHTS / DEFAULT_ONNX_NAME)
    checkpoint = tmp_path / DEFAULT_CHECKPOINT_NAME
    checkpoint.symlink_to(WEIGHTS / DEFAULT_CHECKPOINT_NAME)
    assert onnx_copy(checkpoint, "cpu") == tmp_path / DEFAULT_ONNX_NAME
    checkpoint.unlink()
    checkpoint.symlink_to(tiny[0])  # another model
    assert onnx_copy(checkpoint, "cpu") is None
    assert "is not the export of the attnmel-default.safetensors beside it" in caplog.text


def test_the_export_check_runs_once_per_state_of_the_files(
    monkeypatch, no_override, own_cache, tmp_path, tiny
) -> None:
    """The checkpoint is hashed on the first run only; touching or editing it checks again, and
    an edit is a stale export."""
    monkeypatch.setattr(onnx_deps, "gpu_present", lambda: False)
    checkpoint, model = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    shutil.copy(tiny[0], checkpoint)
    shutil.copy(tiny[1], model)
    hashed: list[Path] = []

    def counting(path):
        hashed.append(Path(path))
        return file_sha256(path)

    monkeypatch.setattr(export_match, "file_sha256", counting)
    assert onnx_copy(checkpoint, "cpu") == model and hashed == [checkpoint]
    assert onnx_copy(checkpoint, "cpu") == model and hashed == [checkpoint]  # remembered
    assert (own_cache / export_match.CACHE_NAME).is_file()
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: same bytes
    assert onnx_copy(checkpoint, "cpu") == model and len(hashed) == 2
    with checkpoint.open("r+b") as fh:  # edited in place: the same size
        fh.seek(-4, os.SEEK_END)
        last = fh.read(4)
        fh.seek(-4, os.SEEK_END)
        fh.write(bytes(b ^ 0xFF for b in last))
    assert onnx_copy(checkpoint, "cpu") is None and len(hashed) == 3  # a stale export
    (own_cache / export_match.CACHE_NAME).write_text("not json")  # a damaged cache: checked
    assert onnx_copy(checkpoint, "cpu") is None and len(hashed) == 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny attnmel checkpoint and its fp32 ONNX export (by the CLI)."""
    from typer.testing import CliRunner

    from attnmel_cli.cli import app

    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = tiny_checkpoint(folder, "attnmel", "vgg16_bn")
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(folder / "m.onnx")])
    assert result.exit_code == 0, result.output
    return checkpoint, folder / "m.onnx"


def test_metadata_and_graph(tiny) -> None:
    checkpoint, model_path = tiny
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    header = read_header(checkpoint)
    assert {k: props[k] for k in header} == header  # the whole checkpoint header, unchanged
    assert props["onnx_precision"] == "fp32"
    assert json.loads(props["onnx_outputs"]) == [LOGITS_NAME, "pool3", "pool4"]
    assert float(props["threshold"]) == 0.5
    assert props["source_checkpoint"] == checkpoint.name
    assert props["source_sha256"] == file_sha256(checkpoint)
    # the model's own SHA-256 beside it (sha256sum's format), checked whenever it is scored
    assert digest_file(model_path).read_text() == f"{file_sha256(model_path)}  m.onnx\n"
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]  # dynamic batch
    assert [o.name for o in model.graph.output] == [LOGITS_NAME, "pool3", "pool4"]


def test_batch_sizes_agree(tiny, photos) -> None:
    """The dynamic batch axis: one image at a time scores as a batch of five does."""
    _, model = tiny
    session = OnnxSession.load(model, "cpu")
    one = [s.p_melanoma for s in session.score(photos, ScoringOptions(batch_size=1, workers=0))]
    five = [s.p_melanoma for s in session.score(photos, ScoringOptions(batch_size=5, workers=0))]
    assert np.allclose(one, five, atol=1e-6)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_cli_onnx_same_records(invoke, tiny, photos, tmp_path) -> None:
    checkpoint, model = tiny
    missing = str(tmp_path / "missing.jpg")
    inputs = [photos[0], missing, photos[3]]
    by_torch = invoke("predict", "-c", checkpoint, *inputs, "-f", "csv")
    by_onnx = invoke("predict", "-c", model, *inputs, "-f", "csv")
    assert by_torch.exit_code == by_onnx.exit_code == 2  # the missing file; the rest scored
    a, b = parse_csv(by_torch.stdout), parse_csv(by_onnx.stdout)
    assert [r["path"] for r in b] == inputs
    assert b[1]["error"] == a[1]["error"] and "no such file" in b[1]["error"]
    for ra, rb in zip(a, b, strict=True):
        if ra["p_melanoma"]:
            assert abs(float(ra["p_melanoma"]) - float(rb["p_melanoma"])) <= 2e-6
            assert ra["prediction"] == rb["prediction"]
    assert {r["checkpoint"] for r in b} == {"m.onnx"}
    stdin = invoke("predict", "-c", model, "-", "-f", "csv", stdin="\n".join(inputs) + "\n")
    assert stdin.exit_code == 2 and parse_csv(stdin.stdout) == b
    by_env = invoke("predict", photos[0], "-f", "csv", env={"ATTNMEL_CHECKPOINT": str(model)})
    assert by_env.exit_code == 0 and parse_csv(by_env.stdout)[0] == b[0]  # the default model


def test_predict_overlay_and_explain_onnx(invoke, tiny, photos, tmp_path) -> None:
    _, model = tiny
    overlay = tmp_path / "one.png"
    result = invoke("predict", "-c", model, photos[0], "--overlay", overlay, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert overlay.is_file()
    result = invoke("explain", "-c", model, photos[0], photos[3], "-o", tmp_path / "ex", "--tta")
    assert result.exit_code == 0, result.output
    stem = Path(photos[0]).stem
    names = {p.name for p in (tmp_path / "ex").iterdir()}
    assert {f"{stem}_{n}" for n in ("pool3.png", "pool4.png", "composite.png", "maps.npz")} <= names
    with np.load(tmp_path / "ex" / f"{stem}_maps.npz") as raw:
        assert raw["pool3"].shape == (8, 8) and raw["pool4"].shape == (4, 4)


def test_export_refusals(invoke, tiny, tmp_path) -> None:
    checkpoint, model = tiny
    again = invoke("export", checkpoint, "--out", model)
    assert again.exit_code == 1 and "already exists" in again.output
    alone = invoke("export", checkpoint, "--out", tmp_path / "q.onnx", "--int8")
    assert alone.exit_code == 1 and "--calibrate" in alone.output
    bad = invoke("export", tmp_path / "none.safetensors", "--out", tmp_path / "x.onnx")
    assert bad.exit_code == 1 and "not found" in bad.output
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "q.onnx").exists()


def test_bad_onnx_files(invoke, tiny, tmp_path, photos) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    result = invoke("predict", "-c", junk, photos[0])
    assert result.exit_code == 1
    assert "junk.onnx: not an ONNX model" in result.output and "Traceback" not in result.output
    _, model = tiny
    plain = onnx.load(str(model))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    result = invoke("predict", "-c", tmp_path / "plain.onnx", photos[0])
    assert result.exit_code == 1 and "without attnmel metadata" in result.output


def test_int8_calibrated_on_training_images(invoke, tiny, isic2017_subset, photos, tmp_path):
    prepared = isic2017_subset({"Training": (3, 5), "Validation": (1, 1)}, masks=False)
    checkpoint, model = tiny
    out = export(invoke, checkpoint, tmp_path / "int8.onnx", "--int8", "--calibrate", prepared)
    quantized = onnx.load(str(out))
    props = {p.key: p.value for p in quantized.metadata_props}
    assert props["onnx_precision"] == "int8"
    calibration = json.loads(props["int8_calibration"])
    assert calibration["images"] == 8 and calibration["split"] == "train"
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = [s.p_melanoma for s in OnnxSession.load(model, "cpu").score(photos, ZERO)]
    int8 = [s.p_melanoma for s in OnnxSession.load(out, "cpu").score(photos, ZERO)]
    assert np.abs(np.array(fp32) - np.array(int8)).max() < 0.1  # close, not equal
    assert OnnxSession.load(out, "cpu").precision == "int8"
    # --keep-float leaves the named layers in float (here the attention gates), nothing else
    kept_out = tmp_path / "kept.onnx"
    result = invoke("export", checkpoint, "--out", kept_out, "--int8", "--calibrate", prepared,
                    "--keep-float", "attn3,attn4")
    assert result.exit_code == 0 and result.stdout.strip() == str(kept_out), result.output
    (warning,) = [line for line in result.stderr.splitlines() if "experimental" in line]
    assert "fp32 ONNX is the recommended fast path" in warning and "AUC" in warning
    kept = kept_out
    calibration = json.loads({p.key: p.value for p in onnx.load(str(kept)).metadata_props}[
        "int8_calibration"])
    assert calibration["kept_float"] == ["attn3", "attn4"] and calibration["float_nodes"] > 0
    wrong = invoke("export", checkpoint, "--out", tmp_path / "w.onnx", "--int8", "--calibrate",
                   prepared, "--keep-float", "nosuchlayer")
    assert wrong.exit_code == 1 and "matches no node" in wrong.output
    assert not (tmp_path / "w.onnx").exists()


def test_providers_and_missing_extra(monkeypatch) -> None:
    cpu = ["CPUExecutionProvider"]
    assert providers("auto", cpu) == cpu == providers("cpu", cpu)
    gpu = ["CUDAExecutionProvider", *cpu]
    assert providers("auto", gpu) == gpu
    assert providers("cuda:1", gpu)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(AttnMelError, match="no CUDA execution provider"):
        providers("cuda", cpu)
    with pytest.raises(AttnMelError, match="not available to ONNX Runtime"):
        providers("mps", cpu)

    def missing(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr("importlib.import_module", missing)
    with pytest.raises(AttnMelError, match=r"pip install onnx onnxruntime"):
        require("onnxruntime")


def test_parallel_map_keeps_order() -> None:
    items = list(range(50))
    assert list(parallel_map(lambda i: i * i, items, 3)) == [i * i for i in items]
    assert list(parallel_map(lambda i: -i, items, 0)) == [-i for i in items]


def run_without_torch(args: list[str]) -> tuple[str, bool]:
    """Run ``attnmel ARGS`` in a fresh interpreter (no $ATTNMEL_CHECKPOINT): its stdout, and
    whether torch got imported."""
    code = (
        "import sys\nfrom attnmel_cli.cli import main\nsys.argv = ['attnmel', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != DEFAULT_CHECKPOINT_ENV}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=env)
    assert done.stderr.strip().splitlines()[-1] in ("TORCH", "NO-TORCH"), done.stderr
    return done.stdout, done.stderr.strip().splitlines()[-1] == "TORCH"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["predict", "--help"]])
def test_startup_without_torch(args) -> None:
    out, torch_imported = run_without_torch(args)
    assert out.strip() and not torch_imported


def test_onnx_scoring_without_torch(tiny, photos) -> None:
    _, model = tiny
    out, torch_imported = run_without_torch(["predict", "-c", str(model), photos[0], "-f", "csv"])
    assert parse_csv(out)[0]["path"] == photos[0] and parse_csv(out)[0]["p_melanoma"]
    assert not torch_imported


def test_the_default_model_scores_through_onnx_runtime_without_torch(tmp_path) -> None:
    """predict and explain with no --checkpoint, as a user runs them: the shipped ONNX export
    scores, the records say so, and torch is never imported."""
    if onnx_copy(None, "auto") is None:
        pytest.skip("ONNX Runtime does not serve this machine's default device (a GPU PyTorch "
                    "uses, and no CUDA provider): the default model runs through PyTorch here")
    out, torch_imported = run_without_torch(["predict", str(REPO / "examples"), "-f", "csv"])
    rows = parse_csv(out)
    assert [r["path"] for r in rows] == EXAMPLES
    assert {r["checkpoint"] for r in rows} == {DEFAULT_ONNX_NAME}
    assert all(0 <= float(r["p_melanoma"]) <= 1 for r in rows) and not torch_imported
    out, torch_imported = run_without_torch(["explain", EXAMPLES[3], "-o", str(tmp_path)])
    assert out.split("\t")[0] == EXAMPLES[3] and not torch_imported
    stem = Path(EXAMPLES[3]).stem
    assert (tmp_path / f"{stem}_composite.png").is_file()
    with np.load(tmp_path / f"{stem}_maps.npz") as raw:
        assert set(raw.files) >= {"pool3", "pool4"}


def test_readme_plain_onnxruntime_snippet(tiny, photos, tmp_path) -> None:
    """docs/preprocessing.md's lines of plain onnxruntime give attnmel's p_melanoma (a 256×256
    photo and a full-resolution one: attnmel decodes every photo in full, as the snippet does)."""
    _, model = tiny
    page = (REPO / "docs" / "preprocessing.md").read_text(encoding="utf-8")
    after = page.split("Scoring with plain `onnxruntime`", 1)[1]
    snippet = after.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "score.py"
    script.write_text(snippet.replace('"attnmel.onnx"', repr(str(model))), encoding="utf-8")
    session = OnnxSession.load(model, "cpu")
    for photo in (photos[3], photos[0]):
        done = subprocess.run([sys.executable, str(script), photo], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        p = float(done.stdout.split()[-1])
        (expected,) = session.score([photo], ZERO)
        assert abs(p - expected.p_melanoma) <= 1e-6, photo
