"""Scoring one checkpoint on the labelled images, with the attention Jaccard of each map where
a lesion mask exists (Table 3); the images are split across the ranks under torchrun."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from attnmel_cli.data.classes import class_labels
from attnmel_cli.data.masks import load_mask
from attnmel_cli.data.prepare import prepared_crop_fraction
from attnmel_cli.engine.distributed import SINGLE, Dist
from attnmel_cli.engine.inference import Session
from attnmel_cli.engine.scored import DEFAULT_OPTIONS, ScoringOptions
from attnmel_cli.errors import DataError, InputError
from attnmel_cli.evaluation import metrics
from attnmel_cli.evaluation.results import Advance, EvalData, Item, Scores
from attnmel_cli.models.names import is_binary

log = logging.getLogger("attnmel")

# One image: (item, path, p_melanoma, class probabilities, {map: jaccard}, error)
Result = tuple[Item, str, float | None, tuple[float, ...], dict[str, float], str | None]


def score(
    session: Session,
    data: EvalData,
    checkpoint: Path,
    name: str,
    options: ScoringOptions = DEFAULT_OPTIONS,
    *,
    advance: Advance | None = None,
    dist: Dist = SINGLE,
) -> Scores:
    """Score every image of ``data`` as ``options`` say (their ``keep_maps`` and ``prepared``
    are set here, from the data); Table 3 Jaccard of each map where a lesion mask exists.

    Under torchrun (``dist``) each rank scores a contiguous block of the images and every rank
    gets all the results, in input order.
    """
    names = session.map_names() if any(it.lesion_mask for it in data.items) else []
    if data.prepared:
        crop, wanted = prepared_crop_fraction(data.source), session.meta.crop_fraction
        if crop != wanted:
            log.warning("%s was prepared with --crop-fraction %g, but %s was trained on crops of "
                        "%g: its scores here are not those of photos (re-prepare the data with "
                        "--crop-fraction %g, or evaluate the photos)", data.source, crop, name,
                        wanted, wanted)
    lo, hi = dist.bounds(len(data.items))
    items = data.items[lo:hi]
    local: list[Result] = []  # the images of this rank's block
    for s in session.score(
        [str(it.path) for it in items], options.but(keep_maps=bool(names), prepared=data.prepared)
    ):
        item = items[s.index]
        try:
            if s.error is not None:
                raise InputError(s.error)
            mask = (
                load_mask(
                    item.lesion_mask, session.meta.preprocess, prepared=data.prepared,
                    photo=item.path, max_pixels=options.max_pixels,
                )
                if names and item.lesion_mask
                else None
            )
        except InputError as exc:
            local.append((item, s.path, None, (), {}, str(exc)))
        else:
            local.append((item, s.path, s.p_melanoma, s.probs, {
                n: math.nan if mask is None else metrics.attention_jaccard(s.maps[n], mask)
                for n in names
            }, None))
        if advance is not None:
            advance()
    return _collect(dist.gather(local), names, checkpoint, name, session)


def _collect(
    results: list[Result], names: list[str], checkpoint: Path, name: str, session: Session,
) -> Scores:
    """Every rank's results, in input order, as one :class:`Scores` (failures set apart; the
    true class of each image for a multi-class checkpoint, from its diagnosis)."""
    ids, labels, probs, class_probs, failed, kept = [], [], [], [], [], []
    jaccard: dict[str, list[float]] = {n: [] for n in names}
    for item, path, p, every, jac, error in results:
        if error is not None:
            failed.append((path, error))
            continue
        kept.append(item)
        ids.append(item.image_id)
        labels.append(item.label)
        probs.append(p)
        class_probs.append(every)
        for n in names:
            jaccard[n].append(jac[n])
    classes = session.meta.classes
    truth, problem = None, ""
    if not is_binary(classes):
        try:
            truth = class_labels(kept, classes)
        except DataError as exc:
            problem = str(exc)
    return Scores(
        checkpoint,
        name,
        session.meta,
        ids,
        np.asarray(labels, dtype=int),
        np.asarray(probs, dtype=float),
        np.asarray(class_probs, dtype=float).reshape(len(ids), len(classes)),
        {n: np.asarray(v, dtype=float) for n, v in jaccard.items()},
        failed,
        truth,
        problem,
    )
