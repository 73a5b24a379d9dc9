"""attnmel as a user installs it: a wheel (no editable link to this checkout) finds the default
model it ships and scores the bundled examples as the checkout does, and README's quick-start
commands run as written against that installation."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from attnmel_cli.io.default_model import onnx_default

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.jpg"))
# What the quick start does besides running attnmel: make and enter a venv, install.
INSTALL_STEPS = re.compile(r"python3? -m venv \S+|\. \S+/bin/activate|pip install .+")

pytestmark = pytest.mark.usefixtures("restore_logging")


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding attnmel installed from a wheel built from this
    checkout; its dependencies (torch…) are this environment's, on the path after its own."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in ("attnmel_cli", "weights"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *offline,
                 "-w", root / "dist", src)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("attnmel-*.whl")
    env = root / "venv"
    assert _run(sys.executable, "-m", "venv", env).returncode == 0
    python = env / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())
    paths = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (site / "dependencies.pth").write_text("\n".join(paths) + "\n")  # plain paths, no .pth run
    return env


def _env(venv: Path) -> dict[str, str]:
    """The installed environment, as its activate script sets it; no default-model override."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNMEL_CHECKPOINT", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.setdefault("OMP_NUM_THREADS", "1")  # as the in-process runs (conftest.py): same digits
    return env


def test_a_wheel_ships_the_default_model_and_scores_the_examples_as_the_checkout(
    venv: Path, tmp_path: Path, invoke
) -> None:
    where = _run(venv / "bin" / "python", "-c",
                 "import attnmel_cli; from attnmel_cli.io.default_model import default_checkpoint; "
                 "print(attnmel_cli.__file__); print(default_checkpoint()); "
                 "print(default_checkpoint(onnx=True))",
                 cwd=tmp_path, env=_env(venv))  # not the checkout: python -c imports from cwd
    package, *models = (Path(line) for line in where.stdout.split())
    assert [m.name for m in models] == ["attnmel-default.safetensors", "attnmel-default.onnx"]
    for model in models:  # the checkpoint and its ONNX export, both shipped
        assert package.is_relative_to(venv) and model.is_relative_to(venv), where.stdout
        assert model.read_bytes() == (REPO / "weights" / model.name).read_bytes()
    installed = _run("attnmel", "predict", REPO / "examples", "-f", "csv", "-j", "0",
                     cwd=tmp_path, env=_env(venv))
    assert installed.returncode == 0, installed.stderr
    checkout = invoke("predict", REPO / "examples", "-f", "csv", "-j", "0")
    assert checkout.exit_code == 0, checkout.output
    rows = list(csv.DictReader(io.StringIO(installed.stdout)))
    assert [Path(r["path"]).name for r in rows] == EXAMPLES
    scored_by = "attnmel-default.onnx" if onnx_default("auto") else "attnmel-default.safetensors"
    assert {r["checkpoint"] for r in rows} == {scored_by}  # ONNX Runtime where it serves
    assert installed.stdout == checkout.stdout  # the same scores, to the last digit


def _quick_start() -> tuple[str, list[str]]:
    """README's "Quick start" section: its text and the commands of its code blocks."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return section, [c.strip() for block in blocks for c in block.split("&&") if c.strip()]


def test_readme_quick_start_runs_as_written(venv: Path, tmp_path: Path) -> None:
    section, commands = _quick_start()
    steps = [c for c in commands if not INSTALL_STEPS.fullmatch(c)]
    assert steps[0].startswith("attnmel predict"), commands  # the scoring command comes first
    assert set(steps[1:]) <= {"ruff check .", "pytest"}, steps  # the test suite: run by CI
    inline = re.findall(r"`(attnmel [^`]+)`", section)  # e.g. the explain command of the text
    (tmp_path / "examples").symlink_to(REPO / "examples")  # run from a checkout's root
    results = [_run(*shlex.split(c), cwd=tmp_path, env=_env(venv)) for c in [steps[0], *inline]]
    for command, result in zip([steps[0], *inline], results, strict=True):
        assert result.returncode == 0, (command, result.stderr)
    scored = list(csv.DictReader(io.StringIO(results[0].stdout)))
    assert [Path(r["path"]).name for r in scored] == EXAMPLES
    promised = re.search(r"CSV with the columns\s+`([a-z_,]+)`", section)
    assert promised is not None, "README no longer names the record's fields"
    assert results[0].stdout.splitlines()[0] == promised[1]
    for name in EXAMPLES:
        assert (tmp_path / "overlays" / f"{Path(name).stem}_attention.png").is_file()
    assert any(c.startswith("attnmel explain") for c in inline)
    assert (tmp_path / "explained" / "ISIC_0000279_composite.png").is_file()


def test_a_wheel_ships_the_html_report_template(venv: Path, tmp_path: Path) -> None:
    found = _run(venv / "bin" / "python", "-c",
                 "import jinja2; "
                 "loader = jinja2.PackageLoader('attnmel_cli.evaluation', 'templates'); "
                 "print(loader.get_source(jinja2.Environment(), 'report.html.j2')[1])",
                 cwd=tmp_path, env=_env(venv))
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(venv), found.stdout
