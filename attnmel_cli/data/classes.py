"""What a model is trained to tell apart (``attnmel train --classes SPEC``) and the class index
of each prepared image.

Specs:
- ``melanoma`` (the default): the paper's two outputs, ``other`` and ``melanoma``, from the
  manifest's ``label``.
- ``isic2017``: ``melanoma``, ``seborrheic_keratosis``, ``nevus`` (ISIC 2017 Part 3).
- ``diagnosis``: every diagnosis of the training images, in order of first appearance by image id
  (e.g. the eight ISIC 2019 classes).
- ``A,B,C``: those diagnoses; an image of any other diagnosis is refused, unless the list ends
  with ``other``, which then takes them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from attnmel_cli.errors import DataError
from attnmel_cli.models.names import CLASSES, MELANOMA_NAMES, class_problems, is_binary

ISIC2017_CLASSES = ("melanoma", "seborrheic_keratosis", "nevus")
OTHER = "other"


class Labelled(Protocol):
    """What :func:`class_labels` reads of a manifest row or of an image ``evaluate`` scores."""

    @property
    def image_id(self) -> str: ...

    @property
    def label(self) -> int: ...

    @property
    def diagnosis(self) -> str: ...


def resolve_classes(spec: str, rows: Sequence[Labelled]) -> tuple[str, ...]:
    """The class list of ``spec`` for the training ``rows`` (see the module docstring)."""
    if spec == "melanoma":
        return CLASSES
    if spec == "isic2017":
        classes: tuple[str, ...] = ISIC2017_CLASSES
    elif spec == "diagnosis":
        seen = dict.fromkeys(r.diagnosis for r in sorted(rows, key=lambda r: r.image_id))
        if "" in seen:
            raise DataError("--classes diagnosis: some training images have no diagnosis in the "
                            "manifest")
        classes = tuple(seen)
    else:
        classes = tuple(c.strip() for c in spec.split(","))
    problems = class_problems(classes)
    if problems:
        raise DataError(f"--classes {spec}: " + "; ".join(problems))
    return classes


def class_labels(rows: Sequence[Labelled], classes: Sequence[str], where: str = "") -> np.ndarray:
    """Class index (n,) int64 of each row: the binary ``label`` for the binary classes, the
    diagnosis' index otherwise (``other`` for an unlisted diagnosis where the list has it)."""
    if is_binary(classes):
        return np.array([r.label for r in rows], dtype=np.int64)
    index = {c: i for i, c in enumerate(classes)}
    other = index.get(OTHER) if classes[-1] == OTHER else None
    labels, unknown = [], {}
    for r in rows:
        i = index.get(r.diagnosis, other)
        if i is None:
            unknown.setdefault(r.diagnosis or "(none)", r.image_id)
            continue
        if (classes[i] in MELANOMA_NAMES) != bool(r.label):
            raise DataError(f"{where}{r.image_id}: diagnosis {r.diagnosis!r} disagrees with "
                            f"its melanoma label {r.label}")
        labels.append(i)
    if unknown:
        listed = ", ".join(f"{d} (e.g. {i})" for d, i in sorted(unknown.items()))
        raise DataError(f"{where}diagnoses outside --classes {','.join(classes)}: {listed}; "
                        "list them, or end the list with 'other'")
    return np.array(labels, dtype=np.int64)


def class_weights(spec: str, labels: np.ndarray, k: int) -> tuple[float, ...] | None:
    """``--class-weights``: ``none`` (None), ``balanced`` (n / (k·n_c) over ``labels``, the
    classes as sampled) or ``W1,…,Wk``."""
    if spec == "none":
        return None
    if spec == "balanced":
        counts = np.bincount(labels, minlength=k)
        if (counts == 0).any():
            raise DataError(f"--class-weights balanced: class {int(np.argmin(counts))} has no "
                            "training image")
        return tuple(float(v) for v in len(labels) / (k * counts))
    try:
        weights = tuple(float(v) for v in spec.split(","))
    except ValueError:
        weights = ()
    if len(weights) != k or min(weights) < 0 or not any(weights):
        raise DataError(f"--class-weights {spec!r}: give none, balanced or {k} non-negative "
                        "numbers, one per class")
    return weights
