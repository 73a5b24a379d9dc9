"""Where the files attnmel ships (the models in ``weights/`` and their cards) are: a checkout's
``weights/``, or wherever the installer put the distribution's data files, read from the
distribution's own file list (``importlib.metadata``), whatever the install: a virtual
environment, ``pip install --user``, ``pip install --target DIR``, pipx, uv."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePosixPath

DISTRIBUTION = "attnmel"
# Where pyproject.toml's [tool.setuptools.data-files] installs weights/, under the data root.
DATA_FOLDER = PurePosixPath("share", "attnmel", "weights")
PACKAGE = Path(__file__).resolve().parents[1]  # attnmel_cli/
CHECKOUT_WEIGHTS = PACKAGE.parent / "weights"  # a checkout's or an editable install's


def shipped_file(name: str) -> Path | None:
    """The shipped file ``name`` (for example ``attnmel-default.safetensors``): in the source
    tree's ``weights/`` beside the imported package, else among the installed distribution's
    data files; None when neither holds it."""
    if (CHECKOUT_WEIGHTS / name).is_file():
        return CHECKOUT_WEIGHTS / name
    return next((p for p in _installed_candidates(name) if p.is_file()), None)


def _installed_candidates(name: str) -> Iterator[Path]:
    for dist in _distributions():
        for entry in dist.files or ():
            if entry.name != name or not _under_data_folder(entry):
                continue
            yield Path(str(dist.locate_file(entry)))
            # pip install --target DIR records data files relative to the temporary prefix it
            # installed into (../../share/…) but moves them into DIR itself, beside the package.
            yield Path(str(dist.locate_file(PurePosixPath(*(p for p in entry.parts if p != "..")))))


def _under_data_folder(entry: PurePosixPath) -> bool:
    parts = entry.parent.parts
    return parts[-len(DATA_FOLDER.parts):] == DATA_FOLDER.parts


def _distributions() -> list[metadata.Distribution]:
    """The installed ``attnmel`` distributions on ``sys.path``: the one that holds the imported
    package first (or alone), else all, in path order."""
    found = list(metadata.distributions(name=DISTRIBUTION))
    own = [d for d in found if _holds_this_package(d)]
    return own or found


def _holds_this_package(dist: metadata.Distribution) -> bool:
    try:
        init = Path(str(dist.locate_file("attnmel_cli/__init__.py"))).resolve()
    except (OSError, ValueError):
        return False
    return init == PACKAGE / "__init__.py"
