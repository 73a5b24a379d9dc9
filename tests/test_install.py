"""attnmel as a user installs it: a wheel (no editable link to this checkout) finds the models it
ships and scores the bundled examples as the checkout does, whatever the install (a virtual
environment, ``pip install --user``, ``pip install --target``, uv); ``--version`` is the wheel's;
and README's quick-start commands run as written against that installation."""

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

from attnmel_cli import __version__
from attnmel_cli.deploy.session import onnx_copy

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.jpg"))
SHIPPED = sorted(p.name for p in (REPO / "weights").iterdir() if p.is_file())
# What the quick start does besides running attnmel: make and enter a venv, install.
INSTALL_STEPS = re.compile(r"python3? -m venv \S+|\. \S+/bin/activate|pip install .+")
# Prints the imported package's file, then where each shipped file named in argv was found.
LOCATE = ("import sys, attnmel_cli; from attnmel_cli.io.shipped import shipped_file; "
          "print(attnmel_cli.__file__); [print(shipped_file(n)) for n in sys.argv[1:]]")
# This environment's packages (torch…): the installs below use them, installing no dependency.
DEPENDENCIES = list(dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib")))

pytestmark = pytest.mark.usefixtures("restore_logging")


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built once for every install below."""
    root = tmp_path_factory.mktemp("wheel")
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
    (found,) = (root / "dist").glob("attnmel-*.whl")
    return found


def _with_dependencies(site: Path) -> None:
    """Make this environment's packages importable in the environment of ``site``."""
    (site / "dependencies.pth").write_text("\n".join(DEPENDENCIES) + "\n")  # plain paths


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding attnmel installed from the wheel; its dependencies
    (torch…) are this environment's, on the path after its own."""
    env = tmp_path_factory.mktemp("install") / "venv"
    assert _run(sys.executable, "-m", "venv", env).returncode == 0
    python = env / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())
    _with_dependencies(site)
    return env


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point attnmel elsewhere."""
    drop = ("ATTNMEL_CHECKPOINT", "PYTHONPATH", "PYTHONUSERBASE", "PYTHONNOUSERSITE",
            "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("OMP_NUM_THREADS", "1")  # as the in-process runs (conftest.py): same digits
    return {**env, **extra}


def _env(venv: Path) -> dict[str, str]:
    """The installed environment, as its activate script sets it; no default-model override."""
    return _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                      VIRTUAL_ENV=str(venv))


def _assert_ships(python: str | Path, root: Path, env: dict[str, str], cwd: Path) -> None:
    """The package ``python`` imports and every shipped file it finds are under ``root`` (the
    install), byte for byte the checkout's ``weights/``."""
    where = _run(python, "-c", LOCATE, *SHIPPED, cwd=cwd, env=env)  # cwd: not the checkout
    assert where.returncode == 0, where.stderr
    package, *found = where.stdout.split("\n")[: len(SHIPPED) + 1]
    assert Path(package).is_relative_to(root), (package, root)
    for name, path in zip(SHIPPED, found, strict=True):
        assert path != "None", f"{name} not found in the install at {root}"
        assert Path(path).is_relative_to(root), (name, path)
        assert Path(path).read_bytes() == (REPO / "weights" / name).read_bytes(), name


def _scores(command: list[str | Path], env: dict[str, str], cwd: Path, *extra: str | Path,
            ) -> list[dict[str, str]]:
    done = _run(*command, "predict", REPO / "examples" / EXAMPLES[3], "-f", "csv", "-j", "0",
                *extra, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


def _assert_scores_as_the_checkout(command: list[str | Path], env: dict[str, str], cwd: Path,
                                   invoke) -> None:
    """The default model (its ONNX export where ONNX Runtime serves) and the shipped three-class
    model named by its file name alone score one example as the checkout does."""
    for extra in ((), ("-c", "attnmel-isic2017-3class.safetensors")):
        installed = _scores(command, env, cwd, *extra)
        checkout = invoke("predict", REPO / "examples" / EXAMPLES[3], "-f", "csv", "-j", "0",
                          *(REPO / "weights" / e if e.endswith("tensors") else e for e in extra))
        assert checkout.exit_code == 0, checkout.output
        assert installed == list(csv.DictReader(io.StringIO(checkout.stdout)))
        ckpt = REPO / "weights" / (extra[1] if extra else "attnmel-default.safetensors")
        scored_by = (onnx_copy(ckpt, "auto") or ckpt).name  # ONNX Runtime where it serves
        assert {r["checkpoint"] for r in installed} == {scored_by}


def test_weights_holds_what_ships_and_nothing_else() -> None:
    """pyproject's data files are weights/, file for file (the 0.1 model is test data)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[tool.setuptools.data-files]", 1)[1].split("\n[", 1)[0]
    listed = re.findall(r'"weights/([^"]+)"', section)
    assert sorted(listed) == SHIPPED


def test_a_wheel_ships_the_default_model_and_scores_the_examples_as_the_checkout(
    venv: Path, tmp_path: Path, invoke
) -> None:
    _assert_ships(venv / "bin" / "python", venv, _env(venv), tmp_path)
    installed = _run("attnmel", "predict", REPO / "examples", "-f", "csv", "-j", "0",
                     cwd=tmp_path, env=_env(venv))
    assert installed.returncode == 0, installed.stderr
    checkout = invoke("predict", REPO / "examples", "-f", "csv", "-j", "0")
    assert checkout.exit_code == 0, checkout.output
    rows = list(csv.DictReader(io.StringIO(installed.stdout)))
    assert [Path(r["path"]).name for r in rows] == EXAMPLES
    default = REPO / "weights" / "attnmel-default.safetensors"
    scored_by = (onnx_copy(default, "auto") or default).name  # ONNX Runtime where it serves
    assert {r["checkpoint"] for r in rows} == {scored_by}
    assert installed.stdout == checkout.stdout  # the same scores, to the last digit
    _assert_scores_as_the_checkout(["attnmel"], _env(venv), tmp_path, invoke)


def test_version_is_the_wheels(venv: Path, wheel: Path, tmp_path: Path) -> None:
    """One version, written in attnmel_cli/__init__.py: the wheel's, ``--version``'s and the
    latest release of CHANGELOG.md."""
    assert wheel.name.startswith(f"attnmel-{__version__}-")
    shown = _run("attnmel", "--version", cwd=tmp_path, env=_env(venv))
    assert shown.returncode == 0 and shown.stdout.strip() == f"attnmel {__version__}"
    released = re.search(r"^## \[(\d[^\]]*)\]", (REPO / "CHANGELOG.md").read_text("utf-8"),
                         flags=re.MULTILINE)
    assert released is not None and released[1] == __version__


def test_pip_install_target(wheel: Path, tmp_path: Path, invoke) -> None:
    """``pip install --target DIR``, run with DIR on PYTHONPATH: the shipped files are found
    beside the package (pip moves them there from where its RECORD says)."""
    target = tmp_path / "target"
    done = _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                "--target", target, wheel)
    assert done.returncode == 0, done.stderr
    env = _clean_env(PYTHONPATH=str(target))
    _assert_ships(sys.executable, target, env, tmp_path)
    _assert_scores_as_the_checkout([sys.executable, "-m", "attnmel_cli"], env, tmp_path, invoke)


def test_pip_install_user(wheel: Path, tmp_path: Path, invoke) -> None:
    """``pip install --user`` (the base interpreter, with ``PYTHONUSERBASE`` a temporary folder;
    pip refuses --user inside a virtual environment)."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    if sys.flags.no_user_site or _run(base, "-m", "pip", "--version").returncode != 0:
        pytest.skip(f"{base} has no pip or no user site-packages: no --user install to test")
    user = tmp_path / "user"
    done = _run(base, "-m", "pip", "install", "--user", "--no-deps", "--no-index", "-q",
                "--no-warn-script-location", "--root-user-action=ignore", wheel,
                env=_clean_env(PYTHONUSERBASE=str(user)))
    assert done.returncode == 0, done.stderr
    # this environment's packages first (the base interpreter's may be other versions)
    env = _clean_env(PYTHONUSERBASE=str(user), PYTHONPATH=os.pathsep.join(DEPENDENCIES))
    _assert_ships(base, user, env, tmp_path)
    _assert_scores_as_the_checkout([base, "-m", "attnmel_cli"], env, tmp_path, invoke)


def _uv() -> str:
    found = shutil.which("uv")
    if found is None and importlib.util.find_spec("uv") is not None:
        import uv  # the uv wheel's binary, where uv is installed as a Python package

        found = uv.find_uv_bin()
    if found is None:
        pytest.skip("uv is not installed (pip install uv): no uv install to test")
    return found


@pytest.mark.parametrize("mode", ["venv", "target"])
def test_uv_pip_install(wheel: Path, tmp_path: Path, invoke, mode: str) -> None:
    """``uv pip install`` into a uv virtual environment, or with ``--target DIR``."""
    uv = _uv()
    env = _clean_env(UV_CACHE_DIR=str(tmp_path / "uv-cache"), UV_NO_CONFIG="1")
    root = tmp_path / mode
    if mode == "venv":
        made = _run(uv, "venv", "-q", "--python", sys.executable, root, env=env)
        assert made.returncode == 0, made.stderr
        into = ["--python", root / "bin" / "python"]
    else:
        into = ["--python", sys.executable, "--target", root]
    done = _run(uv, "pip", "install", "-q", "--no-deps", "--offline", *into, wheel, env=env)
    assert done.returncode == 0, done.stderr
    if mode == "venv":
        python = root / "bin" / "python"
        (site,) = root.glob("lib/python*/site-packages")
        _with_dependencies(site)
        run_env = _env(root)
        command: list[str | Path] = [root / "bin" / "attnmel"]
    else:
        python, run_env = Path(sys.executable), _clean_env(PYTHONPATH=str(root))
        command = [sys.executable, "-m", "attnmel_cli"]
    _assert_ships(python, root, run_env, tmp_path)
    _assert_scores_as_the_checkout(command, run_env, tmp_path, invoke)


def test_pipx_is_a_venv_install() -> None:
    """pipx installs into a virtual environment of its own (the first test's install) and links
    the script; it always installs the dependencies too (torch and its CUDA libraries from the
    package index: gigabytes), so it is not run here."""
    pytest.skip("pipx installs torch from the package index (gigabytes); its install is a venv "
                "install with a linked script, tested above")


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
    assert set(steps[1:]) <= {"ruff check .", "lint-imports", "pytest"}, steps  # run by CI
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


def test_ci_runs_readme_test_command() -> None:
    """.ci/run does what README's second quick-start command says, step for step."""
    _, commands = _quick_start()
    scoring = next(i for i, c in enumerate(commands) if c.startswith("attnmel predict"))
    readme = commands[scoring + 1:]
    assert readme[-3:] == ["ruff check .", "lint-imports", "pytest"], readme
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci = [line.strip().replace(" --quiet", "") for line in lines]
    assert [c for c in ci if c in readme] == readme, (ci, readme)  # in order, none left out


def test_a_wheel_ships_the_html_report_template(venv: Path, tmp_path: Path) -> None:
    found = _run(venv / "bin" / "python", "-c",
                 "import jinja2; "
                 "loader = jinja2.PackageLoader('attnmel_cli.evaluation', 'templates'); "
                 "print(loader.get_source(jinja2.Environment(), 'report.html.j2')[1])",
                 cwd=tmp_path, env=_env(venv))
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(venv), found.stdout
