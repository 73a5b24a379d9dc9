"""``predict`` and ``explain`` drivers: expand inputs, score in batches, write overlays."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnmel_cli.checkpoint import CheckpointMeta, load_checkpoint
from attnmel_cli.errors import AttnMelError
from attnmel_cli.explain import explanation_images, save_image
from attnmel_cli.fsio import atomic_path, ensure_dir
from attnmel_cli.inference import Scored, score_paths
from attnmel_cli.model import AttnMelNet
from attnmel_cli.preprocess import DEFAULT_MAX_PIXELS, load_photo, network_box

log = logging.getLogger("attnmel")

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".jfif"}
)
# Files that sit beside ISIC photos but are not photos (masks, superpixel index images).
NON_PHOTO_ENDINGS = ("_segmentation.png", "_superpixels.png")


def _is_photo(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not name.endswith(NON_PHOTO_ENDINGS)
        and not name.startswith(".")
    )


def expand_inputs(items: Iterable[str], *, recursive: bool = False) -> Iterator[str]:
    """Files as given; folders → their image files (sorted; ``recursive`` walks subfolders).

    A path that does not exist is passed through, so that it becomes an error record.
    """
    for item in items:
        path = Path(item)
        if not path.is_dir():
            yield item
            continue
        found = path.rglob("*") if recursive else path.iterdir()
        files = sorted(p for p in found if p.is_file() and _is_photo(p))
        if not files:
            log.warning(
                "%s: no image files found%s", path, "" if recursive else " (try --recursive)"
            )
        yield from (str(p) for p in files)


def read_path_list(lines: Iterable[str]) -> Iterator[str]:
    """Paths from a stream, one per line (blank lines skipped); used as data, never via a shell."""
    for line in lines:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 0 ≤ I < N."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise AttnMelError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise AttnMelError(f"--shard {text}: need 0 ≤ I < N")
    return index, count


def shard(items: Sequence[str], index: int, count: int) -> list[str]:
    """The ``index``-th of ``count`` contiguous, near-equal blocks of ``items``.

    Concatenating the outputs of shards 0 … N-1 gives the unsharded output, in input order.
    """
    n = len(items)
    return list(items[index * n // count : (index + 1) * n // count])


@dataclass
class Session:
    """A loaded checkpoint ready to score."""

    model: AttnMelNet
    meta: CheckpointMeta
    name: str
    device: torch.device

    @classmethod
    def load(
        cls, checkpoint: Path, device: torch.device, *, channels_last: bool | None = None,
        compile_model: bool = False,
    ) -> Session:
        """Load ``checkpoint`` onto ``device`` for scoring.

        ``channels_last``: NHWC weights, so that convolutions run channels-last (``None``: on
        CPU and CUDA; measured faster for VGG-16 on CPU by ``bench/bench_fastpaths.py``).
        ``compile_model``: ``torch.compile`` the network (pays off on long CUDA runs; the first
        batches wait for the compilation). On CUDA cuDNN autotunes its kernels once (the input
        size is fixed by the checkpoint).
        """
        model, meta = load_checkpoint(checkpoint, device)
        if channels_last is None:
            channels_last = device.type in ("cpu", "cuda")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if compile_model:
            model = torch.compile(model)  # type: ignore[assignment]
        return cls(model, meta, checkpoint.name, device)

    def map_names(self) -> list[str]:
        """The maps this checkpoint's variant produces (pool3/pool4 or cam, or none)."""
        return {"attnmel": ["pool3", "pool4"], "vgg16-gap": ["cam"]}.get(self.meta.arch, [])

    def score(
        self,
        paths: Sequence[str],
        *,
        batch_size: int = 16,
        workers: int | None = None,
        keep_maps: bool = False,
        prepared: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        amp: bool = False,
    ) -> Iterator[Scored]:
        """:func:`attnmel_cli.inference.score_paths` with this session's model (``amp``: bf16
        autocast on CUDA)."""
        return score_paths(
            self.model, self.meta, paths, device=self.device, batch_size=batch_size,
            workers=workers, keep_maps=keep_maps, prepared=prepared, max_pixels=max_pixels,
            amp=amp,
        )


def overlay_target(path: str, out_dir: Path, taken: set[str], suffix: str = ".png") -> Path:
    """``out_dir/<stem>_attention.png``; a stem seen before gets ``-2``, ``-3``… appended."""
    stem, n = Path(path).stem, 1
    name = f"{stem}_attention{suffix}"
    while name in taken:
        n += 1
        name = f"{stem}-{n}_attention{suffix}"
    taken.add(name)
    return out_dir / name


def write_overlay(
    scored: Scored, meta: CheckpointMeta, map_name: str, target: Path, *,
    max_pixels: int = DEFAULT_MAX_PIXELS, overwrite: bool = False,
) -> Path:
    """Overlay of one map on the photo at the photo's own resolution (EXIF orientation applied)."""
    if map_name not in scored.maps:
        raise AttnMelError(f"this checkpoint ({meta.arch}) has no {map_name} map")
    photo = load_photo(scored.path, max_pixels=max_pixels, warn_frames=False)
    box = network_box(*photo.size, meta.image_size)
    overlays, _ = explanation_images(photo, {map_name: scored.maps[map_name]}, box)
    return save_image(overlays[map_name], target, overwrite=overwrite)


def write_explanation(
    scored: Scored, meta: CheckpointMeta, out_dir: Path, stem: str, *,
    max_pixels: int = DEFAULT_MAX_PIXELS, overwrite: bool = False,
) -> list[Path]:
    """``explain``'s files for one image: an overlay per map, the composite, the raw maps (.npz)."""
    photo = load_photo(scored.path, max_pixels=max_pixels, warn_frames=False)
    box = network_box(*photo.size, meta.image_size)
    overlays, panel = explanation_images(photo, scored.maps, box)
    written = [
        save_image(img, out_dir / f"{stem}_{name}.png", overwrite=overwrite)
        for name, img in overlays.items()
    ]
    written.append(save_image(panel, out_dir / f"{stem}_composite.png", overwrite=overwrite))
    raw = out_dir / f"{stem}_maps.npz"
    with atomic_path(raw, overwrite=overwrite) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(
            fh, box=np.asarray(box, np.float32), p_melanoma=np.float32(scored.p_melanoma),
            **{k: v.astype(np.float32) for k, v in scored.maps.items()},
        )
    written.append(raw)
    return written



def check_overlay_options(
    inputs: Sequence[str], overlay: Path | None, overlay_dir: Path | None, force: bool
) -> None:
    """Refuse ``--overlay`` with several inputs or onto an existing file; create output folders
    now, so that a folder that cannot be written fails once instead of once per image."""
    if overlay is not None and len(inputs) != 1:
        raise AttnMelError(
            f"--overlay takes exactly one input image, got {len(inputs)}; use --overlay-dir"
        )
    if overlay is not None and overlay.exists() and not force:
        raise AttnMelError(f"{overlay}: already exists; pass --force to overwrite it")
    for folder in (overlay_dir, overlay.parent if overlay is not None else None):
        if folder is not None:
            ensure_dir(folder)


def overlay_map_name(session: Session, requested: str) -> str:
    """The map drawn in overlays: ``auto`` is the deepest one (pool-4, or the CAM)."""
    names = session.map_names()
    name = names[-1] if requested == "auto" and names else requested
    if name not in names:
        raise AttnMelError(
            f"{session.name}: a {session.meta.arch} checkpoint has no "
            f"{'attention' if requested == 'auto' else name} map to overlay "
            f"(available: {', '.join(names) or 'none'})"
        )
    return name


Row = tuple[str, float | None, str | None]  # path, p_melanoma, error


def predict_rows(
    session: Session,
    inputs: Sequence[str],
    block: tuple[int, int],
    *,
    overlay: Path | None = None,
    overlay_dir: Path | None = None,
    map_name: str | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    force: bool = False,
    amp: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> Iterator[Row]:
    """Score ``inputs[lo:hi]`` in order, writing each image's overlay on the way.

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
    for scored in session.score(
        inputs[lo:hi], batch_size=batch_size, workers=workers, keep_maps=want_maps,
        max_pixels=max_pixels, amp=amp,
    ):
        error = scored.error
        if error is None and want_maps:
            target = overlay if overlay is not None else targets[scored.index]  # type: ignore[index]
            try:
                write_overlay(scored, session.meta, map_name, target,  # type: ignore[arg-type]
                              max_pixels=max_pixels, overwrite=force)
            except AttnMelError as exc:
                error = str(exc)
        yield scored.path, scored.p_melanoma, error
        advance()
