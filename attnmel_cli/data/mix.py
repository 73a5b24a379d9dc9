"""Training on several prepared dirs: ``attnmel train --data TARGET --data EXTRA …``.

The first dir is the *target*: its val split (or, with ``--folds``, its held-out fold) is what a
run validates on, and only its rows are split into folds. Every further dir adds its train and
val images to training (never its test split), each read with its own preprocessing (the crop
fraction ``prepare`` wrote it with). ``--source-weights name=w,…`` sets the share of each
source's oversampled pool drawn per epoch (a fresh seeded subset each epoch for w < 1; whole
copies plus a subset for w > 1), by the prepared dir's folder name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from attnmel_cli.errors import AttnMelError

EXTRA_SPLITS = ("train", "val")  # what a further source contributes to training


@dataclass(frozen=True)
class TrainSource:
    """One prepared dir of a run, as the checkpoint's ``sources`` lists it."""

    name: str
    fingerprint: str
    weight: float
    images: int  # training images it contributes
    melanoma: int
    crop_fraction: float
    role: str  # "target" (validated on) or "extra" (training images only)

    def record(self) -> dict[str, object]:
        return asdict(self)


def source_names(dirs: Sequence[Path]) -> list[str]:
    """Each prepared dir's name (its folder name); two sources may not share one."""
    names = [Path(d).resolve().name or str(d) for d in dirs]
    seen: dict[str, Path] = {}
    for name, folder in zip(names, dirs, strict=True):
        if name in seen:
            raise AttnMelError(
                f"--data {folder}: two sources are named {name!r} ({seen[name]} and {folder}); "
                "--source-weights names sources by folder, so rename one"
            )
        seen[name] = folder
    return names


def parse_source_weights(text: str, names: Sequence[str]) -> list[float]:
    """``name=w,…`` → one weight per source in ``names`` order (1 where not named)."""
    weights = dict.fromkeys(names, 1.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        try:
            weight = float(value) if eq else float("nan")
        except ValueError:
            weight = float("nan")
        if name.strip() not in weights:
            raise AttnMelError(f"--source-weights: no source named {name.strip()!r} (the "
                               f"sources are {', '.join(names)})")
        if not weight >= 0 or weight == float("inf"):
            raise AttnMelError(f"--source-weights: {item!r} is not NAME=W with W ≥ 0")
        weights[name.strip()] = weight
    if not any(weights[n] > 0 for n in names[:1]):
        raise AttnMelError("--source-weights: the target source (the first --data) needs a "
                           "weight above 0")
    return [weights[n] for n in names]


def run_fingerprint(sources: Sequence[TrainSource]) -> str:
    """What ``--resume`` checks: the target's data fingerprint alone for one source (as before
    0.2), else a digest of every source's name, fingerprint and weight."""
    if len(sources) == 1:
        return sources[0].fingerprint
    text = "\n".join(f"{s.name},{s.fingerprint},{s.weight!r}" for s in sources)
    return hashlib.sha256(text.encode()).hexdigest()
