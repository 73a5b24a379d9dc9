"""``predict``'s driver: score a block of the inputs in order, writing overlays on the way."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from attnmel_cli.engine.scored import DEFAULT_OPTIONS, ScoringOptions, ScoringSession
from attnmel_cli.errors import AttnMelError
from attnmel_cli.viz.overlay import overlay_target, write_overlay

# path, p_melanoma, every class's probability (in the checkpoint's order), error
Row = tuple[str, float | None, tuple[float, ...], str | None]


def predict_rows(
    session: ScoringSession,
    inputs: Sequence[str],
    block: tuple[int, int],
    options: ScoringOptions = DEFAULT_OPTIONS,
    *,
    overlay: Path | None = None,
    overlay_dir: Path | None = None,
    map_name: str | None = None,
    force: bool = False,
    threshold: float | None = None,
    advance: Callable[[], None] = lambda: None,
) -> Iterator[Row]:
    """Score ``inputs[lo:hi]`` in order as ``options`` say (``keep_maps`` set here), writing
    each image's overlay on the way (its legend's prediction made with ``threshold``, as the
    records').

    Overlay names are settled over all of ``inputs``, so that every block of a distributed run
    names its files as a single process would.
    """
    lo, hi = block
    taken: set[str] = set()
    targets = (
        [overlay_target(p, overlay_dir, taken) for p in inputs][lo:hi]
        if overlay_dir is not None else None
    )
    want_maps = map_name is not None and (overlay is not None or targets is not None)
    for scored in session.score(inputs[lo:hi], options.but(keep_maps=want_maps)):
        error = scored.error
        if error is None and want_maps:
            target = overlay if overlay is not None else targets[scored.index]  # type: ignore[index]
            try:
                write_overlay(scored, session.meta, map_name, target,  # type: ignore[arg-type]
                              threshold=threshold, max_pixels=options.max_pixels,
                              overwrite=force)
            except AttnMelError as exc:
                error = str(exc)
        yield scored.path, scored.p_melanoma, scored.probs, error
        advance()
