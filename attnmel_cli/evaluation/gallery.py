"""The HTML report's gallery: the first checkpoint's worst errors and most confident correct
calls at its threshold, each photo beside its attention overlays (pool-3 and pool-4, or the CAM)
with the lesion mask outlined, its score, Jaccard and diagnosis."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from attnmel_cli.data.masks import load_mask
from attnmel_cli.engine.inference import Session
from attnmel_cli.engine.scored import ScoringOptions
from attnmel_cli.errors import InputError
from attnmel_cli.evaluation.report_figures import jpeg_data_uri
from attnmel_cli.evaluation.results import EvalData, Scores
from attnmel_cli.viz.thumbnails import panels

GALLERY_SIZE = 12  # images per section by default (evaluate --gallery: at most 50)
GALLERY_OPTIONS = ScoringOptions(workers=0)  # a few images: decoded in this process


@dataclass(frozen=True)
class Section:
    """One row of the gallery: the images of class ``label`` whose call at the threshold is
    ``called`` (melanoma or not), highest or lowest ``p_melanoma`` first."""

    key: str
    title: str
    label: int
    called: bool
    highest_first: bool


SECTIONS = (
    Section("missed", "Worst errors: melanomas called benign (lowest score first)", 1, False,
            False),
    Section("false-alarm", "Worst errors: benign lesions called melanoma (highest score first)",
            0, True, True),
    Section("found", "Most confident correct: melanomas (highest score first)", 1, True, True),
    Section("cleared", "Most confident correct: benign lesions (lowest score first)", 0, False,
            False),
)


def pick(labels: np.ndarray, probs: np.ndarray, threshold: float, section: Section, n: int,
         ) -> np.ndarray:
    """Indices of at most ``n`` images of ``section`` (an image is called melanoma when
    ``p >= threshold``), in the section's order; ties keep input order."""
    idx = np.flatnonzero((labels == section.label) & ((probs >= threshold) == section.called))
    key = -probs[idx] if section.highest_first else probs[idx]
    return idx[np.argsort(key, kind="stable")][:n]


@dataclass
class Card:
    """One image of the gallery: its figures and its pictures as ``data:`` URIs."""

    image_id: str
    label: int
    diagnosis: str
    p_melanoma: float
    jaccard: dict[str, float | None]  # map → Jaccard with the lesion mask (None: no mask)
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, data URI)
    outlined: bool = False  # the lesion mask is drawn on the pictures
    error: str | None = None


def build_gallery(
    scores: Scores, data: EvalData, session: Session, threshold: float, n: int = GALLERY_SIZE,
    options: ScoringOptions = GALLERY_OPTIONS,
) -> list[tuple[Section, list[Card]]]:
    """Every section's cards for ``scores`` (the first checkpoint's), its maps recomputed by
    ``session`` (that checkpoint) for the chosen images only, as ``evaluate`` scored them
    (``options``; their ``keep_maps`` and ``prepared`` are set here)."""
    picked = {s.key: pick(scores.labels, scores.probs, threshold, s, n) for s in SECTIONS}
    wanted = sorted({int(i) for idx in picked.values() for i in idx})
    items = {it.image_id: it for it in data.items}
    chosen = [items[scores.ids[i]] for i in wanted]
    maps = {
        wanted[s.index]: s
        for s in session.score(
            [str(it.path) for it in chosen], options.but(keep_maps=True, prepared=data.prepared)
        )
    }
    cards: dict[int, Card] = {}
    for i in wanted:
        item, scored = items[scores.ids[i]], maps[i]
        card = Card(
            item.image_id, item.label, item.diagnosis, float(scores.probs[i]),
            {name: None if math.isnan(v[i]) else float(v[i]) for name, v in scores.jaccard.items()},
        )
        try:
            if scored.error is not None:
                raise InputError(scored.error)
            mask = (
                load_mask(item.lesion_mask, session.meta.preprocess, prepared=data.prepared,
                          photo=item.path, max_pixels=options.max_pixels)
                if item.lesion_mask else None
            )
            pictures = panels(str(item.path), scored.maps, session.meta.preprocess, mask,
                              max_pixels=options.max_pixels)
        except InputError as exc:
            card.error = str(exc)
        else:
            card.pictures = [(caption, jpeg_data_uri(img)) for caption, img in pictures]
            card.outlined = mask is not None
        cards[i] = card
    return [(s, [cards[int(i)] for i in picked[s.key]]) for s in SECTIONS]
