"""The names a checkpoint's metadata may hold for its model: the variants (``arch``) and the
classes, importable without torch (checkpoint metadata is read by ONNX scoring too)."""

from __future__ import annotations

from collections.abc import Sequence

ARCHS = ("attnmel", "mel-cnn", "vgg16-gap", "vgg16")
CLASSES = ("other", "melanoma")  # the binary model: index 1 is the melanoma probability
# The melanoma class of a multi-class model, by the name its labels give it (ISIC 2016/2017:
# ``melanoma``; ISIC 2018/2019 one-hot files: ``MEL``).
MELANOMA_NAMES = ("melanoma", "MEL")
# The maps each variant returns beside its logits (``forward``'s second output).
MAPS: dict[str, tuple[str, ...]] = {"attnmel": ("pool3", "pool4"), "vgg16-gap": ("cam",)}
MAX_NAME = 64  # characters of a class name


def is_binary(classes: Sequence[str]) -> bool:
    """Whether ``classes`` are the paper's two, ``other`` and ``melanoma`` (in that order)."""
    return tuple(classes) == CLASSES


def melanoma_index(classes: Sequence[str]) -> int:
    """Index of the melanoma class in a checkpoint's ``classes`` (its ``p_melanoma``)."""
    for name in MELANOMA_NAMES:
        if name in classes:
            return list(classes).index(name)
    raise ValueError(f"no melanoma class among {list(classes)}")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a class name (None: it can): a string of 1–:data:`MAX_NAME`
    printable characters (it reaches terminals, CSV files and plots). Shown with ``ascii()``:
    a refused name never puts its control characters on a terminal."""
    if not isinstance(name, str):
        return f"class name {ascii(name)[:80]} is not a string"
    if not name or not name.isprintable() or len(name) > MAX_NAME:
        return f"class name {name[:MAX_NAME + 1]!a} is not 1–{MAX_NAME} printable characters"
    return None


def class_problems(classes: Sequence[str]) -> list[str]:
    """What is wrong with a ``classes`` list (empty: nothing): at least two distinct names
    (:func:`name_problem`), one of them the melanoma class."""
    problems = [p for p in map(name_problem, classes) if p][:1]
    if problems:
        return problems
    if len(classes) < 2:
        problems.append(f"classes {list(classes)}: need at least 2")
    if len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
        problems.append(f"classes {list(classes)}: names must be distinct and non-empty")
    if not any(name in classes for name in MELANOMA_NAMES):
        problems.append(f"classes {list(classes)}: no melanoma class ({'/'.join(MELANOMA_NAMES)})")
    return problems


def class_words(name: str) -> str:
    """A class name for people: ``seborrheic_keratosis`` → ``seborrheic keratosis``."""
    return name.replace("_", " ")
