"""The command line at its edges: a reader that closes the pipe early, mistakes reported before
torch loads (``prepare`` never loads it), and ``--help`` that reads cleanly at 80 columns."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from attnmel_cli.cli import app

pytestmark = pytest.mark.usefixtures("restore_logging")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_ONNX = REPO / "weights" / "attnmel-default.onnx"
# Typer's type placeholders (<bool>, <list[str]>, <int range>…) and required-argument braces.
JUNK = re.compile(r"<(?:bool|str|int|float|path|file|directory|list\[[^\]]*\]|\w+ range)>"
                  r"|\{\w+\}|``|`")


# ── a closed stdout ends the run quietly ───────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Sixty small photos: enough records that predict writes after ``head`` has gone."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("many")
    paths = []
    for i in range(60):
        path = folder / f"p{i:02d}.png"
        Image.new("RGB", (64, 64), (40 + i, 90, 160 - i)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("model", ["onnx", "pytorch"])
def test_predict_into_head_exits_quietly_under_pipefail(
    model: str, many_photos: list[Path], tiny_checkpoint: Path
) -> None:
    if model == "onnx":
        pytest.importorskip("onnxruntime")
        if not DEFAULT_ONNX.is_file():
            pytest.skip(f"no ONNX export of the default model ({DEFAULT_ONNX})")
    checkpoint = DEFAULT_ONNX if model == "onnx" else tiny_checkpoint
    command = (f"{shlex.quote(sys.executable)} -m attnmel_cli predict {many_photos[0].parent} "
               f"-c {shlex.quote(str(checkpoint))} -b 1 -f csv | head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode in (0, 141), done.stderr
    assert done.stdout == "path,p_melanoma,prediction,checkpoint,error\n"
    assert "Traceback" not in done.stderr and "error" not in done.stderr.lower(), done.stderr


# ── mistakes before torch; prepare without it ─────────────────────────────────────────────────

_NO_TORCH = """
import sys
from attnmel_cli.cli import main
for args in {cases!r}:
    sys.argv = ["attnmel", *args]
    try:
        main()
    except SystemExit as exc:
        print("exit", exc.code)
print("torch loaded:", "torch" in sys.modules)
"""


def test_mistakes_are_reported_before_torch_loads(tmp_path: Path) -> None:
    """A missing or foreign checkpoint, a mistyped --data, an unknown --format: one line each,
    exit 1, and torch never imported (bench/bench_startup.py times them)."""
    foreign = tmp_path / "model.safetensors"
    foreign.write_bytes(b"not a safetensors file")
    photo = str(REPO / "examples" / "ISIC_0000279.jpg")
    cases = [
        ["predict", photo, "-c", str(tmp_path / "missing.safetensors")],
        ["predict", photo, "-c", str(foreign)],
        ["predict", photo, "-f", "xml", "-c", str(foreign)],
        ["evaluate", "--data", str(tmp_path / "no-such-dir")],  # the default model
        ["evaluate", "--data", str(tmp_path), "-f", "xml"],
        ["explain", photo, "-o", str(tmp_path / "x"), "-c", str(foreign)],
        ["export", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "m.onnx")],
    ]
    done = subprocess.run([sys.executable, "-c", _NO_TORCH.format(cases=cases)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.stdout.splitlines() == ["exit 1"] * len(cases) + ["torch loaded: False"], \
        done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == len(cases) and all(line.startswith("error: ") for line in lines)
    for needle in ("missing.safetensors: checkpoint not found", "not a safetensors file",
                   "unknown --format 'xml'", "no-such-dir", "unknown --format 'xml'",
                   "not a safetensors file", "missing.safetensors: checkpoint not found"):
        assert needle in lines.pop(0)


def test_prepare_never_imports_torch_and_prints_its_table_on_stderr(
    labelled: Path, tmp_path: Path
) -> None:
    code = (
        "import sys\nfrom attnmel_cli.cli import main\n"
        f"sys.argv = ['attnmel', 'prepare', {str(labelled)!r}, '-o', {str(tmp_path / 'p')!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "sys.stderr.write(f'torch loaded: {\"torch\" in sys.modules}, exit {code}\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.stderr.rstrip().endswith("torch loaded: False, exit 0"), done.stderr
    assert done.stdout == ""  # the summary table and the logs: stderr
    assert "melanoma" in done.stderr and "images" in done.stderr


# ── --help at 80 columns ──────────────────────────────────────────────────────────────────────


def _commands() -> dict[str, object]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["predict", "explain", "evaluate", "prepare", "export", "train"])
def test_help_at_80_columns_shows_every_option_whole_and_clean(invoke, name: str) -> None:
    result = invoke(name, "--help", env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert max(map(len, text.splitlines())) <= 80
    assert not JUNK.search(text), JUNK.search(text)
    for param in _commands()[name].params:  # type: ignore[attr-defined]
        for flag in [*param.opts, *param.secondary_opts]:
            if flag.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (name, flag)
