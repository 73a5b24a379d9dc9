"""Untrusted files through the command line: checkpoints are never unpickled, broken ones are
refused in one line, and paths from stdin or label files are data, never shell code.

(tests/test_checkpoint.py covers the same refusals at the function level.)
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch

from attnmel_cli.io.default_model import DEFAULT_CHECKPOINT_ENV

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")

pytestmark = pytest.mark.usefixtures("restore_logging")


# ── checkpoints that would run code when unpickled ────────────────────────────────────────────


class _Payload:
    """Unpickling this creates ``marker``: proof that pickled code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """The same malicious payload as a raw pickle and as torch.save's zip, under every
    extension a user might pass; and the marker file its unpickling would create."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "pwned"
    payload = {"state_dict": {"w": torch.zeros(1)}, "x": _Payload(str(marker))}
    files = []
    for suffix in CHECKPOINT_SUFFIXES:
        raw = root / f"raw-pickle{suffix}"
        raw.write_bytes(pickle.dumps(payload))
        zipped = root / f"torch-save{suffix}"
        torch.save(payload, zipped)
        files += [raw, zipped]
    assert not marker.exists()
    return files, marker


def _refused(result, path: Path) -> str:
    """Exit 1 and one line naming the file; returns that line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert str(path) in line
    return line


def test_pickled_checkpoints_are_refused_and_never_run(
    evil: tuple[list[Path], Path], labelled: Path, tmp_path: Path, tiny_checkpoint: Path, invoke
) -> None:
    files, marker = evil
    photo = labelled / "p0.jpg"
    for path in files:
        for args in (
            ["predict", photo, "-c", path, "-j", "0"],
            ["explain", photo, "-c", path, "-j", "0", "-o", tmp_path / "explained"],
            ["evaluate", "--data", labelled, "-c", path, "-j", "0", "--bootstrap", "0"],
        ):
            line = _refused(invoke(*args), path)
            assert "never unpickles" in line, line
        assert not marker.exists(), path
    # the same through --compare, and as the default model named by $ATTNMEL_CHECKPOINT
    line = _refused(invoke("evaluate", "--data", labelled, "-c", tiny_checkpoint, "-j", "0",
                           "--bootstrap", "0", "--compare", files[1]), files[1])
    assert "never unpickles" in line
    line = _refused(invoke("predict", photo, "-j", "0",
                           env={DEFAULT_CHECKPOINT_ENV: str(files[0])}), files[0])
    assert "never unpickles" in line
    assert not marker.exists()
    assert not (tmp_path / "explained").exists() or not any((tmp_path / "explained").iterdir())


def _header(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return size, json.loads(data[8 : 8 + size])


def _with_header(path: Path, target: Path, header: dict) -> Path:
    """``path`` with its JSON header replaced (tensor data kept as is)."""
    size, _ = _header(path)
    data = path.read_bytes()
    text = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    return target


def test_broken_and_tampered_checkpoints_are_refused(
    tiny_checkpoint: Path, labelled: Path, tmp_path: Path, invoke
) -> None:
    data = tiny_checkpoint.read_bytes()
    size, header = _header(tiny_checkpoint)
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, content: bytes, expected: str) -> None:
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        cases[name] = (path, expected)

    case("empty", b"", "not a safetensors file")
    case("header-only", data[: 8 + size], "not a safetensors file")
    case("truncated", data[: len(data) // 2], "not a safetensors file")
    case("length-lies", struct.pack("<Q", 10**12) + data[8:], "not a safetensors file")
    case("text", b"just some text, not a checkpoint\n", "not a safetensors file")
    meta = dict(header["__metadata__"])
    for name, change, expected in (
        ("no-format", {"format": "something-else"}, "not an attnmel checkpoint"),
        ("arch", {"arch": "resnet"}, "unknown arch"),
        ("width", {"width": "0.5"}, "tensors do not match its metadata"),
        ("image-size", {"image_size": "100"}, "image_size 100"),
        ("newer", {"format_version": "99"}, "newer than this attnmel"),
        ("bad-json", {"mean": "[0.4, "}, "invalid attnmel checkpoint metadata"),
    ):
        path = _with_header(tiny_checkpoint, tmp_path / f"{name}.safetensors",
                            {**header, "__metadata__": {**meta, **change}})
        cases[name] = (path, expected)
    (name, entry), *_ = [(k, v) for k, v in header.items() if k != "__metadata__"]
    reshaped = {**header, name: {**entry, "shape": [*entry["shape"], 1]}}
    cases["reshaped"] = (_with_header(tiny_checkpoint, tmp_path / "reshaped.safetensors",
                                      reshaped), "tensors do not match its metadata")
    photo = labelled / "p0.jpg"
    for name, (path, expected) in cases.items():
        line = _refused(invoke("predict", photo, "-c", path, "-j", "0"), path)
        assert expected in line, (name, line)
    # explain and evaluate load checkpoints the same way: one case each
    path, expected = cases["truncated"]
    assert expected in _refused(invoke("explain", photo, "-c", path, "-o", tmp_path / "x"), path)
    assert expected in _refused(invoke("evaluate", "--data", labelled, "-c", path, "-j", "0"),
                                path)


# ── paths are data, never shell code ──────────────────────────────────────────────────────────

HOSTILE = (
    "$(touch {marker}-dollar).jpg",
    "`touch {marker}-backtick`.jpg",
    "x.jpg; rm -rf {victim}",
    "x.jpg | touch {marker}-pipe",
    "x.jpg && touch {marker}-and",
    "'; touch {marker}-quote; '.jpg",
)


@pytest.fixture
def shell_bait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path, Path]:
    """Hostile paths (not existing), a marker prefix and a victim folder; cwd is ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    marker = tmp_path / "marker"
    paths = [h.format(marker=marker, victim=victim) for h in HOSTILE]
    return paths, marker, victim


def _untouched(marker: Path, victim: Path) -> None:
    assert not list(marker.parent.glob(f"{marker.name}*")), "a shell ran"
    assert (victim / "keep.txt").read_text() == "keep"


def test_paths_on_stdin_are_never_given_to_a_shell(
    shell_bait: tuple[list[str], Path, Path], tiny_checkpoint: Path, tmp_path: Path, invoke,
    make_photo,
) -> None:
    paths, marker, victim = shell_bait
    # real files named like shell code are scored like any other file
    named = make_photo(tmp_path / "$(touch marker-real) `x` ; rm -rf victim.jpg", 9)
    stdin = "\n".join([*paths, str(named)]) + "\n"
    result = invoke("predict", "-", "-c", tiny_checkpoint, "-f", "jsonl", "-j", "0",
                    "--overlay-dir", tmp_path / "overlays", stdin=stdin)
    assert result.exit_code == 2, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [*paths, str(named)]
    for rec in records[:-1]:
        assert "no such file" in rec["error"], rec
    assert "error" not in records[-1] and 0 <= records[-1]["p_melanoma"] <= 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {p}: no such file" for p in paths]
    result = invoke("explain", "-", "-c", tiny_checkpoint, "-j", "0", "-o", tmp_path / "x",
                    stdin=stdin)
    assert result.exit_code == 2 and result.stdout.startswith(str(named))
    _untouched(marker, victim)


def test_paths_in_label_files_are_never_given_to_a_shell(
    shell_bait: tuple[list[str], Path, Path], tiny_checkpoint: Path, labelled: Path,
    tmp_path: Path, invoke, make_photo,
) -> None:
    paths, marker, victim = shell_bait
    src = tmp_path / "src"
    shutil.copytree(labelled, src)
    named = make_photo(src / "$(touch marker-real) `x` ; rm -rf victim.jpg", 9)
    with (src / "labels.csv").open("a") as fh:
        fh.write(f'"{named.name}",1\n')
    result = invoke("evaluate", "--data", src, "-c", tiny_checkpoint, "-j", "0",
                    "--bootstrap", "0", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoints"][0]["n_images"] == 7
    with (src / "labels.csv").open("a") as fh:
        for path in paths:
            fh.write('"{}",0\n'.format(path.replace('"', '""')))
    for args in (["evaluate", "--data", src, "-c", tiny_checkpoint, "-j", "0"],
                 ["prepare", src, "--out", tmp_path / "prepared"]):
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "label without image" in result.stderr, result.stderr
    _untouched(marker, victim)
    assert not os.path.exists(tmp_path / "prepared" / "manifest.csv")
