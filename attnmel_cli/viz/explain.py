"""``explain``'s files for each image: one overlay per map, the composite and the raw maps."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnmel_cli.data.decode import DEFAULT_MAX_PIXELS, load_photo
from attnmel_cli.data.transforms import network_box
from attnmel_cli.data.writer import is_prepared_image
from attnmel_cli.engine.scored import Scored, ScoringOptions, ScoringSession
from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.atomic import atomic_path
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.io.records import predicted_index, prediction_caption
from attnmel_cli.models.names import is_binary
from attnmel_cli.viz.overlay import explanation_images, overlay_target, save_image

log = logging.getLogger("attnmel")

EXPLAIN_OPTIONS = ScoringOptions(batch_size=8)  # explain's --batch-size default


@dataclass(frozen=True)
class Explained:
    """One input's outcome: its probability and composite, or the error that stopped it."""

    path: str
    p_melanoma: float | None
    composite: Path | None
    error: str | None = None


def write_explanation(
    scored: Scored, meta: CheckpointMeta, out_dir: Path, stem: str, *,
    max_pixels: int = DEFAULT_MAX_PIXELS, overwrite: bool = False,
) -> list[Path]:
    """``explain``'s files for one image: an overlay per map (the predicted class and probability
    stamped in its bottom-left corner), the composite (its photo captioned with them), the raw
    maps (.npz; a multi-class checkpoint's also hold ``p_<class>`` of each class and the
    ``prediction``)."""
    photo = load_photo(scored.path, max_pixels=max_pixels, warn_frames=False)
    box = network_box(*photo.size, meta.preprocess, prepared=is_prepared_image(photo))
    predicted = prediction_caption(meta.classes, scored.probs)
    overlays, panel = explanation_images(photo, scored.maps, box, f"photo: {predicted}",
                                         predicted)
    written = [
        save_image(img, out_dir / f"{stem}_{name}.png", overwrite=overwrite)
        for name, img in overlays.items()
    ]
    written.append(save_image(panel, out_dir / f"{stem}_composite.png", overwrite=overwrite))
    raw = out_dir / f"{stem}_maps.npz"
    arrays = {"box": np.asarray(box, np.float32), "p_melanoma": np.float32(scored.p_melanoma),
              **{k: v.astype(np.float32) for k, v in scored.maps.items()}}
    if not is_binary(meta.classes):
        for name, q in zip(meta.classes, scored.probs, strict=True):
            arrays.setdefault(f"p_{name}", np.float32(q))
        arrays["prediction"] = np.str_(meta.classes[predicted_index(meta.classes, scored.probs)])
    with atomic_path(raw, overwrite=overwrite) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    written.append(raw)
    return written


def check_explainable(session: ScoringSession) -> None:
    """Refuse a checkpoint whose variant has no map to draw."""
    if not session.map_names():
        raise AttnMelError(
            f"{session.name}: a {session.meta.arch} checkpoint has neither attention maps nor a "
            "CAM; explain needs an attnmel or vgg16-gap checkpoint"
        )


def explain_paths(
    session: ScoringSession,
    inputs: Sequence[str],
    out: Path,
    options: ScoringOptions = EXPLAIN_OPTIONS,
    *,
    force: bool = False,
) -> Iterator[Explained]:
    """Score ``inputs`` with their maps (``options``, ``keep_maps`` set here; ``tta``: maps
    and probability averaged over the 8 flips/rotations, each map turned back first) and write
    each one's files into ``out``, in input order (a stem seen before gets ``-2``, ``-3``…)."""
    taken: set[str] = set()
    max_pixels = options.max_pixels
    for scored in session.score(inputs, options.but(keep_maps=True)):
        if scored.error is not None:
            yield Explained(scored.path, scored.p_melanoma, None, scored.error)
            continue
        stem = overlay_target(scored.path, out, taken, suffix="").name.removesuffix("_attention")
        try:
            written = write_explanation(scored, session.meta, out, stem,
                                        max_pixels=max_pixels, overwrite=force)
        except AttnMelError as exc:
            yield Explained(scored.path, scored.p_melanoma, None, str(exc))
            continue
        log.debug("%s: wrote %s", scored.path, ", ".join(p.name for p in written))
        yield Explained(scored.path, scored.p_melanoma, out / f"{stem}_composite.png")
