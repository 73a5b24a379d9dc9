"""Hostile ``.onnx`` files, each built here with the ``onnx`` helper API (a few nodes, no torch
export): external data outside the model's folder, wrong graphs, hostile metadata, a damaged
file. Each is refused in one line naming the file and what is wrong, before ONNX Runtime reads
anything it should not; a model that fails on some images only fails those images."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnmel_cli.deploy.onnx_digest import digest_mismatch, write_digest
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors, write_tensors
from attnmel_cli.io.default_model import DEFAULT_ONNX_NAME

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.usefixtures("restore_logging")
SIZE = 64
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def header(size: int = SIZE, **changes: str) -> dict[str, str]:
    """Valid attnmel metadata of a mel-cnn (no maps) model at ``size`` px, with ``changes``."""
    meta = CheckpointMeta(arch="mel-cnn", backbone="vgg16_bn", width=0.0625, image_size=size)
    return {**meta.to_header(), **changes}


def save(path: Path, nodes: list, inits: list, *, batch: str | int = "N", size: int = SIZE,
         k: int | None = 2, meta: dict[str, str] | None = None) -> Path:
    """A model: ``input`` (batch, 3, size, size) → ``nodes`` → ``logits`` (batch, k); k None:
    the output's shape left undeclared."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                      None if k is None else [batch, k])
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (meta or header()).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def linear(path: Path, *, k: int = 2, squash: str | None = None, **kw) -> Path:
    """logits = mean colour (N, 3) @ W (3, k), the mean optionally through ``squash`` (Sqrt:
    NaN for a dark photo, whose normalised mean is negative)."""
    w = numpy_helper.from_array(np.arange(3 * k, dtype=np.float32).reshape(3, k) / 10, "W")
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0)]
    if squash:
        nodes.append(helper.make_node(squash, ["m"], ["s"]))
    nodes.append(helper.make_node("MatMul", ["s" if squash else "m", "W"], ["logits"]))
    return save(path, nodes, [w], k=k, **kw)


def photo(path: Path, value: int) -> Path:
    Image.fromarray(np.full((72, 80, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> tuple[str, str]:
    """A black photo and a white one."""
    return str(photo(tmp_path / "black.png", 0)), str(photo(tmp_path / "white.png", 255))


def one_line(result, path: Path, *expected: str, code: int = 1) -> str:
    """The run ended with ``code`` and one line on stderr naming ``path`` and ``expected``."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "weights_only" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0], lines[0]
    for word in expected:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_a_valid_tiny_model_scores(invoke, tmp_path, photos) -> None:
    model = linear(tmp_path / "ok.onnx")
    result = invoke("predict", "-c", model, *photos, "-f", "csv", "-j", "0")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == list(photos) and all(r["p_melanoma"] for r in rows)


# ── 1. external data ──────────────────────────────────────────────────────────────────────────


def _external(location: str) -> TensorProto:
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 2])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "24")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def _with_external(path: Path, location: str, *, in_subgraph: bool = False) -> Path:
    """linear()'s model with W read from ``location`` (as an initializer, or as a Constant in
    the then-branch of an If)."""
    mean = helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0)
    if not in_subgraph:
        return save(path, [mean, helper.make_node("MatMul", ["m", "W"], ["logits"])],
                    [_external(location)])
    out = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2])
    then = helper.make_graph([helper.make_node("Constant", [], ["w"], value=_external(location))],
                             "then", [], [out])
    zeros = numpy_helper.from_array(np.zeros((3, 2), np.float32))
    other = helper.make_graph([helper.make_node("Constant", [], ["w"], value=zeros)], "else", [],
                              [out])
    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [mean, helper.make_node("If", ["cond"], ["W"], then_branch=then, else_branch=other),
             helper.make_node("MatMul", ["m", "W"], ["logits"])]
    return save(path, nodes, [cond])


def test_external_data_outside_the_models_folder_is_refused(invoke, tmp_path, photos) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"top secret, outside the model's folder")
    (folder / "link.bin").symlink_to(secret)
    os.mkfifo(folder / "fifo.bin")
    (folder / "sub").mkdir()
    cases = {
        "climb": ("../secret.bin", "climbs out"),
        "deep": ("a/../../secret.bin", "climbs out"),
        "absolute": (str(secret), "absolute path"),
        "passwd": ("/etc/passwd", "absolute path"),
        "symlink": ("link.bin", "symlink"),
        "fifo": ("fifo.bin", "not a regular file"),
        "folder": ("sub", "not a regular file"),
        "missing": ("nothing.bin", "does not exist"),
    }
    for name, (location, expected) in cases.items():
        for nested in (False, True):
            model = _with_external(folder / f"{name}-{nested}.onnx", location, in_subgraph=nested)
            line = one_line(invoke("predict", "-c", model, photos[0], "-j", "0"), model,
                            "external data", expected)
            assert "secret" not in line or location in line
    # data inside the folder is read as usual
    (folder / "w.bin").write_bytes(np.ones((3, 2), np.float32).tobytes())
    inside = _with_external(folder / "inside.onnx", "w.bin")
    result = invoke("predict", "-c", inside, *photos, "-f", "csv", "-j", "0")
    assert result.exit_code == 0, result.output


# ── 5. wrong graphs ───────────────────────────────────────────────────────────────────────────


def test_wrong_graphs_are_refused_when_opened(invoke, tmp_path, photos) -> None:
    identity = save(tmp_path / "identity.onnx", [helper.make_node("Identity", ["input"],
                                                                  ["logits"])], [], k=None)
    fixed_px = linear(tmp_path / "fixed-64px.onnx", meta=header(224))
    batch_one = linear(tmp_path / "batch-1.onnx", batch=1)
    one_logit = linear(tmp_path / "one-logit.onnx", k=1)
    undeclared = linear(tmp_path / "one-logit-undeclared.onnx", k=1)
    proto = onnx.load(str(undeclared))
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(proto, str(undeclared))
    # 2⁴⁵ floats: far beyond any memory, refused at allocation without touching a page
    huge = numpy_helper.from_array(np.array([2**45], np.int64), "shape")
    hog = save(tmp_path / "terabytes.onnx", [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["mw"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("Add", ["mw", "total"], ["logits"]),
    ], [numpy_helper.from_array(np.ones((3, 2), np.float32), "W"), huge])
    cases = {
        identity: ("logits",),
        fixed_px: ("image_size is 224",),
        batch_one: ("fixed batch of 1",),
        one_logit: ("classes has 2",),
        undeclared: ("classes",),
        hog: ("probe batch",),
    }
    for model, expected in cases.items():
        one_line(invoke("predict", "-c", model, *photos, "-j", "0"), model, *expected)


def test_a_runtime_failure_fails_its_batch_only(invoke, tmp_path, photos, capfd) -> None:
    """A graph that indexes out of bounds on bright photos: ONNX Runtime fails that batch, the
    image is an error record, the dark photo is scored (exit 2)."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["mw"]),
        helper.make_node("ReduceMean", ["input"], ["avg"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Greater", ["avg", "zero"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["index"], to=TensorProto.INT64),
        helper.make_node("Mul", ["index", "ten"], ["far"]),
        helper.make_node("Gather", ["table", "far"], ["picked"]),
        helper.make_node("Unsqueeze", ["picked", "axis"], ["column"]),
        helper.make_node("Add", ["mw", "column"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("W", np.ones((3, 2), np.float32)), ("zero", np.array(0, np.float32)),
        ("ten", np.array(10, np.int64)), ("table", np.zeros(2, np.float32)),
        ("axis", np.array([1], np.int64)))]
    model = save(tmp_path / "fragile.onnx", nodes, inits)
    result = invoke("predict", "-c", model, *photos, "-f", "jsonl", "-j", "0", "-b", "1")
    assert result.exit_code == 2, result.output
    dark, bright = (json.loads(line) for line in result.stdout.splitlines())
    assert dark["p_melanoma"] is not None and "error" not in dark
    assert bright["p_melanoma"] is None and "failed in ONNX Runtime" in bright["error"]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {photos[1]}: fragile.onnx failed in ONNX Runtime")
    assert "onnxruntime" not in capfd.readouterr().err  # its own coloured log: kept quiet


# ── 4. NaN ────────────────────────────────────────────────────────────────────────────────────


def test_a_nan_probability_is_an_error_never_a_class(invoke, tmp_path, photos) -> None:
    model = linear(tmp_path / "sqrt.onnx", squash="Sqrt")  # NaN for the black photo only
    result = invoke("predict", "-c", model, *photos, "-f", "jsonl", "-j", "0")
    assert result.exit_code == 2, result.output
    black, white = (json.loads(line) for line in result.stdout.splitlines())
    assert black["p_melanoma"] is None and black["prediction"] is None
    assert "non-finite probability" in black["error"]
    assert white["prediction"] in ("melanoma", "other") and 0 <= white["p_melanoma"] <= 1
    result = invoke("predict", "-c", model, *photos, "-f", "csv", "-j", "0")
    black, white = csv.DictReader(io.StringIO(result.stdout))
    assert result.exit_code == 2 and black["p_melanoma"] == black["prediction"] == ""


# ── 2, 3, 6, 7. metadata ──────────────────────────────────────────────────────────────────────

HOSTILE_META = {
    "mean-nan": ({"mean": "[NaN, 0.456, 0.406]"}, "mean"),
    "std-zero": ({"std": "[0.229, 0, 0.225]"}, "std"),
    "std-inf": ({"std": "[Infinity, 1, 1]"}, "std"),
    "image-size-huge": ({"image_size": "1000000"}, "image_size"),
    "image-size-float": ({"image_size": "64.5"}, "image_size"),
    "resize-huge": ({"preprocessing": json.dumps({"resize": 10**6})}, "resize"),
    "prepared-zero": ({"preprocessing": json.dumps({"prepared_size": 0})}, "prepared_size"),
    "prepared-negative": ({"preprocessing": json.dumps({"prepared_size": -5})}, "prepared_size"),
    "classes-nested": ({"classes": '[["x"], "melanoma"]'}, "classes"),
    "classes-object": ({"classes": '{"a": 1}'}, "classes"),
    "class-escape": ({"classes": json.dumps(["\x1b[2J\x1b]0;pwned\x07", "melanoma"])}, "classes"),
    "class-long": ({"classes": json.dumps(["x" * 65, "melanoma"])}, "classes"),
    "train-config-list": ({"train_config": "[1, 2]"}, "train_config"),
}


def test_hostile_onnx_metadata_is_refused(invoke, tmp_path, photos) -> None:
    for name, (changes, field) in HOSTILE_META.items():
        model = linear(tmp_path / f"{name}.onnx", meta=header(**changes))
        line = one_line(invoke("predict", "-c", model, photos[0], "-j", "0"), model, field)
        assert "\x1b" not in line and "\x07" not in line


def test_a_formula_class_name_is_neutralised_in_csv_only(invoke, tmp_path, photos,
                                                          monkeypatch) -> None:
    """A class name and a file name a spreadsheet would run: CSV cells get a leading ', JSON
    lines keep the exact values."""
    monkeypatch.chdir(tmp_path)
    formula = "=HYPERLINK(\"http://x\")"
    model = linear(tmp_path / "formula.onnx", meta=header(classes=json.dumps(
        [formula, "melanoma"])))
    named = photo(tmp_path / "@SUM(1+1).png", 255).name
    result = invoke("predict", "-c", model, named, "-f", "csv", "-j", "0", "--threshold", "1")
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["path"] == "'@SUM(1+1).png" and row["prediction"] == "'" + formula
    result = invoke("predict", "-c", model, named, "-f", "jsonl", "-j", "0", "--threshold", "1")
    record = json.loads(result.stdout)
    assert record["path"] == named and record["prediction"] == formula


def test_hostile_checkpoint_metadata_is_refused(invoke, tiny_checkpoint, tmp_path, photos):
    """The same metadata in an attnmel .safetensors checkpoint."""
    tensors, base = read_tensors(tiny_checkpoint)
    for name, (changes, field) in HOSTILE_META.items():
        if "image_size" in changes:  # the tiny checkpoint is at 64 px as the ONNX models are
            changes = {**changes, "preprocessing": "{}"}
        path = write_tensors(tmp_path / f"{name}.safetensors", tensors, {**base, **changes})
        line = one_line(invoke("predict", "-c", path, photos[0], "-j", "0"), path, field)
        assert "\x1b" not in line and "\x07" not in line


# ── 3. terminal escapes ───────────────────────────────────────────────────────────────────────


def test_control_characters_never_reach_the_terminal(invoke, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # short relative names: the table does not wrap them
    model = linear(tmp_path / "ok.onnx")
    shown = photo(Path("\x1b[2J\x1b]0;pwned\x07.png"), 255)
    missing = Path("\x1b[31mred\rfake.png")
    for fmt in ("table", "csv"):
        result = invoke("predict", "-c", model, shown, missing, "-f", fmt, "-j", "0")
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "\\x1b[31mred\\rfake.png" in errors[0], errors
        assert "\x1b" not in result.stderr and "\r" not in result.stderr
        if fmt == "table":
            assert "\x1b" not in result.stdout and "\\x1b[2J\\x1b]0;pwned\\x07" in result.stdout


# ── minor: the file's own digest ──────────────────────────────────────────────────────────────


def test_a_changed_model_does_not_match_its_recorded_digest(invoke, tmp_path, photos) -> None:
    model = linear(tmp_path / "m.onnx")
    write_digest(model)
    assert digest_mismatch(model) is None
    assert invoke("predict", "-c", model, photos[0], "-j", "0").exit_code == 0
    data = bytearray(model.read_bytes())
    where = data.index(np.float32(0.1).tobytes())  # a weight of W: a flipped byte still parses
    data[where] ^= 0x40
    model.write_bytes(bytes(data))
    one_line(invoke("predict", "-c", model, photos[0], "-j", "0"), model, "SHA-256",
             "m.onnx.sha256")


def test_the_shipped_onnx_matches_its_recorded_digest() -> None:
    assert (WEIGHTS / f"{DEFAULT_ONNX_NAME}.sha256").is_file()
    assert digest_mismatch(WEIGHTS / DEFAULT_ONNX_NAME) is None
